"""NotFound: the last stage. In generate and replay mode every request leaves with an answer:
one nothing answered gets Azure's 404, so nothing ever goes upstream. Paced streams that go
through mitmproxy's layers go on to the simulator's own loopback stream server. In record
mode the rest goes on to Azure."""

from __future__ import annotations

from mitmproxy import http

from .. import wire
from ..runtime.config import SimulatorConfig
from ..runtime.state import context_of


class NotFound:
    def __init__(self, config: SimulatorConfig):
        self.config = config

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or self.config.mode == "record":
            return
        context = context_of(flow)
        if context is not None and (context.stream is not None or context.websocket is not None):
            return
        flow.response = wire.not_found(flow.request)
