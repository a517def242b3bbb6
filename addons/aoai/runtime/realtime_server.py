"""The loopback WebSocket server realtime sessions run on.

The realtime stage admits a handshake (auth, checks) and leaves a one-time ticket here naming
what the session is for (deployment, event flavour, timing); it then points the flow at this
server, so mitmproxy relays the WebSocket between the client and us and shows every message.
Each connection here takes its ticket, builds a session through the factory and hands it every
frame the client sends; the session answers through `emit`, one JSON text frame per event.

Bounded: frames up to 16 MiB, a number of sessions at once, a session's length (Azure ends
one after 30 minutes), tickets by count and age, and what waits to be written to a slow client
(`send` waits while the write buffer is full, so a session's answers slow down instead).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from mitmproxy import http
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from .config import Deployment, Latency
    from .faults import Fault

logger = logging.getLogger(__name__)

TICKET_HEADER = "x-simulator-realtime"
BETA, GA = "beta", "ga"  # event names: the preview path's, or the v1 path's

MAX_FRAME_BYTES = 16 * 1024 * 1024  # a client's largest message (Azure: 15 MiB of audio per append, base64)
DEFAULT_MAX_SESSIONS = 1000
DEFAULT_MAX_SESSION_S = 30 * 60.0  # Azure ends a session after 30 minutes
TICKET_TTL_S = 10.0  # mitmproxy connects here within milliseconds of the stage's hook
MAX_TICKETS = 4096
# What waits for a slow client: beyond the high-water mark `send` waits (so does the session).
WRITE_LIMIT = (1024 * 1024, 256 * 1024)
MAX_QUEUE = 16  # frames received and not yet handed to the session

# Close codes: RFC 6455's. Azure's code after the 30 minutes is not documented; OpenAI's service
# sends the error event below, then a normal close.
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER = 1000, 1008, 1011, 1013
SESSION_EXPIRED = "Your session hit the maximum duration of {minutes} minutes."

Emit = Callable[[dict[str, Any]], Awaitable[None]]
# ((limit, remaining) of requests, (limit, remaining) of tokens): what rate_limits.updated shows.
RateFigures = tuple[tuple[int, int], tuple[int, int]]
MAX_PENDING_FIRST_AUDIO = 10_000  # first-audio times waiting for the next scrape, across sessions


class SessionQuota(Protocol):
    """A session's share of its deployment's quota (the Limits stage's windows). Never raises:
    when shared windows are away, this replica's own windows answer."""

    async def room(self, tokens: int) -> float: ...  # seconds until `tokens` fit the token window (0.0: now)

    async def charge(self, tokens: int) -> None: ...  # tokens a finished response used

    async def figures(self) -> RateFigures: ...  # the deployment's limits and what remains of them


class SessionLike(Protocol):
    """A realtime session, without sockets: the protocol engine's side."""

    async def start(self) -> None: ...  # the first events (session.created, …)

    async def receive(self, message: str | bytes) -> None: ...  # one client frame, as it came

    async def close(self) -> None: ...  # the client went away, or the session was ended here


@dataclass(frozen=True, eq=False)
class SessionTicket:
    """What an admitted handshake says about its session: everything a session is built from."""

    deployment: Deployment
    flavour: str  # BETA (the preview path) or GA (the v1 path)
    api_version: str | None
    latency: Latency  # the deployment's timing, LATENCY_* settings applied
    latency_enabled: bool
    seed: int | None  # SIMULATOR_SEED
    headers: dict[str, str] = field(default_factory=dict)  # the handshake's, without credentials
    query: dict[str, str] = field(default_factory=dict)  # the handshake's query, without secrets
    quota: SessionQuota | None = None  # the deployment's windows (None: no quota)
    # The deployment's declared faults: a draw for each response, and a count of each that struck.
    draw_faults: Callable[[], Sequence[Fault]] | None = None
    count_fault: Callable[[str], None] | None = None


SessionFactory = Callable[[SessionTicket, Emit], SessionLike]
Drop = Callable[[], Awaitable[None]]


@dataclass
class Tally:
    """What a deployment's sessions did, for metrics: sessions started, events and audio
    seconds each way (in: from the client)."""

    sessions: int = 0
    events_in: int = 0
    events_out: int = 0
    audio_in: float = 0.0
    audio_out: float = 0.0

    def add(self, usage: Any) -> None:
        self.events_in += usage.events_in
        self.events_out += usage.events_out
        self.audio_in += usage.audio_seconds_in
        self.audio_out += usage.audio_seconds_out


@dataclass
class _Live:
    label: str
    session: SessionLike
    seen: int = 0  # first-audio times already taken from its usage


class Tickets:
    """One-time tickets, bounded by count and age: a ticket mitmproxy never brings (the client
    went away) is forgotten after TICKET_TTL_S, or when newer ones need the room."""

    def __init__(
        self, ttl_s: float = TICKET_TTL_S, most: int = MAX_TICKETS, clock: Callable[[], float] = time.monotonic
    ):
        self.ttl_s, self.most, self.clock = ttl_s, most, clock
        self._held: OrderedDict[str, tuple[float, SessionTicket, SessionFactory]] = OrderedDict()

    def issue(self, ticket: SessionTicket, factory: SessionFactory) -> str:
        self._expire()
        while len(self._held) >= self.most:
            self._held.popitem(last=False)
        name = secrets.token_urlsafe(18)
        self._held[name] = (self.clock(), ticket, factory)
        return name

    def take(self, name: str) -> tuple[SessionTicket, SessionFactory] | None:
        self._expire()
        held = self._held.pop(name, None)
        return None if held is None else (held[1], held[2])

    def forget(self, name: str) -> None:
        self._held.pop(name, None)

    def __len__(self) -> int:
        return len(self._held)

    def _expire(self) -> None:
        oldest = self.clock() - self.ttl_s
        while self._held:
            issued = next(iter(self._held.values()))[0]
            if issued > oldest:
                return
            self._held.popitem(last=False)


class RealtimeServer:
    """The loopback WebSocket server; `start` and `stop` follow the simulator's."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS, max_session_s: float = DEFAULT_MAX_SESSION_S):
        self.max_sessions = max_sessions
        self.max_session_s = max_session_s
        self.tickets = Tickets()
        self.port = 0
        self.active = 0  # sessions running now
        self.started = 0  # sessions started since the simulator started
        self.refused = 0  # connections closed without a session (no ticket, full)
        self._server: Server | None = None
        self._ids = itertools.count(1)
        self.live: dict[int, _Live] = {}  # sessions running now, for metrics
        self.ended: dict[str, Tally] = {}  # by deployment label: sessions that ended
        self.first_audio: deque[tuple[str, float]] = deque(maxlen=MAX_PENDING_FIRST_AUDIO)

    @property
    def running(self) -> bool:
        return self._server is not None

    def full(self) -> bool:
        """Whether a new session would be one too many (those with tickets count)."""
        return self.active + len(self.tickets) >= self.max_sessions

    async def start(self) -> None:
        if self._server is None:
            self._server = await serve(
                self._serve,
                "127.0.0.1",
                0,
                compression=None,  # only mitmproxy, on this machine, talks to us
                server_header=None,
                max_size=MAX_FRAME_BYTES,
                max_queue=MAX_QUEUE,
                write_limit=WRITE_LIMIT,
                ping_interval=None,  # mitmproxy keeps the client's connection; ours is local
                backlog=1024,
            )
            self.port = next(iter(self._server.sockets)).getsockname()[1]
            logger.debug("realtime server on 127.0.0.1:%d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def admit(self, ticket: SessionTicket, factory: SessionFactory) -> str:
        """A ticket for a session about to connect; its name goes in TICKET_HEADER."""
        return self.tickets.issue(ticket, factory)

    def to_loopback(self, request: http.Request, name: str) -> None:
        """Point a handshake at this server, carrying its ticket."""
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.port
        request.headers[TICKET_HEADER] = name

    async def _serve(self, connection: ServerConnection) -> None:
        name = connection.request.headers.get(TICKET_HEADER, "") if connection.request else ""
        found = self.tickets.take(name) if name else None
        if found is None:
            self.refused += 1
            await connection.close(CLOSE_POLICY, "unknown or expired session ticket")
            return
        if self.active >= self.max_sessions:
            self.refused += 1
            await connection.close(CLOSE_TRY_LATER, "too many realtime sessions")
            return
        ticket, factory = found
        self.active += 1
        self.started += 1
        try:
            await self._run(connection, ticket, factory)
        finally:
            self.active -= 1

    async def _run(self, connection: ServerConnection, ticket: SessionTicket, factory: SessionFactory) -> None:
        async def emit(event: dict[str, Any]) -> None:
            # Text frames; `send` waits while a slow client's write buffer is full.
            await connection.send(orjson.dumps(event), text=True)

        async def drop() -> None:
            # A network fault: the socket goes without a close frame.
            connection.transport.abort()

        session = factory(ticket, emit)
        bind = getattr(session, "bind_drop", None)  # sessions that can drop their socket (faults)
        if callable(bind):
            bind(drop)
        number = next(self._ids)
        self.live[number] = _Live(ticket.deployment.label, session)
        code, reason = CLOSE_NORMAL, ""
        try:
            async with asyncio.timeout(self.max_session_s):
                await session.start()
                async for message in connection:
                    await session.receive(message)
        except TimeoutError:
            await self._expired(emit)
        except ConnectionClosed:
            pass  # the client went away
        except Exception:
            logger.warning("realtime session on %s failed", ticket.deployment.name, exc_info=True)
            code, reason = CLOSE_ERROR, "internal error"
        finally:
            try:
                await session.close()
            except Exception:
                logger.warning("realtime session on %s failed to close", ticket.deployment.name, exc_info=True)
            self._ended(self.live.pop(number))
            await connection.close(code, reason)

    async def _expired(self, emit: Emit) -> None:
        """Azure's last word to a session past its longest duration, then a normal close."""
        minutes = f"{self.max_session_s / 60:g}"
        event = {
            "type": "error",
            "event_id": f"event_expired{next(self._ids)}",
            "error": {
                "type": "invalid_request_error",
                "code": "session_expired",
                "message": SESSION_EXPIRED.format(minutes=minutes),
                "param": None,
                "event_id": None,
            },
        }
        try:
            async with asyncio.timeout(1.0):  # a client that reads nothing more is not waited for
                await emit(event)
        except (TimeoutError, ConnectionClosed):
            pass

    # --- Metrics ---------------------------------------------------------------------------

    def _ended(self, live: _Live) -> None:
        tally = self.ended.setdefault(live.label, Tally())
        tally.sessions += 1
        usage = getattr(live.session, "usage", None)
        if usage is not None:
            tally.add(usage)
            self._take_first_audio(live, usage)

    def _take_first_audio(self, live: _Live, usage: Any) -> None:
        fresh = usage.first_audios - live.seen
        live.seen = usage.first_audios
        if fresh > 0:
            times = usage.first_audio_seconds
            for seconds in list(times)[max(0, len(times) - fresh) :]:
                self.first_audio.append((live.label, seconds))

    def tallies(self) -> tuple[dict[str, Tally], dict[str, int]]:
        """Totals by deployment (ended sessions and those running, whose count is so far) and
        the sessions open now by deployment; takes the first-audio times not yet taken."""
        totals = {label: Tally(**vars(t)) for label, t in self.ended.items()}
        open_now: dict[str, int] = {}
        for live in self.live.values():
            open_now[live.label] = open_now.get(live.label, 0) + 1
            tally = totals.setdefault(live.label, Tally())
            tally.sessions += 1
            usage = getattr(live.session, "usage", None)
            if usage is not None:
                tally.add(usage)
                self._take_first_audio(live, usage)
        return totals, open_now

    def take_first_audio(self) -> list[tuple[str, float]]:
        """First-audio times (deployment label, seconds) since the last call."""
        taken = list(self.first_audio)
        self.first_audio.clear()
        return taken

    def usage(self) -> dict[str, int]:
        """For /++/limits and metrics: sessions now, their most, and tickets waiting."""
        return {
            "sessions": self.active,
            "maxSessions": self.max_sessions,
            "tickets": len(self.tickets),
            "maxTickets": self.tickets.most,
        }
