"""The latency model: how long a deployment takes to its first token, between tokens, and
for a whole request; and when a request arrived. Random draws use the generator they are given
(the services' one, seeded by SIMULATOR_SEED).

Times are scheduled against absolute deadlines measured from the request's arrival, so a
busy event loop delays a frame but never shifts the ones after it.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from . import internals
from .config import Deployment, Latency, SimulatorConfig, model_latency
from .routes import Route
from .state import Hold

if TYPE_CHECKING:
    from .state import RequestContext

# Responses are chat answers in another shape: the chat latency settings time them too.
_OPTION_NAMES = {
    "chat": "chat_completions",
    "responses": "chat_completions",
    "completions": "completions",
    "embeddings": "embeddings",
}


def profile(deployment: Deployment, operation: Route, config: SimulatorConfig) -> Latency:
    """The deployment's own latency, else the model's defaults with LATENCY_OPENAI_* applied.

    As in the seed simulator, LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN and _COMPLETIONS_MEAN are
    milliseconds per completion token for the whole answer, the first token included (so 0
    answers at once, and an answer of n tokens takes about n x mean); _EMBEDDINGS_MEAN is
    milliseconds per request."""
    if deployment.latency is not None:
        return deployment.latency
    base = model_latency(deployment.model)
    override = config.latency_defaults.get(_OPTION_NAMES.get(operation.name, ""))
    if override is None:
        return base
    if operation.name in ("chat", "completions", "responses"):
        return Latency(override, override, base.request_ms)
    return Latency(base.time_to_first_token_ms, base.inter_token_ms, override)


def media_seconds(
    deployment: Deployment, operation: Route, config: SimulatorConfig, audio_seconds: float, rng: random.Random
) -> float:
    """How long an audio or image answer takes: the deployment's request time, plus its audio
    pace times the seconds of audio (the upload's, or the speech made)."""
    return profile(deployment, operation, config).request_ms.draw(rng) / 1000 + deployment.pace * audio_seconds


def generation_seconds(latency: Latency, ticks: int, rng: random.Random, hidden_tokens: int = 0) -> float:
    """Time from arrival to the last token of a non-streamed answer: the same total a stream
    of `ticks` token steps takes. Hidden (reasoning) tokens are spent before the first one."""
    itl = latency.inter_token_ms.draw(rng)
    return (latency.time_to_first_token_ms.draw(rng) + itl * (max(ticks, 1) - 1 + hidden_tokens)) / 1000


def token_offsets(latency: Latency, ticks: int, rng: random.Random, hidden_tokens: int = 0) -> list[float]:
    """Seconds from arrival at which each of `ticks` token steps of a stream is due."""
    itl = latency.inter_token_ms
    t = latency.time_to_first_token_ms.draw(rng) / 1000 + hidden_tokens * itl.mean / 1000
    offsets = [t]
    for _ in range(ticks - 1):
        t += itl.draw(rng) / 1000
        offsets.append(t)
    return offsets


def hold(context: RequestContext, seconds: float, gate: asyncio.Semaphore | None = None) -> None:
    """Have the Pacing stage send the answer `seconds` after the request arrived."""
    context.hold = Hold(seconds, gate)


def arrived_at(context: RequestContext) -> float | None:
    """When the request reached the machine: the kernel's time where it is known, else
    mitmproxy's stamp. Taken once per request, so every deadline counts from the same instant."""
    if context.arrived_at is None:
        flow = context.flow
        context.arrived_at = internals.received_at(flow) or flow.request.timestamp_start
    return context.arrived_at


def since_arrival(context: RequestContext) -> float:
    """Seconds since the request arrived."""
    at = arrived_at(context)
    return max(0.0, time.time() - at) if at else 0.0
