"""The latency model: how long a deployment takes to its first token, between tokens, and
for a whole request; and the queue in front of a deployment with limited concurrency.

Times are scheduled against absolute deadlines measured from the request's arrival, so a
busy event loop delays a frame but never shifts the ones after it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from . import client_socket
from .config import CHAT_COMPLETIONS, COMPLETIONS, Deployment, Latency, Operation, SimulatorConfig, model_latency

_rng = random.Random()

_OPTION_NAMES = {"chat": "chat_completions", "completions": "completions", "embeddings": "embeddings"}


def profile(deployment: Deployment, operation: Operation, config: SimulatorConfig) -> Latency:
    """The deployment's own latency, else the model's defaults with LATENCY_OPENAI_* applied:
    per completion token for chat and completions, per request for embeddings."""
    if deployment.latency is not None:
        return deployment.latency
    base = model_latency(deployment.model)
    override = config.latency_defaults.get(_OPTION_NAMES[operation.name])
    if override is None:
        return base
    if operation in (CHAT_COMPLETIONS, COMPLETIONS):
        return Latency(base.time_to_first_token_ms, override, base.request_ms)
    return Latency(base.time_to_first_token_ms, base.inter_token_ms, override)


def generation_seconds(latency: Latency, ticks: int, hidden_tokens: int = 0) -> float:
    """Time from arrival to the last token of a non-streamed answer: the same total a stream
    of `ticks` token steps takes. Hidden (reasoning) tokens are spent before the first one."""
    itl = latency.inter_token_ms.draw(_rng)
    return (latency.time_to_first_token_ms.draw(_rng) + itl * (max(ticks, 1) - 1 + hidden_tokens)) / 1000


def token_offsets(latency: Latency, ticks: int, hidden_tokens: int = 0) -> list[float]:
    """Seconds from arrival at which each of `ticks` token steps of a stream is due."""
    itl = latency.inter_token_ms
    t = latency.time_to_first_token_ms.draw(_rng) / 1000 + hidden_tokens * itl.mean / 1000
    offsets = [t]
    for _ in range(ticks - 1):
        t += itl.draw(_rng) / 1000
        offsets.append(t)
    return offsets


HOLD_KEY = "aoai.hold"  # flow.metadata: how long the answer is held (a Hold), for the Pacing stage


@dataclass
class Hold:
    seconds: float  # counted from the request's arrival, or from entering the gate
    gate: asyncio.Semaphore | None = None  # the deployment's concurrency queue, if any


def hold(flow, seconds: float, gate: asyncio.Semaphore | None = None) -> None:
    """Have the Pacing stage send the flow's answer `seconds` after the request arrived."""
    flow.metadata[HOLD_KEY] = Hold(seconds, gate)


ARRIVED_KEY = "aoai.arrived"  # flow.metadata: when the request arrived (time.time())


def arrived_at(flow) -> float | None:
    """When the request reached the machine: the kernel's time where it is known, else
    mitmproxy's stamp. Taken once per flow, so every deadline counts from the same instant."""
    at = flow.metadata.get(ARRIVED_KEY)
    if at is None:
        at = client_socket.received_at(flow) or flow.request.timestamp_start
        flow.metadata[ARRIVED_KEY] = at
    return at


def since_arrival(flow) -> float:
    """Seconds since the request arrived."""
    at = arrived_at(flow)
    return max(0.0, time.time() - at) if at else 0.0


class Gates:
    """Per-deployment queues for `maxConcurrentRequests`: requests beyond it wait their turn,
    so time to first token grows under load as on a busy deployment."""

    def __init__(self):
        self._gates: dict[tuple[str, int], asyncio.Semaphore] = {}

    def gate(self, deployment: Deployment) -> asyncio.Semaphore | None:
        limit = deployment.max_concurrent_requests
        if not limit:
            return None
        key = (deployment.name, limit)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = asyncio.Semaphore(limit)
        return gate


