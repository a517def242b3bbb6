"""NotFound: the last stage. A request nothing answered gets Azure's 404, or, in record mode,
goes on to the upstream."""

from __future__ import annotations

from mitmproxy import http

from . import wire
from .config import SimulatorConfig


class NotFound:
    def __init__(self, config: SimulatorConfig):
        self.config = config

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or self.config.mode == "record":
            return
        flow.response = wire.not_found(flow.request)
