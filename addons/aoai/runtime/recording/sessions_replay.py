"""Playing a recorded realtime session back to a client that sends the same events.

A replayed session starts with the server events recorded before the first client event
(session.created, …). Each client event is then matched against the next client event of
the recorded sessions of that deployment still in the running (all of them at first): the
sessions whose next event matches stay, and the first of them plays the server events
recorded after it, before the next client event. An event that matches none gets Azure's
`error` event naming what the closest recording expects there; the session goes on, and the
client may send the expected event.

Two events match when their JSON is the same but for `event_id` (the client's own ids), the
fields RECORDING_IGNORE_FIELDS names (at the top level) and audio: a field named `audio`
(`input_audio_buffer.append`, an audio content part) is compared by its length only, so the
same chunking of other speech replays the recording (its VAD events were Azure's, not
worked out again).

Timing (REPLAY_TIMING): `recorded` sends each server event as long after the client event it
followed as it came when recorded; `model` sends the deltas as the deployment's latency
model paces tokens (the events before the first delta at once); `none` sends them at once,
as does SIMULATOR_LATENCY=false.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..latency import token_offsets
from ..realtime_server import Emit, SessionTicket
from .matchers import KeyRules, differing_fields
from .persistence import Ref
from .sessions import CLIENT, SERVER, Message, RecordedSession, SessionRecordings

logger = logging.getLogger(__name__)

NOT_RECORDED = "recording_not_found"


def normalised(data: Any) -> Any:
    """An event as it is compared: audio by its length (recursively; other values as they are)."""
    if isinstance(data, dict):
        return {
            k: (f"({len(v)} characters of audio)" if k == "audio" and isinstance(v, str) else normalised(v))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [normalised(v) for v in data]
    return data


def differences(recorded: Any, sent: Any, ignore_fields: Sequence[str] = ()) -> list[str]:
    """Where a client event differs from the recorded one (top-level fields); [] when it matches."""
    rules = KeyRules(ignore_fields=("event_id", *ignore_fields))
    return differing_fields(normalised(recorded), normalised(sent), rules)


def frame_data(message: str | bytes) -> Any:
    """A client frame as a recording keeps it: its JSON, else its text, else its bytes."""
    try:
        return orjson.loads(message)
    except orjson.JSONDecodeError:
        return message if isinstance(message, str) else bytes(message)


def due_times(
    run: list[Message], anchor_ms: float, timing: str, ticket: SessionTicket, rng: random.Random
) -> list[float]:
    """Seconds after the client event (`anchor_ms` in the recording) each server event is due."""
    if timing == "recorded":
        return [max(0.0, (m.at_ms - anchor_ms) / 1000) for m in run]
    content = [i for i, m in enumerate(run) if _delta(m.data)]
    if timing != "model" or not content:
        return [0.0] * len(run)
    ticks = token_offsets(ticket.latency, len(content), rng)
    due, step = [], 0
    for i in range(len(run)):
        due.append(ticks[min(step, len(ticks) - 1)] if i >= content[0] else 0.0)
        if i in content:
            step += 1
    return due


def _delta(data: Any) -> bool:
    return isinstance(data, dict) and str(data.get("type", "")).endswith(".delta")


class Cursor:
    """Where a client is in one recorded session: the index of the next message to look at."""

    def __init__(self, session: RecordedSession):
        self.session = session
        self.position = 0
        self.clients_seen = 0

    def server_run(self) -> list[Message]:
        """The server events from here to the next client event (which it stops at)."""
        messages, run = self.session.messages, []
        while self.position < len(messages) and messages[self.position].side == SERVER:
            run.append(messages[self.position])
            self.position += 1
        return run

    def expected(self) -> Message | None:
        messages = self.session.messages
        return messages[self.position] if self.position < len(messages) else None

    def take(self) -> list[Message]:
        """Past the expected client event: the server events recorded after it."""
        self.position += 1
        self.clients_seen += 1
        return self.server_run()


class ReplaySession:
    """A session the loopback server runs in replay mode (the realtime server's SessionLike)."""

    _ids = itertools.count(1)

    def __init__(
        self,
        recordings: SessionRecordings,
        refs: list[Ref],
        ticket: SessionTicket,
        emit: Emit,
        timing: str = "recorded",
        ignore_fields: Sequence[str] = (),
        rng: random.Random | None = None,
    ):
        self.recordings = recordings
        self.refs = refs
        self.ticket = ticket
        self.emit = emit
        self.timing = timing if ticket.latency_enabled else "none"
        self.ignore_fields = tuple(ignore_fields)
        self.rng = rng or random.Random()
        self.cursors: list[Cursor] = []
        self._playing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sessions = await asyncio.to_thread(self._load)
        self.cursors = [Cursor(s) for s in sessions]
        if not self.cursors:
            await self._error(f"The recorded sessions of {self.ticket.deployment.name} could not be read.", None)
            return
        runs = [c.server_run() for c in self.cursors]
        self._play(runs[0], 0.0)

    def _load(self) -> list[RecordedSession]:
        sessions = []
        for ref in self.refs:
            try:
                sessions.append(self.recordings.get(ref))
            except (OSError, ValueError) as e:  # yaml's errors are ValueErrors too
                logger.warning("skipped a realtime recording in %s that cannot be read: %s", ref.file, e)
        return sessions

    async def receive(self, message: str | bytes) -> None:
        if self._playing is not None:
            await self._playing  # what was recorded before this event goes out first
        sent = frame_data(message)
        matched: list[Cursor] = []
        closest: tuple[int, Message, list[str]] | None = None
        for cursor in self.cursors:
            expected = cursor.expected()
            if expected is None or expected.side != CLIENT:
                continue
            fields = differences(expected.data, sent, self.ignore_fields)
            if not fields:
                matched.append(cursor)
            elif closest is None or len(fields) < closest[0]:
                closest = (len(fields), expected, fields)
        if not matched:
            await self._error(self._miss(sent, closest), sent.get("event_id") if isinstance(sent, dict) else None)
            return
        anchor = matched[0].expected()
        runs = [c.take() for c in matched]
        self.cursors = matched
        self._play(runs[0], anchor.at_ms if anchor is not None else 0.0)

    def _miss(self, sent: Any, closest: tuple[int, Message, list[str]] | None) -> str:
        deployment = self.ticket.deployment.name
        kind = sent.get("type") if isinstance(sent, dict) else None
        what = f"this {kind} event" if kind else "this message"
        if closest is None:
            seen = max((c.clients_seen for c in self.cursors), default=0)
            return (
                f"No recorded session of {deployment} continues with {what}: the recording ends after "
                f"{seen} client events."
            )
        _, expected, fields = closest
        wanted = expected.data.get("type") if isinstance(expected.data, dict) else None
        return (
            f"No recorded session of {deployment} continues with {what}. The closest recording expects "
            f"{wanted or 'another message'} next; it differs in: {', '.join(fields)}."
        )

    def _play(self, run: list[Message], anchor_ms: float) -> None:
        if run:
            self._playing = asyncio.create_task(self._send(run, anchor_ms))

    async def _send(self, run: list[Message], anchor_ms: float) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for message, due in zip(run, due_times(run, anchor_ms, self.timing, self.ticket, self.rng), strict=True):
            wait = began + due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if isinstance(message.data, dict):  # Azure sends JSON only; other frames are not replayed
                await self.emit(message.data)

    async def _error(self, message: str, client_event_id: Any) -> None:
        await self.emit(
            {
                "type": "error",
                "event_id": f"event_replay{next(self._ids)}",
                "error": {
                    "type": "invalid_request_error",
                    "code": NOT_RECORDED,
                    "message": message,
                    "param": None,
                    "event_id": client_event_id if isinstance(client_event_id, str) else None,
                },
            }
        )

    async def close(self) -> None:
        if self._playing is not None and not self._playing.done():
            self._playing.cancel()
            try:
                await self._playing
            except (asyncio.CancelledError, Exception):
                pass


def replayer(
    recordings: SessionRecordings,
    refs: list[Ref],
    timing: str,
    ignore_fields: Sequence[str] = (),
    rng: random.Random | None = None,
) -> Callable[[SessionTicket, Emit], ReplaySession]:
    """The session factory of a handshake whose deployment has recordings (`refs`)."""

    def build(ticket: SessionTicket, emit: Emit) -> ReplaySession:
        seeded = random.Random(f"replay:{ticket.seed}") if ticket.seed is not None else rng
        return ReplaySession(recordings, refs, ticket, emit, timing, ignore_fields, seeded)

    return build
