"""Reclaim: the memory of a large request goes back to the system soon after it ends.

A finished flow is freed by Python's cycle collector (runtime/memory.py says why), which
large uploads alone do not wake: 24 Responses requests with 5 MiB images kept +160 MiB until
some later collection. This stage collects when a large request arrives after others ended
(before its body is read), when ended ones pass 16 MiB, and a moment after the last one
ended; collections take at most 5 % of the time. A small request pays a comparison or two.
"""

from __future__ import annotations

import asyncio

from mitmproxy import http

from ..runtime import intake, memory

# A large flow's own memory is collected this much after it ended, if nothing collected it
# meanwhile (its answer has been sent by then).
DELAY_S = 0.25


def body_bytes(flow: http.HTTPFlow) -> int:
    """The bytes a flow's bodies hold, as received (and as answered)."""
    size = len(flow.request.raw_content or b"")
    if flow.response is not None:
        size += len(flow.response.raw_content or b"")
    return size


class Reclaim:
    def __init__(self, reclaimer: memory.Reclaimer | None = None):
        self.reclaimer = reclaimer or memory.Reclaimer()
        self._timer: asyncio.TimerHandle | None = None

    def running(self) -> None:
        memory.map_large_blocks()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.reclaimer.pending and self.reclaimer.arriving(intake.declared_length(flow.request) or 0):
            self.reclaimer.collect()

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def _ended(self, flow: http.HTTPFlow) -> None:
        size = body_bytes(flow)
        if size < memory.LARGE_FLOW_BYTES:
            return
        if self.reclaimer.ended(size):
            self.reclaimer.collect(still_held=size)  # the flows before this one, which is not done yet
        self._later()

    def _later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the proxy (tests that call the hooks)
            return
        if self._timer is not None:
            self._timer.cancel()
        wait = max(DELAY_S, self.reclaimer.not_before - self.reclaimer.clock())
        self._timer = loop.call_later(wait, self._when_due)

    def _when_due(self) -> None:
        # Even when a collection ran since the flow ended: it may have run before the answer
        # was sent, while the flow was still in use.
        self._timer = None
        if self.reclaimer.allowed():
            self.reclaimer.collect()
        else:
            self._later()

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
