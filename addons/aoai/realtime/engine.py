"""The simulator's realtime sessions as the loopback server builds them: a handshake's ticket
(runtime/realtime_server.py) made into a `Session` of this package.

The session's timing is the deployment's: its first audio after a time to first token drawn
from the deployment's latency (Azure's realtime models answer speech in a few hundred ms),
then audio in real time; with SIMULATOR_LATENCY off, all at once. A seed gives each session
the same words. The ticket also lends the deployment's quota windows, and its declared faults
(drawn for each response; trickles do not apply to sessions); the deployment's content filter
judges the user's words.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..openai import content_filter as filters
from ..runtime.config import Deployment
from ..runtime.realtime_server import Emit, SessionTicket
from .session import Disruption, Hooks, Session, SessionPlan
from .timing import NO_WAITING, Timing

REAL_TIME = 1.0  # audio seconds sent per wall-clock second


def session(ticket: SessionTicket, emit: Emit) -> Session:
    """A new session for an admitted handshake; `emit` sends its events."""
    rng = random.Random(f"realtime:{ticket.seed}") if ticket.seed is not None else random.Random()
    timing = (
        Timing(first_audio=ticket.latency.time_to_first_token_ms.draw(rng) / 1000, pace=REAL_TIME)
        if ticket.latency_enabled
        else NO_WAITING
    )
    deployment = ticket.deployment
    plan = SessionPlan(deployment.name, deployment.model.name, ticket.flavour, timing, ticket.seed)
    hooks = Hooks(
        quota=ticket.quota,
        judge=judge_for(deployment, random.Random(f"filter:{ticket.seed}") if ticket.seed is not None else None),
        disruption=disruption_for(ticket),
        struck=ticket.count_fault,
    )
    return Session(plan, emit, time.monotonic, rng, hooks=hooks)


def judge_for(deployment: Deployment, rng: random.Random | None = None) -> Callable[[str], str | None] | None:
    """The deployment's content filter over a session's prompts: the category a text is
    blocked for (its rules, then its random share), else None. None when it judges nothing."""
    policy = deployment.content_filter or filters.DEFAULT
    if not policy.prompt and not policy.prompt_share:
        return None
    dice = rng or random.Random()

    def judge(text: str) -> str | None:
        verdict = filters.judge(policy.prompt, text, filters.PROMPT, policy.block_at)
        if policy.prompt_share and dice.random() < policy.prompt_share:
            verdict.score(filters.random_category(dice))
        found = verdict.filtered
        return found[0] if found else None

    return judge


def disruption_for(ticket: SessionTicket) -> Callable[[], Disruption | None] | None:
    """The faults striking each response, from the deployment's declared profile."""
    draw = ticket.draw_faults
    if draw is None:
        return None

    def disruption() -> Disruption | None:
        delay, cut_tokens, cut_s = 0.0, None, None
        for fault in draw():
            if fault.kind == "slowFirstByte":
                delay += fault.delay_s
            elif fault.kind == "streamCut" and cut_tokens is None and cut_s is None:
                cut_tokens, cut_s = fault.after_tokens, fault.after_s
        if not delay and cut_tokens is None and cut_s is None:
            return None
        return Disruption(delay, cut_tokens, cut_s)

    return disruption
