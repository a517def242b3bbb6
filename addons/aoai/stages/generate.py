"""Generate: in generate mode, answer with made-up completions and embeddings, on time.

Generators are tried in order (`config.generators`); the first to return an answer wins.
The built-in ones (aoai/generators/) are plain functions of a `RequestContext`, named so an
extension can find, replace or remove them, and each is asked only for the routes that name
it (runtime/routes.py); an extension's generators are asked for every request. A generator
returns a mitmproxy response, a `StreamPlan` for a paced stream, or None to pass.

Non-streamed answers are set at once and held by the pacing stage for as long as the whole
generation would take; streamed answers become a `StreamPlan` that the streaming stage plays,
each frame when it is due.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable

from mitmproxy import http

from .. import wire
from ..generators import BUILT_IN
from ..generators.common import HEAVY_PROMPT_TOKENS, HEAVY_TOKENS, answer_tokens
from ..runtime import latency, offload
from ..runtime.config import SimulatorConfig
from ..runtime.failures import describe
from ..runtime.routes import MANAGEMENT
from ..runtime.services import Services
from ..runtime.state import RequestContext, context_for
from ..runtime.streams import StreamPlan

logger = logging.getLogger(__name__)


class Generate:
    def __init__(self, config: SimulatorConfig, services: Services):
        self.config = config
        self.services = services  # the generators reach them through each request's context
        self.streams = services.streams
        self.gates = services.gates
        self._built_in = frozenset(BUILT_IN)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Synchronous unless there is something to wait for (a latency, an async generator):
        # mitmproxy awaits what a hook returns, and most requests then cost no coroutine.
        if flow.response or self.config.mode != "generate":
            return None
        context = context_for(flow, self.config, self.services)
        if context.services is None:
            context.services = self.services  # a context made before the stack's routing saw it
        route = context.route
        if route is not None and route.family == MANAGEMENT:
            return None
        # Built-in generators answer only the routes that name them; the others (an extension's,
        # or one that replaced a built-in) are asked in turn.
        wanted = route.generator if route is not None else None
        generators = [g for g in self.config.generators if g not in self._built_in or g.__name__ == wanted]
        if (
            answer_tokens(context) > HEAVY_TOKENS
            or context.prompt_tokens > HEAVY_PROMPT_TOKENS
            or offload.heavy(flow.request)
        ):
            return self._walk_in_thread(context, generators)
        index, answer = self._walk(context, generators)
        if inspect.isawaitable(answer):
            return self._finish(context, generators[index], answer, generators[index + 1 :])
        if answer is not None:
            return self._deliver(context, answer)
        return None

    def _walk(self, context: RequestContext, generators: list) -> tuple[int, object]:
        """The first generator's answer (or what it returned to await) and its place; (-1, None)."""
        for index, generator in enumerate(generators):
            answer = self._call(generator, context)
            if answer is not None:
                return index, answer
        return -1, None

    async def _walk_in_thread(self, context: RequestContext, generators: list) -> None:
        """A long answer (n=128 of hundreds of tokens takes half a second to make) is made in a
        worker thread, so the event loop keeps answering everyone else meanwhile."""
        index, answer = await asyncio.to_thread(self._walk, context, generators)
        if inspect.isawaitable(answer):
            await self._finish(context, generators[index], answer, generators[index + 1 :])
        elif answer is not None:
            waiting = self._deliver(context, answer)
            if waiting is not None:
                await waiting

    async def _finish(self, context: RequestContext, generator, pending: Awaitable, rest: list) -> None:
        """The rest of the generator walk once one generator turned out to be async."""
        answer = await self._settle(generator, context, pending)
        for generator in rest:
            if answer is not None:
                break
            answer = await self._settle(generator, context, self._call(generator, context))
        if answer is not None:
            waiting = self._deliver(context, answer)
            if waiting is not None:
                await waiting

    async def _settle(self, generator, context: RequestContext, answer):
        if not inspect.isawaitable(answer):
            return answer
        try:
            return await answer
        except Exception as e:
            return self._failed(generator, context, e)

    def _call(self, generator, context: RequestContext):
        try:
            return generator(context)
        except Exception as e:
            return self._failed(generator, context, e)

    def _failed(self, generator, context: RequestContext, error: Exception) -> http.Response:
        """A broken generator costs one request a 500, never the proxy."""
        flow, where = context.flow, describe(generator)
        # A warning, not an error: mitmproxy stops when an error is logged during start-up.
        logger.warning(
            "generator %s failed on %s %.200s", where, flow.request.method, flow.request.path, exc_info=error
        )
        return wire.azure_error(
            500, "InternalServerError", f"The generator {where} failed: {type(error).__name__}: {error}", flow.request
        )

    def _deliver(self, context: RequestContext, answer: http.Response | StreamPlan) -> Awaitable[None] | None:
        flow = context.flow
        gate = self.gates.gate(context.deployment) if context.deployment else None
        if isinstance(answer, StreamPlan):
            answer.arrived_ago = latency.since_arrival(context)
            answer.gate = gate
            self.streams.route(answer)
            context.stream = answer
            return None
        delay = context.latency_s
        if delay:
            latency.hold(context, delay, gate)  # the Pacing stage sends it when due
        flow.response = answer
        return None
