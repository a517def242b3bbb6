"""Reclaim: the memory of a large request goes back to the system soon after it ends.

A finished flow is freed by Python's cycle collector (runtime/memory.py says why), which a
few large uploads do not wake: without this stage, 24 Responses requests with 5 MiB images
kept +160 MiB until some later collection. The collector runs when a large request arrives
after others ended (before its body is read), when ended ones add up past 16 MiB, or a
moment after the last one ended. A small request pays a comparison or two.
"""

from __future__ import annotations

import asyncio

from mitmproxy import http

from ..runtime import memory

# After a large flow ends, its memory is collected this much later if nothing collected it
# before (its answer has been sent by then).
DELAY_S = 0.25


def body_bytes(flow: http.HTTPFlow) -> int:
    """The bytes a flow's bodies hold, as received (and as answered)."""
    size = len(flow.request.raw_content or b"")
    if flow.response is not None:
        size += len(flow.response.raw_content or b"")
    return size


def declared_length(request: http.Request) -> int:
    try:
        return int(request.headers.get("content-length") or 0)
    except ValueError:
        return 0


class Reclaim:
    def __init__(self):
        self.reclaimer = memory.Reclaimer()
        self._timer: asyncio.TimerHandle | None = None

    def running(self) -> None:
        memory.map_large_blocks()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.reclaimer.pending and self.reclaimer.arriving(declared_length(flow.request)):
            self._collect()

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        size = body_bytes(flow)
        if size < memory.LARGE_FLOW_BYTES:
            return
        if self.reclaimer.ended(size):
            self._collect(still_held=size)  # the flows before it; its own memory waits for the timer
        self._later()

    def _later(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the proxy (tests)
            return
        wait = max(DELAY_S, self.reclaimer.not_before - self.reclaimer.clock())
        self._timer = loop.call_later(wait, self._when_due)

    def _when_due(self) -> None:
        # Even when a collection ran since the flow ended: it may have run while the answer
        # was still being sent.
        self._timer = None
        if self.reclaimer.allowed():
            self._collect()
        else:
            self._later()

    def _collect(self, still_held: int = 0) -> None:
        self.reclaimer.collect(still_held)

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
