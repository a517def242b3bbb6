"""The simulator's realtime sessions as the loopback server builds them: a handshake's ticket
(runtime/realtime_server.py) made into a `Session` of this package.

The session's timing is the deployment's: its first audio after a time to first token drawn
from the deployment's latency (Azure's realtime models answer speech in a few hundred ms),
then audio in real time; with SIMULATOR_LATENCY off, all at once. A seed gives each session
the same words.
"""

from __future__ import annotations

import random
import time

from ..runtime.realtime_server import Emit, SessionTicket
from .session import Session, SessionPlan
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
    return Session(plan, emit, time.monotonic, rng)
