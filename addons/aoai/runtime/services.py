"""What the simulator keeps while it runs, apart from its configuration: the stores and
servers the stages share.

`SimulatorConfig` holds values (what the options and the deployments file say); `Services`
holds the objects with state. Both are built once, where the stack is built
(`aoai.stack.build_addons`), and passed to each stage that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SimulatorConfig
from .latency import Gates
from .recording import RecordingStore
from .streams import StreamServer


@dataclass
class Services:
    streams: StreamServer  # plays paced streams (and serves those that go through mitmproxy's layers)
    recordings: RecordingStore  # the recorded interactions, their index and the pending saves
    gates: Gates  # the queues in front of deployments with limited concurrency

    @classmethod
    def build(cls, config: SimulatorConfig) -> Services:
        return cls(streams=StreamServer(), recordings=RecordingStore(config.recording.dir), gates=Gates())
