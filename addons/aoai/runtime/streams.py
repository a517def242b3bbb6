"""Paced streams: server-sent events planned with the time each frame is due, and the
server that plays them, onto a client's own connection or as a loopback HTTP/1.1 server
that mitmproxy fetches them from chunk by chunk (see the streaming stage for when each is
used). Deadlines count from the request's arrival, one timer and one write per frame.

A plan can instead have a live `source` (record mode: Azure's stream): its chunks are
passed on as they arrive, by the same two paths.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from mitmproxy import http
from mitmproxy.http import status_codes

from .tasks import background

logger = logging.getLogger(__name__)

PLAN_HEADER = "x-simulator-stream"
_DONE = b"data: [DONE]\n\n"
DIRECT, LOOPBACK = "direct", "loopback"  # how a stream was played: onto the client's socket, or via mitmproxy


class LiveSource(Protocol):
    """Chunks of a stream as they arrive from elsewhere; `aclose` lets go of it, read or not."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass
class StreamPlan:
    headers: dict[str, str]
    frames: list[tuple[float, bytes]]  # (seconds after the start, bytes), in order
    arrived_ago: float = 0.0  # how long before planning the request arrived
    routed_at: float | None = None  # time.monotonic() when handed to the stream server
    gate: asyncio.Semaphore | None = None  # the deployment's concurrency queue, if any
    status: int = 200
    cut: bool = False  # drop the connection after the last frame instead of ending the body
    head_delay_s: float = 0.0  # the status line and headers leave this long after arrival (a slow first byte)
    token_frames: list[bool] | None = None  # which frames carry tokens (None: all of them)
    labels: dict[str, str] = field(default_factory=dict)  # deployment and operation, for metrics
    id: str = ""  # set when routed: the loopback server finds the plan by it
    source: LiveSource | None = None  # relay these chunks as they come, instead of `frames` (which they fill)
    on_cut: Callable[[], None] | None = None  # told when a fault cuts the stream (the stored response then failed)
    keep_body: bool = True  # False: a long binary answer (speech) is sent, never held; the flow shows none of it
    # Set by the server: how it went, for tests and metrics.
    completed: bool = False
    first_frame_s: float | None = None  # arrival to the first token frame, as sent
    first_frame_due_s: float = 0.0  # ... as planned
    gaps: list[float] = field(default_factory=list)  # between token frames, as sent
    last_token_s: float = 0.0
    sent: int = 0  # frames written so far

    def head(self) -> bytes:
        """The response's status line and headers, for a chunked body."""
        lines = [
            f"HTTP/1.1 {self.status} {status_codes.RESPONSES.get(self.status, 'Unknown')}",
            "transfer-encoding: chunked",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def response(self, started: float) -> http.Response:
        """What was sent, as the flow's response (mitmweb shows it)."""
        headers = http.Headers(transfer_encoding="chunked")
        for k, v in self.headers.items():
            headers.add(k, v)
        body = b"".join(data for _, data in self.frames[: self.sent]) if self.keep_body else b""
        return http.Response(
            b"HTTP/1.1",
            self.status,
            status_codes.RESPONSES.get(self.status, "").encode(),
            headers,
            body,
            None,
            started,
            time.time(),
        )


def sse_frames(timeline: list[tuple[int, bytes]], offsets: list[float], done: bool = True) -> list[tuple[float, bytes]]:
    """Pair each encoded frame with its due time: step -1 at once, step k at offsets[k]."""
    out = []
    for step, data in timeline:
        due = 0.0 if step < 0 else offsets[min(step, len(offsets) - 1)]
        out.append((due, data))
    if done:
        out.append((out[-1][0] if out else 0.0, _DONE))
    return out


class StreamServer:
    """Keeps the planned streams and plays them: onto a client's own connection (`play_to`),
    or as a loopback HTTP/1.1 server that mitmproxy fetches them from, chunk by chunk."""

    def __init__(self) -> None:
        self.plans: dict[str, StreamPlan] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.port = 0
        self.active = 0  # streams being played now
        self.observers: list[Callable[[StreamPlan], object]] = []  # called with each plan once played, e.g. by metrics
        self.played = {DIRECT: 0, LOOPBACK: 0}  # streams played each way (a fallback shows here)

    async def start(self) -> None:
        if self._server is None:
            # A burst of new streams opens as many loopback connections at once. With asyncio's
            # default backlog (100) the kernel drops the excess handshakes, and each retry costs
            # those streams a 1 s retransmission; the kernel caps this at net.core.somaxconn.
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20, backlog=4096)
            self.port = self._server.sockets[0].getsockname()[1]
            logger.debug("stream server on 127.0.0.1:%d", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def route(self, plan: StreamPlan) -> None:
        """Take `plan` to be played (the caller gives it to the request's context; the Streaming
        stage plays it)."""
        plan.id = str(next(self._ids))
        plan.routed_at = time.monotonic()
        self.plans[plan.id] = plan

    def planned(self, plan: StreamPlan | None) -> StreamPlan | None:
        """`plan` if it was routed and is not yet played."""
        return plan if plan is not None and plan.id in self.plans else None

    def to_loopback(self, request: http.Request, plan: StreamPlan) -> None:
        """Point the request at this server, which plays `plan` when mitmproxy asks for it."""
        request.scheme, request.host, request.port = "http", "127.0.0.1", self.port
        request.headers[PLAN_HEADER] = plan.id

    async def play_to(self, plan: StreamPlan, writer: asyncio.StreamWriter) -> None:
        """Play `plan` onto `writer` (the client's own connection)."""
        await self._play(self.plans.pop(plan.id), writer, DIRECT)

    def forget(self, plan: StreamPlan | None) -> None:
        """Drop a plan that will not be played (its request ended first)."""
        if plan is not None:
            plan = self.plans.pop(plan.id, None)
            if plan is not None and plan.source is not None:
                background(plan.source.aclose())  # never played: let go of the upstream

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                plan_id, length = _parse_head(head)
                if length:
                    await reader.readexactly(length)
                plan = self.plans.pop(plan_id, None) if plan_id is not None else None
                if plan is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                await self._play(plan, writer, LOOPBACK)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # mitmproxy closed the connection: the client went away or the flow ended.
        finally:
            writer.close()

    async def _play(self, plan: StreamPlan, writer: asyncio.StreamWriter, how: str) -> None:
        loop = asyncio.get_running_loop()
        if plan.source is None:  # relayed streams are not paced: not counted among those played
            self.played[how] += 1
        gate = plan.gate
        if gate is not None:
            await gate.acquire()
        self.active += 1
        try:
            if plan.source is not None:
                await _relay(plan, writer)
                return
            # Deadlines count from the request's arrival, or from when the queue let it in. The
            # time since routing (mitmproxy's hooks, or its trip to the loopback server) counts
            # too: under load a stream then starts late and catches up, instead of every deadline
            # moving back by that delay.
            if gate is None:
                routed_ago = time.monotonic() - plan.routed_at if plan.routed_at is not None else 0.0
                start = loop.time() - plan.arrived_ago - routed_ago
            else:
                start = loop.time()
            if plan.head_delay_s > 0:
                await asyncio.sleep(max(0.0, start + plan.head_delay_s - loop.time()))
                if writer.is_closing():
                    return  # the client gave up waiting
            writer.write(plan.head())
            player = _Player(plan, writer, start, loop)
            player.schedule()
            await player.ended
        finally:
            self.active -= 1
            for observe in self.observers:
                observe(plan)
            if gate is not None:
                gate.release()


class _Player:
    """Writes a plan's frames at their deadlines from timer callbacks: one timer and one write
    per frame, with no task switch (a sleeping coroutine per stream cost twice as much)."""

    def __init__(self, plan: StreamPlan, writer: asyncio.StreamWriter, start: float, loop: asyncio.AbstractEventLoop):
        self.plan, self.writer, self.start, self.loop = plan, writer, start, loop
        self.next = 0  # index of the next frame to write
        self.ended: asyncio.Future[None] = loop.create_future()

    def schedule(self) -> None:
        frames = self.plan.frames
        due = frames[self.next][0] if self.next < len(frames) else 0.0
        self.loop.call_at(self.start + due, self.step)

    def step(self) -> None:
        try:
            self._write_due()
        except Exception as e:  # a broken socket: end the stream, never the loop
            if not self.ended.done():
                self.ended.set_exception(e)

    def _write_due(self) -> None:
        plan, writer, frames = self.plan, self.writer, self.plan.frames
        if writer.is_closing():
            self.ended.set_result(None)  # the client went away: stop at once
            return
        # Everything due by now leaves in one chunk, so a late loop catches up at once.
        now = self.loop.time() - self.start
        i, batch, tokens = self.next, [], 0
        while i < len(frames) and frames[i][0] <= now:
            batch.append(frames[i][1])
            tokens += 1 if plan.token_frames is None or plan.token_frames[i] else 0
            if tokens == 1 and plan.first_frame_s is None:
                plan.first_frame_due_s = frames[i][0]
            i += 1
        data = b"".join(batch)
        if data:  # an empty frame only marks a time (where a cut stream drops); an empty chunk would end the body
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.next = plan.sent = i
        if tokens:
            _note_tokens(plan, now, tokens)
        if i < len(frames):
            self.schedule()
            return
        if plan.cut:
            # As a network fault looks: no end of body, no [DONE]. Closed, not reset: a reset
            # makes the client's kernel drop what it has received but not yet handed over, so
            # a late stream (its frames sent in one go just before) would lose them.
            writer.close()
        else:
            writer.write(b"0\r\n\r\n")
            plan.completed = True
        self.ended.set_result(None)


async def _relay(plan: StreamPlan, writer: asyncio.StreamWriter) -> None:
    """Pass a live source's chunks on as they arrive, noting each in `plan.frames`. If the
    source breaks, so does the client's stream (no end of body), as a network fault looks."""
    started = time.monotonic()
    source = plan.source
    assert source is not None
    chunks = aiter(source)
    try:
        writer.write(plan.head())
        async for data in chunks:
            if writer.is_closing():
                return  # the client went away
            if not data:
                continue  # an empty chunk would end the body
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            plan.frames.append((time.monotonic() - started, data if plan.keep_body else b""))
            plan.sent = len(plan.frames)
            await writer.drain()  # a slow client slows the relay instead of filling memory
        writer.write(b"0\r\n\r\n")
        plan.completed = True
    except ConnectionError:
        pass  # the client went away
    except Exception:
        writer.transport.abort()  # the source broke (its reader logs why)
    finally:
        if hasattr(chunks, "aclose"):
            await chunks.aclose()  # a generator left mid-way (the client went away) ends now
        await source.aclose()


# Events (Responses API, streamed transcriptions) that carry generated text or tool-call arguments.
TOKEN_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.refusal.delta",
        "transcript.text.delta",
    }
)


def event_frame(event: dict[str, Any]) -> bytes:
    """A Responses API event as Azure frames it: an `event:` line naming its type, then its data."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def carries_tokens(event: dict[str, Any]) -> bool:
    """Whether an SSE event (parsed JSON) carries generated text or tool-call arguments: what
    load tools time as tokens."""
    if not isinstance(event, dict):
        return False
    kind = event.get("type")
    if kind is not None:
        return kind in TOKEN_EVENTS and bool(event.get("delta"))
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False


def _note_tokens(plan: StreamPlan, now: float, tokens: int) -> None:
    """Record when token frames actually left; frames that left together had no gap."""
    if plan.first_frame_s is None:
        plan.first_frame_s = now
        tokens -= 1
    elif tokens > 0:
        plan.gaps.append(now - plan.last_token_s)
        tokens -= 1
    plan.gaps.extend([0.0] * tokens)
    plan.last_token_s = now


def _parse_head(head: bytes) -> tuple[str | None, int]:
    plan_id, length = None, 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == PLAN_HEADER.encode():
            plan_id = value.strip().decode()
        elif name == b"content-length":
            length = int(value.strip() or 0)
    return plan_id, length
