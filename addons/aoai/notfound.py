"""NotFound: the last stage. A request nothing answered gets Azure's 404, or, in record mode,
goes on to the upstream. Paced streams that go through mitmproxy's layers also go on: to the
simulator's own loopback stream server."""

from __future__ import annotations

from mitmproxy import http

from . import wire
from .config import SimulatorConfig


class NotFound:
    def __init__(self, config: SimulatorConfig):
        self.config = config

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or self.config.mode == "record" or "aoai.stream" in flow.metadata:
            return
        flow.response = wire.not_found(flow.request)
