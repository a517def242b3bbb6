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
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import ctx, http

from .. import wire
from ..generators import BUILT_IN
from ..generators.common import HEAVY_PROMPT_TOKENS, HEAVY_TOKENS, answer_tokens
from ..openai.catalogue import Normal
from ..runtime import latency, offload
from ..runtime.config import MAX_WHOLE, ConfigError, SimulatorConfig
from ..runtime.failures import describe
from ..runtime.options import Option, check, declare, names, text_number
from ..runtime.routes import MANAGEMENT
from ..runtime.services import Services
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_for
from ..runtime.streams import StreamPlan

logger = logging.getLogger(__name__)

DEFAULTS = SimulatorConfig()  # each option's default is the configuration's, written once there


# The operations whose latency the LATENCY_OPENAI_* settings set, and what their figures are per.
LATENCY_OPERATIONS = {
    "CHAT_COMPLETIONS": "per completion token",
    "COMPLETIONS": "per completion token",
    "EMBEDDINGS": "per request",
}


def _milliseconds(env: str) -> Callable[[str], str | None]:
    """A latency mean's text, checked (a number, not below 0); empty: not set."""

    def parse(text: str) -> str | None:
        text = text.strip()
        if text:
            value = text_number(env, text)
            if value < 0:
                raise ConfigError(f"{env}: must not be below 0, got {text}")
        return text or None

    return parse


def _latency_options(op: str, per: str) -> tuple[Option, Option]:
    what = op.lower().replace("_", " ")
    mean = f"LATENCY_OPENAI_{op}_MEAN"
    return (
        Option(
            mean,
            str | None,
            None,
            f"Mean of the simulated latency of {what}, milliseconds {per}; unset: each model's own.",
            parse=_milliseconds(mean),
            check=lambda text: _milliseconds(mean)(text or ""),
        ),
        Option(
            f"LATENCY_OPENAI_{op}_STD_DEV",
            float,
            0.0,
            f"Standard deviation of the simulated latency of {what}, milliseconds {per} (with its mean).",
            low=0,
        ),
    )


OPTIONS = (
    Option("SIMULATOR_LATENCY", bool, DEFAULTS.latency_enabled, "Simulate latency; off answers as fast as possible."),
    Option(
        "SIMULATOR_COMPLETION_TOKENS_MEAN",
        float,
        DEFAULTS.completion_tokens.mean,
        "Mean length in tokens of an answer whose request sets no limit.",
        low=0,
    ),
    Option(
        "SIMULATOR_COMPLETION_TOKENS_STD_DEV",
        float,
        DEFAULTS.completion_tokens.std_dev,
        "Standard deviation of that length.",
        low=0,
    ),
    Option(
        "SIMULATOR_TOOL_CALL_SHARE",
        float,
        DEFAULTS.tool_call_share,
        "Share (0 to 1) of tool_choice=auto requests that get a tool call instead of text.",
        low=0,
        high=1,
    ),
    *(option for op, per in LATENCY_OPERATIONS.items() for option in _latency_options(op, per)),
    Option(
        "RESPONSES_STORED",
        int,
        DEFAULTS.responses_stored,
        "Responses API: how many stored responses are kept (the newest) for retrieve and previous_response_id.",
        low=0,
        high=MAX_WHOLE,
    ),
    Option(
        "PROMPT_CACHE_IDLE_SECONDS",
        float,
        DEFAULTS.prompt_cache_idle_s,
        "Seconds after which an unused prompt prefix leaves the prompt cache (cached_tokens).",
        low=0,
    ),
)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the settings of made-up answers and copy them into `config`; raises ConfigError."""
    check(options, OPTIONS, updated)
    defaults = {}
    for op in LATENCY_OPERATIONS:
        mean = getattr(options, f"latency_openai_{op.lower()}_mean")
        if mean:
            defaults[op.lower()] = Normal(float(mean), float(getattr(options, f"latency_openai_{op.lower()}_std_dev")))
    config.latency_enabled = options.simulator_latency
    config.latency_defaults = defaults
    config.completion_tokens = Normal(
        float(options.simulator_completion_tokens_mean), float(options.simulator_completion_tokens_std_dev)
    )
    config.tool_call_share = float(options.simulator_tool_call_share)
    config.responses_stored = options.responses_stored
    config.prompt_cache_idle_s = float(options.prompt_cache_idle_seconds)


class Generate:
    def __init__(self, config: SimulatorConfig, services: Services, startup: Startup | None = None):
        self.config = config
        self.services = services  # the generators reach them through each request's context
        self.streams = services.streams
        self.gates = services.gates
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self._built_in = frozenset(BUILT_IN)

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def settle(self) -> None:
        """Copy these settings into the config now (for extensions, configured before this stage)."""
        apply(ctx.options, self.config, set(NAMES))

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Synchronous unless there is something to wait for (a latency, an async generator):
        # mitmproxy awaits what a hook returns, and most requests then cost no coroutine.
        if flow.response or self.config.mode != "generate":
            return None
        context = context_for(flow, self.config, self.services)
        if context.services is None:
            context.services = self.services  # a context made before the stack's routing saw it
        route = context.route
        if (route is not None and route.family == MANAGEMENT) or context.websocket is not None:
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

    def _walk(self, context: RequestContext, generators: list) -> tuple[int, Any]:
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
