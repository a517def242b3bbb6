"""FlowCap: under mitmweb, keep only the newest flows.

mitmweb keeps every flow in memory, so a long load test under it grows without bound. This
stage drops the oldest finished flows beyond SIMULATOR_WEB_MAX_FLOWS of them, or beyond
SIMULATOR_WEB_MAX_FLOW_BYTES of their bodies and heads together (a few large uploads weigh
more than thousands of small chats). mitmdump keeps no flows and is unaffected.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx, http

from ..runtime import internals
from ..runtime.bounds import Bounds
from ..runtime.config import SimulatorConfig
from ..runtime.options import Option, check, declare
from ..runtime.startup import Startup


def flow_bytes(flow: http.HTTPFlow) -> int:
    """About what a kept flow holds: its bodies as received and its heads."""
    size = 0
    for message in (flow.request, flow.response):
        if message is not None:
            size += 256 + len(message.raw_content or b"") + sum(len(k) + len(v) for k, v in message.headers.fields)
    return size + len(flow.request.path)


OPTIONS = (
    Option(
        "SIMULATOR_WEB_MAX_FLOWS",
        int,
        10000,
        "Under mitmweb, keep at most this many flows, dropping the oldest; 0 keeps all.",
        low=0,
    ),
)


class FlowCap:
    def __init__(self, config: SimulatorConfig | None = None, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.bytes = 0  # of the flows kept, as measured when each finished
        self._sizes: dict[str, int] = {}  # flow id -> its bytes

    @property
    def max_bytes(self) -> int:
        return (self.config.bounds if self.config is not None else Bounds()).web_flow_bytes

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def running(self):
        if ctx.master.addons.get("view") is None:
            # No flows are kept (mitmdump): take the hooks away, so no request pays for them.
            self.response = self.error = None

    def configure(self, updated: set[str]) -> None:
        if "simulator_web_max_flows" in updated:
            self.startup.applying(lambda: check(ctx.options, OPTIONS, updated), self.env_error)

    def response(self, flow: http.HTTPFlow) -> None:
        self._measure(flow)
        self._trim()

    def error(self, flow: http.HTTPFlow) -> None:
        self._measure(flow)
        self._trim()

    def _measure(self, flow: http.HTTPFlow) -> None:
        size = flow_bytes(flow)
        self.bytes += size - self._sizes.get(flow.id, 0)
        self._sizes[flow.id] = size

    def _trim(self) -> None:
        limit = ctx.options.simulator_web_max_flows
        view = ctx.master.addons.get("view")
        if view is None:
            return
        count, max_bytes = view.store_count(), self.max_bytes
        forgotten = len(self._sizes) > 2 * count + 1000  # many flows removed in the web UI meanwhile
        if (not limit or count <= limit) and self.bytes <= max_bytes and not forgotten:
            return
        # Trim a tenth below the caps at a time, so the cost is paid once per many flows. The
        # store keeps arrival order (the view may be sorted otherwise), so its head is oldest.
        stored = internals.stored_flows(view)
        # Flows removed in the web UI are gone from the store: measure only those still there.
        self._sizes = {f.id: self._sizes.get(f.id, 0) for f in stored}
        self.bytes = sum(self._sizes.values())
        keep_count, keep_bytes = int(limit * 0.9) if limit else len(stored), int(max_bytes * 0.9)
        if len(stored) <= (limit or len(stored)) and self.bytes <= max_bytes:
            return
        oldest, count = [], len(stored)
        for f in stored:
            if count <= keep_count and self.bytes <= keep_bytes:
                break
            if f.live:
                continue
            oldest.append(f)
            count -= 1
            self.bytes -= self._sizes.pop(f.id, 0)
        view.remove(oldest)
