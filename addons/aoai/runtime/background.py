"""Background responses of the Responses API: a response created with `background: true` is
answered at once, `queued`, and then moves on by the clock as the deployment's latency says
(`queued`, `in_progress`, then its final status), whoever asks and however often. Its stream
events are kept with the time each falls due, so a client may read the stream again from any
`sequence_number` (`GET …/responses/{id}?stream=true&starting_after=N`).

Plain data and functions: the generator builds a `BackgroundRun`, the stored-responses store
holds it, and each retrieve, cancel or resumed stream reads it at the time it asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

QUEUED, IN_PROGRESS, CANCELLED = "queued", "in_progress", "cancelled"
ACTIVE = (QUEUED, IN_PROGRESS)

# The clock runs are read by: wall-clock time, so a replica on another machine reading a run
# from the shared store sees it where it is. Tests replace it.
clock: Callable[[], float] = time.time

# Share of the time to the first token a run waits `queued` before it is `in_progress`.
QUEUED_SHARE = 0.5


@dataclass
class BackgroundRun:
    started: float  # clock time it was created
    queued_s: float  # seconds after `started` it starts (in_progress)
    done_s: float  # seconds after `started` it reaches its final status
    events: list[tuple[float, dict[str, Any]]]  # (seconds after `started`, event), numbered in order
    final: dict[str, Any]  # the response object when it is done
    streamed: bool  # created with `stream: true`
    cancelled_at: float | None = None  # seconds after `started`

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "queuedS": self.queued_s,
            "doneS": self.done_s,
            "events": self.events,
            "final": self.final,
            "streamed": self.streamed,
            "cancelledAt": self.cancelled_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackgroundRun:
        return cls(
            float(data["started"]),
            float(data["queuedS"]),
            float(data["doneS"]),
            [(float(due), event) for due, event in data["events"]],
            data["final"],
            bool(data["streamed"]),
            data["cancelledAt"],
        )

    def status(self, now: float) -> str:
        elapsed = now - self.started
        if self.cancelled_at is not None and elapsed >= self.cancelled_at:
            return CANCELLED
        if elapsed < self.queued_s:
            return QUEUED
        if elapsed < self.done_s:
            return IN_PROGRESS
        return str(self.final["status"])

    def body(self, now: float) -> dict[str, Any]:
        """The response object as a retrieve at `now` sees it: the whole answer once done."""
        status = self.status(now)
        if status == self.final["status"]:
            return self.final
        return _unfinished(self.final, status)

    def created(self) -> dict[str, Any]:
        """The response object the create call answers: always `queued`, however soon it ends."""
        return _unfinished(self.final, QUEUED)

    def cancel(self, now: float) -> bool:
        """Cancel it if it is still queued or in progress; False when it had already ended
        (a repeated cancel changes nothing)."""
        if self.status(now) not in ACTIVE:
            return False
        self.cancelled_at = now - self.started
        return True

    def events_after(self, after: int, now: float) -> list[tuple[float, dict[str, Any]]]:
        """The events numbered above `after`, each with the seconds from `now` it falls due
        (0: already due, replayed at once); a cancelled run's stream ends where it was cancelled."""
        elapsed = now - self.started
        end = self.cancelled_at
        return [
            (max(0.0, due - elapsed), event)
            for due, event in self.events
            if event["sequence_number"] > after and (end is None or due < end)
        ]


def _unfinished(final: dict[str, Any], status: str) -> dict[str, Any]:
    return {**final, "status": status, "output": [], "usage": None, "incomplete_details": None, "error": None}


def build_run(
    final: dict[str, Any],
    timeline: list[tuple[int, dict[str, Any]]],
    offsets: list[float],
    streamed: bool,
    now: float,
) -> BackgroundRun:
    """A run of a finished answer: `timeline` its stream events at their token steps (-1: at
    once), `offsets` the seconds each token step falls due (the deployment's latency; empty:
    all at once). The events say `background: true`, open `queued` and are numbered again."""
    final = {**final, "background": True}
    first = offsets[0] if offsets else 0.0
    queued_s = first * QUEUED_SHARE
    done_s = offsets[-1] if offsets else 0.0
    events: list[tuple[float, dict[str, Any]]] = []
    for step, event in timeline:
        kind = event["type"]
        if step >= 0:
            due = offsets[min(step, len(offsets) - 1)] if offsets else 0.0
        else:
            due = queued_s if kind == "response.in_progress" else 0.0
        if "response" in event:
            shown = final if event["response"]["status"] == final["status"] else _unfinished(final, IN_PROGRESS)
            event = {**event, "response": shown}
        if kind == "response.created":
            event = {**event, "response": _unfinished(final, QUEUED)}
            events.append((due, event))
            event = {"type": "response.queued", "response": _unfinished(final, QUEUED)}
        events.append((max(due, done_s) if kind == final_event(final) else due, event))
    numbered = [(due, {**event, "sequence_number": n}) for n, (due, event) in enumerate(events)]
    return BackgroundRun(now, queued_s, done_s, numbered, final, streamed)


def final_event(final: dict[str, Any]) -> str:
    return "response.incomplete" if final["status"] == "incomplete" else "response.completed"


def stream_cut_body(finished: dict[str, Any]) -> dict[str, Any]:
    """What a stored response holds when its stream broke before the end: `failed`, with the
    server error a broken stream is, and no output or usage (the answer never finished)."""
    return {
        **finished,
        "status": "failed",
        "error": {"code": "server_error", "message": "The response stream was interrupted by a server error."},
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }
