"""Pacing: made-up and replayed answers leave when they are due, not when they are ready.

Generate and Replay set the answer at once and say how long it is to be held
(`latency.hold`). This stage waits in the `response` hook, after every stage and extension
that may still change the answer, so at the deadline only mitmproxy's write is left. Waiting
in the `request` hook instead left all of that work (the rest of the request hooks, every
response hook) until after the deadline: 200 answers due together then left over ~100 ms.
"""

from __future__ import annotations

import asyncio
import time

from mitmproxy import http

from ..runtime import latency
from ..runtime.state import Hold, RequestContext, context_of


class Pacing:
    def response(self, flow: http.HTTPFlow):
        context = context_of(flow)
        held = context.hold if context is not None else None
        if held is None or flow.response is None:
            return None
        context.hold = None
        return self._hold(context, held)

    @staticmethod
    async def _hold(context: RequestContext, held: Hold) -> None:
        flow = context.flow
        if held.gate is None:
            wait = held.seconds - latency.since_arrival(context)
            if wait > 0:
                await asyncio.sleep(wait)
        else:
            async with held.gate:  # queued behind the deployment's busy slots; the clock starts when let in
                await asyncio.sleep(held.seconds)
        flow.response.timestamp_end = time.time()  # mitmproxy stamped it before this hook
