"""Every use of mitmproxy internals, in one place: what the simulator needs beyond
mitmproxy's addon API, and a check that the installed mitmproxy still offers it.

* The client's socket as mitmproxy holds it (`proxyserver.connections[id].transports`): the
  streaming stage writes paced frames straight onto it (and silences mitmproxy's second copy
  of the response), and latency deadlines count from when the request reached the machine.
* mitmweb's flow store (`view._store`), in arrival order, for trimming the oldest flows.
* The text of mitmproxy's "listening" log line, hidden while the default listener is
  replaced.
* The protocol (ALPN) a TLS client is answered with: mitmproxy's TLS addon answers with the
  client connection's `alpn` when it is set before the handshake (as mitmproxy does to keep
  its regular proxy's clients on HTTP/1.1); the settings stage sets it to prefer HTTP/2.
* The client's side of each connection as mitmproxy reads it (intake stage): the reader it
  loops on, replaced by a `ClientGuard` that bounds the request head's size and time and the
  body's time; the HTTP/1 parser's state, buffer and body reader (a request refused from its
  head is ended there, so its body is never read); the HTTP stream's body buffer (capped, or
  dropping what comes); and a way to hand the parser an empty read, so that it acts at once.

If mitmproxy moves any of these, streams silently fall back to the slower loopback path,
flows are no longer trimmed, clients get HTTP/2 only when they list it first, and a request refused from its head has its body read (up to
mitmproxy's `body_size_limit`) before the answer: `missing()` says what is gone, a start-up
warning repeats it, and a contract test fails.

Arrival: mitmproxy stamps a request (`timestamp_start`) when its event loop parses it; under
a burst that is up to ~0.25 ms per request behind, because each request's intake waits for
the ones before it. The kernel knows better: Linux's TCP_INFO says how long ago the
connection last received data, i.e. the request's last byte, at a resolution of a few ms.
That time is used when it is earlier than mitmproxy's stamp.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Protocol, Self, cast

import h11
from mitmproxy import connection, ctx, flow, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.addons.view import View
from mitmproxy.net.http.http1 import assemble_response
from mitmproxy.proxy import events as proxy_events
from mitmproxy.proxy.layers import tls
from mitmproxy.proxy.layers.http import HttpLayer, HttpStream
from mitmproxy.proxy.layers.http._http1 import Http1Connection, Http1Server
from mitmproxy.proxy.server import ConnectionHandler, ConnectionIO
from mitmproxy.proxy.utils import ReceiveBuffer

from . import intake

logger = logging.getLogger(__name__)

_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if hasattr(socket, "IPPROTO_TCP") else None
_LAST_DATA_RECV = 52  # offset of tcpi_last_data_recv (ms, u32) in Linux's struct tcp_info
_TCP_INFO_SIZE = 104
_PLAUSIBLE_S = 5.0  # a kernel time further before mitmproxy's stamp than this is not trusted


def client_io(flow: http.HTTPFlow) -> ConnectionIO | None:
    """mitmproxy's record of the client's connection (its reader and writer), or None outside
    a running proxy or for connections that are not plain TCP sockets."""
    found = _handler_and_io(flow.client_conn)
    io = found[1] if found is not None else None
    return io if isinstance(getattr(io, "writer", None), asyncio.StreamWriter) else None


def _handler_and_io(client: connection.Client) -> tuple[ConnectionHandler, ConnectionIO] | None:
    """mitmproxy's handler of a plain TCP client connection and its reader and writer, or None."""
    if client.transport_protocol != "tcp":
        return None
    try:
        proxyserver: Proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections[client.id]
        return handler, handler.transports[handler.client]
    except (AttributeError, KeyError):
        return None


def received_at(flow: http.HTTPFlow) -> float | None:
    """When (time.time()) the kernel last received data on the client's connection, or None
    where that cannot be known (not Linux, no socket, an implausible answer)."""
    if _TCP_INFO is None:
        return None
    io = client_io(flow)
    writer = io.writer if io is not None else None
    sock = writer.get_extra_info("socket") if isinstance(writer, asyncio.StreamWriter) else None
    if sock is None:
        return None
    return kernel_received_at(sock, flow.request.timestamp_start)


def kernel_received_at(sock: socket.socket, stamped: float | None) -> float | None:
    if _TCP_INFO is None:  # not Linux: the kernel does not say
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
        ago_ms: int = struct.unpack_from("=I", info, _LAST_DATA_RECV)[0]
    except (OSError, struct.error):
        return None
    at = time.time() - ago_ms / 1000
    if not stamped:
        return at
    if at < stamped - _PLAUSIBLE_S:
        return None
    # Later than mitmproxy's stamp when more bytes came after the request's head (a long body,
    # another HTTP/2 stream): the head's arrival is then the better answer.
    return min(at, stamped)


class Silenced:
    """A client connection's writer that drops what mitmproxy writes: its second copy of a
    response the client already has. (mitmproxy writes only when `is_closing()` is false.)"""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # the rest is the StreamWriter's, whatever its type
        return getattr(self.writer, name)


def stored_flows(view: View) -> list[flow.Flow]:
    """mitmweb's flows in arrival order (the view itself may be sorted otherwise)."""
    return list(view._store.values())


# ---- The client's side of a connection, read within bounds (intake stage) ----------------

# What a client connection is doing, as its reader sees it (ints: compared on every read).
HANDSHAKE, HEAD, BODY, WAITING, OTHER = range(5)  # HANDSHAKE: before the HTTP layer exists (TLS, first bytes)
_H1_PHASES: dict[Any, int] = {
    Http1Server.read_headers: HEAD,
    Http1Connection.read_body: BODY,
    Http1Connection.wait: WAITING,
}

# After an early answer the client may still be sending its body: it is read and dropped for
# this long (or this much) before the socket closes, so the close does not reset the
# connection under the answer (a close with unread data sends a TCP reset).
LINGER_SECONDS = 5.0
LINGER_BYTES = 256 * 1024 * 1024
# An answer set while the client still sends its body leaves within this long, or the
# connection is dropped (TLS: the answer needs one more record from the client to leave).
ANSWER_GRACE_SECONDS = 2.0
_LINGERING: set[asyncio.Future[Any]] = set()


class GuardLimits:
    """The bounds every client connection is read within (shared: a change applies to all)."""

    __slots__ = ("body_timeout", "header_timeout", "max_head")

    def __init__(self, max_head: int = 64 * 1024, header_timeout: float = 30.0, body_timeout: float = 120.0):
        self.max_head, self.header_timeout, self.body_timeout = max_head, header_timeout, body_timeout


class ClientGuard:
    """One client connection's reader, as mitmproxy loops on it: it sees each read before
    mitmproxy parses it, so the request head is bounded in size (reads past the bound are not
    made: a 431) and, with the body, in time (`deadline`, which the intake stage's sweep holds
    it to: 408). A request answered from its head is ended at the HTTP/1 parser; what the
    client still sends is then read and dropped. HTTP/2 streams are bounded per stream by the
    intake stage's hooks (`stream_due`) and by their body buffers.

    Idle keep-alive connections have no deadline: the head's clock starts with its first byte."""

    __slots__ = (
        "client",
        "conn",
        "deadline",
        "discard_until",
        "discarded",
        "discarding",
        "ending",
        "h1",
        "handler",
        "http_layer",
        "io",
        "limits",
        "phase",
        "plain",
        "read_before",
        "reader",
        "seen",
        "streams_due",
        "tls_first",
    )

    def __init__(self, handler: ConnectionHandler, io: ConnectionIO, limits: GuardLimits) -> None:
        # guard_client guards a connection only while its reader is asyncio's.
        self.reader = cast(asyncio.StreamReader, io.reader)
        self.handler, self.io, self.client, self.limits = handler, io, handler.client, limits
        # mitmproxy's parser of this client's requests and its HTTP layer, once they exist (the
        # parser is typed loosely: its classes are private to mitmproxy, and the attributes read
        # are checked by `missing()`).
        self.conn: Any = None
        self.http_layer: HttpLayer | None = None
        self.h1 = False
        self.plain = False  # HTTP/1 without TLS: answers can be written straight onto the socket
        self.seen: object = None  # the parser state last seen (mitmproxy assigns a new bound method per change)
        self.phase = HANDSHAKE
        self.deadline: float | None = None  # time.monotonic() by which the phase must be over
        self.ending = False  # an answer was set before the body ended; it leaves, then the connection closes
        self.discarding = False  # what the client sends now is dropped, never handed to mitmproxy
        self.discard_until: float | None = None
        self.discarded = 0
        self.streams_due: dict[str, tuple[float, http.HTTPFlow]] | None = None  # HTTP/2: flow id -> (due, flow)
        self.read_before = 0  # bytes read before the HTTP layer existed
        self.tls_first = False

    # -- what mitmproxy calls ------------------------------------------------------------

    async def read(self, n: int) -> bytes:
        conn = self.conn
        if conn is None:
            conn = self._find()
            if conn is None:
                # mitmproxy picks the connection's layers in a hook, after its first bytes: until
                # they exist, what is read (a TLS handshake, the first head) stays within the bound.
                room = self._budget() - self.read_before
                if room > 0:
                    n = min(n, room)
                else:
                    conn = await self._until_found()
        if self.h1:
            if conn.state is not self.seen:
                self._entered(conn.state)
            if self.phase == WAITING and len(conn.buf) > self.limits.max_head:
                await self._until_answered()  # a client sending far ahead of its answer waits for it
                if conn.state is not self.seen:
                    self._entered(conn.state)
            buffered = len(conn.buf)
            if self.phase == HEAD:
                if buffered > self.limits.max_head:
                    logger.debug(
                        "431 to %s: the request head passed %d bytes", _peer(self.client), self.limits.max_head
                    )
                    self.answer_and_close(intake.head_too_large(self.limits.max_head))
                # Never read past the bound: the head it holds stays within it.
                n = max(1, min(n, self.limits.max_head + 1 - buffered))
        try:
            if self.discarding:
                return await self._discard()
            data = await self.reader.read(n)
        except asyncio.CancelledError:
            # mitmproxy closes the connection (after an early answer: close gently, see Lingering).
            if self.ending or self.discarding:
                self.linger_on_close()
            raise
        if data:
            if self.conn is None:
                if not self.read_before and data[0] == 0x16:  # a TLS record: the handshake comes first
                    self.tls_first = True
                self.read_before += len(data)
            if self.deadline is None and self.phase <= HEAD:
                self.deadline = time.monotonic() + self.limits.header_timeout
            if self.discarding:  # the request was answered while this read waited
                return await self._discard()
        return data

    def __getattr__(self, name: str) -> Any:  # the rest is the StreamReader's, whatever its type
        return getattr(self.reader, name)

    # -- what the intake stage calls -----------------------------------------------------

    def expire(self, now: float) -> None:
        """The deadline has passed (the stage's sweep): answer and close, or just close."""
        conn = self.conn or self._find()
        if self.streams_due is not None:
            for flow_id, (due, flow) in list(self.streams_due.items()):
                if not flow.live:  # ended without its request hook (never expected): forgotten
                    del self.streams_due[flow_id]
                elif due <= now:
                    # One stream cannot be reset from here: the connection, all its streams, closes.
                    logger.info("closing %s: a request body did not arrive in time", _peer(self.client))
                    self.abort()
                    return
            self.deadline = min((due for due, _ in self.streams_due.values()), default=None)
            return
        if self.h1 and conn.state is not self.seen:
            self._entered(conn.state)  # it moved on while its reads were held up: judged afresh
            if self.deadline is None or self.deadline > now:
                return
        if self.ending or not self.h1:
            # The answer could not leave in its grace time; or the handshake was too slow.
            logger.info(
                "closing %s: %s",
                _peer(self.client),
                "its answer could not leave" if self.ending else "its request did not begin in time",
            )
            self.abort()
        elif self.phase == HEAD:
            logger.debug(
                "408 to %s: the request head took longer than %g s", _peer(self.client), self.limits.header_timeout
            )
            self.answer_and_close(intake.too_slow("headers", self.limits.header_timeout))
        elif self.phase == BODY:
            logger.debug(
                "408 to %s: the request body took longer than %g s", _peer(self.client), self.limits.body_timeout
            )
            current = self.current_flow()
            if current is None:
                self.abort()
            else:
                response = intake.too_slow("body", self.limits.body_timeout)
                if current.response is not None:
                    response = current.response  # an answer was already due; it leaves now
                self.end_body(current, response)
        else:
            self.deadline = None

    def end_body(self, flow: http.HTTPFlow, response: http.Response, in_hook: bool = False) -> Awaitable[None] | None:
        """Answer `flow` before its body has arrived, without reading the rest of it. HTTP/1: the
        request ends at the parser, the answer says connection: close, and what the client
        still sends is dropped. HTTP/2: the rest of the stream's body is dropped as it comes and
        the answer leaves when the stream ends. `in_hook`: called from the requestheaders hook,
        which mitmproxy runs before its parser has finished with the head; returns an
        awaitable then."""
        if self.conn is None:
            self._find()
        flow.response = response
        if not self.h1:
            stream = self._stream_of(flow)
            if stream is not None and not isinstance(stream.request_body_buf, CappedBody):
                stream.request_body_buf = CappedBody(0)
            return None
        response.headers["connection"] = "close"
        self.ending = True
        self.deadline = time.monotonic() + ANSWER_GRACE_SECONDS
        if self.plain:
            self.discarding = True
            flow.request.headers.pop("expect", None)  # no "100 Continue": the answer comes instead
        # (TLS: the parser ends the body at the next record; a client waiting for "100
        # Continue" gets it, and sends.)
        if in_hook:
            return self._end_after_head()
        self._end_at_parser()
        return None

    def cap_body(self, flow: http.HTTPFlow, limit: int, over: Callable[[int], object]) -> None:
        """Keep at most `limit` bytes of the flow's body (one whose length the head does not
        say); past it, `over(bytes_read)` is called once and the rest is dropped."""
        stream = self._stream_of(flow)
        if stream is not None:
            stream.request_body_buf = CappedBody(limit, over)

    def stream_due(self, flow: http.HTTPFlow, at: float | None) -> None:
        """HTTP/2: the flow's body must be in by `at` (None: it is)."""
        if at is None:
            if self.streams_due is not None:
                self.streams_due.pop(flow.id, None)
                if not self.streams_due:
                    self.streams_due = None
                    self.deadline = None
            return
        if self.streams_due is None:
            self.streams_due = {}
        self.streams_due[flow.id] = (at, flow)
        if self.deadline is None or at < self.deadline:
            self.deadline = at

    def linger_on_close(self) -> None:
        """The answer to a request ended early has left: the close waits for the client."""
        writer = self._writer()
        if not isinstance(writer, Lingering):
            self._set_writer(Lingering(writer, self))

    def answer_and_close(self, response: http.Response) -> None:
        """Write `response` straight onto the socket (plain HTTP/1 only; else just close) and
        close once the client has had time to read it. mitmproxy writes nothing more."""
        if self.conn is None:
            self._find()
        if not self.plain:
            self.abort()
            return
        if self.h1:
            self.conn.buf.maybe_extract_at_most(len(self.conn.buf))  # nothing of it is kept (or logged)
        response.headers["connection"] = "close"
        transport = self._writer().transport
        if not transport.is_closing():
            transport.write(assemble_response(response))
            if transport.can_write_eof():
                transport.write_eof()
        writer = self._writer()
        lingering = writer if isinstance(writer, Lingering) else Lingering(writer, self)
        self._set_writer(lingering)
        lingering.silent = True
        self.deadline = None
        self.discarding = True

    def abort(self) -> None:
        self.deadline = None
        self.discarding = False
        transport = self._writer().transport
        if not transport.is_closing():
            transport.abort()

    def current_flow(self) -> http.HTTPFlow | None:
        """HTTP/1: the flow of the request being read."""
        if self.conn is None:
            self._find()
        stream = self.http_layer.streams.get(self.conn.stream_id) if self.h1 and self.http_layer is not None else None
        return getattr(stream, "flow", None)

    # -- inside -----------------------------------------------------------------------------

    def _budget(self) -> int:
        """Bytes read before the HTTP layer exists: the first head, or a TLS handshake (which
        may be larger than a small head bound, so it has at least 64 KiB)."""
        bound = self.limits.max_head + 1
        return max(bound, 64 * 1024) if self.tls_first else bound

    def _writer(self) -> asyncio.StreamWriter:
        # asyncio's, or a stand-in for it (Lingering, Silenced) that passes on what it does not
        # change: guard_client guards a connection only while its writer is asyncio's.
        return cast(asyncio.StreamWriter, self.io.writer)

    def _set_writer(self, writer: Lingering) -> None:
        # mitmproxy's ConnectionIO admits only its own writers; a Lingering stands in for one.
        self.io.writer = cast(asyncio.StreamWriter, writer)

    async def _until_found(self) -> Any:  # mitmproxy's parser of the client's requests (private: see `conn`)
        while (conn := self._find()) is None and not self._writer().transport.is_closing():  # noqa: ASYNC110 (no event tells when it is found)
            await asyncio.sleep(0.005)
        return conn

    def _find(self) -> Any:  # mitmproxy's parser of the client's requests (private: see `conn`), or None
        for layer in reversed(self.handler.layer.context.layers):
            if isinstance(layer, HttpLayer):
                conn = layer.connections.get(self.client)
                if conn is None:
                    return None
                self.conn, self.http_layer = conn, layer
                self.h1 = isinstance(conn, Http1Server)
                self.plain = self.h1 and not self.client.tls
                if not self.h1:  # HTTP/2: its streams' bodies have deadlines, the connection none
                    self.phase = OTHER
                    self.deadline = min((due for due, _ in (self.streams_due or {}).values()), default=None)
                return conn
        return None

    def _entered(self, state: object) -> None:
        """The parser moved to another state: the deadline that goes with it."""
        self.seen = state
        phase = _H1_PHASES.get(getattr(state, "__func__", None), OTHER)
        if self.ending:
            if phase != BODY:
                self.deadline = None  # the body was ended: the answer leaves at once
        elif phase == BODY:
            self.deadline = time.monotonic() + self.limits.body_timeout
        elif phase != HEAD or self.phase != HANDSHAKE or self.conn.stream_id != 1:
            self.deadline = None  # (the first head, begun before the parser existed, keeps its clock)
        self.phase = phase

    async def _end_after_head(self) -> None:
        # mitmproxy runs hooks eagerly, inside the step that parsed the head: the parser sets its
        # body reader once this hook yields, so the reader is replaced after that.
        await asyncio.sleep(0)
        self._end_at_parser()

    def _end_at_parser(self) -> None:
        conn = self.conn
        if getattr(conn.state, "__func__", None) is not Http1Connection.read_body:
            return  # the body is complete already: the answer leaves as any other
        conn.body_reader = _BodyEnded(self)
        if self.plain:  # hand the parser an empty read, so it ends the body now
            _keep(asyncio.ensure_future(self.handler.server_event(proxy_events.DataReceived(self.client, b""))))

    async def _until_answered(self) -> None:
        conn, state = self.conn, self.conn.state
        while conn.state is state and not self._writer().transport.is_closing():  # noqa: ASYNC110 (no event tells when the state moves)
            await asyncio.sleep(0.02)

    async def _discard(self) -> bytes:
        """Read and drop what the client sends, for mitmproxy: b"" (the end) once the client
        closes or the linger time is over."""
        now = time.monotonic()
        if self.discard_until is None:
            self.discard_until = now + LINGER_SECONDS
        while (remaining := self.discard_until - now) > 0 and self.discarded <= LINGER_BYTES:
            try:
                async with asyncio.timeout(remaining):
                    data = await self.reader.read(65536)
            except TimeoutError:
                break
            except OSError:
                return b""
            if not data:
                if self.ending:
                    await asyncio.sleep(remaining)  # the answer is still to leave; mitmproxy closes after it
                break
            self.discarded += len(data)
            now = time.monotonic()
        return b""

    async def _linger(self, writer: asyncio.StreamWriter) -> None:
        """The socket closes once the client has stopped sending, or the linger time is over."""
        try:
            now = time.monotonic()
            if self.discard_until is None:
                self.discard_until = now + LINGER_SECONDS
            while (remaining := self.discard_until - now) > 0 and self.discarded <= LINGER_BYTES:
                async with asyncio.timeout(remaining):
                    data = await self.reader.read(65536)
                if not data:
                    break
                self.discarded += len(data)
                now = time.monotonic()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    def _stream_of(self, flow: http.HTTPFlow) -> HttpStream | None:
        if self.conn is None:
            self._find()
        if self.http_layer is None:
            return None
        for stream in self.http_layer.streams.values():
            if getattr(stream, "flow", None) is flow:
                return stream
        return None


class _ParserBuffer(Protocol):
    """What is used of the HTTP/1 parser's buffer (h11's, whose class h11 keeps private)."""

    def __len__(self) -> int: ...

    def maybe_extract_at_most(self, count: int) -> bytearray | None: ...


class _BodyEnded:
    """An HTTP/1 body reader that ends the body at once, dropping what the parser holds of it."""

    def __init__(self, guard: ClientGuard):
        self.guard = guard

    def __call__(self, buf: _ParserBuffer) -> h11.EndOfMessage:
        buf.maybe_extract_at_most(len(buf))
        self.guard.discarding = True
        return h11.EndOfMessage()

    def read_eof(self) -> h11.EndOfMessage:
        return h11.EndOfMessage()


class CappedBody(ReceiveBuffer):
    """A request body buffer that keeps at most `limit` bytes: past it, what it held is let go,
    `over(bytes_read)` is called once, and the rest is counted and dropped."""

    def __init__(self, limit: int, over: Callable[[int], object] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # mitmproxy leaves ReceiveBuffer unannotated
        self.limit, self.over, self.exceeded, self.read = limit, over, limit == 0, 0

    def __iadd__(self, other: bytes) -> Self:
        self.read += len(other)
        if self.exceeded:
            return self
        if self.read > self.limit:
            self.exceeded = True
            self.clear()  # type: ignore[no-untyped-call]  # (as above)
            if self.over is not None:
                self.over(self.read)
            return self
        super().__iadd__(other)
        return self


class Lingering:
    """A client connection's writer whose close waits until the client stops sending (see
    LINGER_SECONDS); `silent`: what mitmproxy writes is dropped (the answer is on the wire)."""

    def __init__(self, writer: asyncio.StreamWriter, guard: ClientGuard, silent: bool = False) -> None:
        self.writer, self.guard, self.silent = writer, guard, silent

    def write(self, data: bytes) -> None:
        if not self.silent:
            self.writer.write(data)

    def close(self) -> None:
        transport = self.writer.transport
        if transport.is_closing():
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()  # the answer is complete: the client sees the end of it
        except OSError:
            transport.abort()
            return
        _keep(asyncio.ensure_future(self.guard._linger(self.writer)))

    def __getattr__(self, name: str) -> Any:  # the rest is the StreamWriter's, whatever its type
        return getattr(self.writer, name)


def _keep(task: asyncio.Future[Any]) -> None:
    _LINGERING.add(task)
    task.add_done_callback(_LINGERING.discard)


def _peer(client: connection.Client) -> str:
    peer = client.peername
    return f"{peer[0]}:{peer[1]}" if peer else "a client"


def guard_client(client: connection.Client, limits: GuardLimits) -> ClientGuard | None:
    """Read this client's connection through a `ClientGuard` (from the client_connected hook,
    before mitmproxy starts reading it); None where that cannot be done."""
    found = _handler_and_io(client)
    if found is None:
        return None
    handler, io = found
    if not isinstance(io.reader, asyncio.StreamReader):
        return None
    guard = ClientGuard(handler, io, limits)
    io.reader = cast(asyncio.StreamReader, guard)  # a stand-in: it reads through asyncio's
    return guard


H2 = b"h2"


def prefer_http2(hello: tls.ClientHelloData) -> bool:
    """Answer this TLS client with HTTP/2 when it offers it, whatever its order of preference
    (from the tls_clienthello hook, before mitmproxy picks the protocol). True when chosen."""
    if H2 not in hello.client_hello.alpn_protocols:
        return False
    hello.context.client.alpn = H2
    return True


LISTENING_LOG_TEXT = "HTTP(S) proxy"  # in mitmproxy's "HTTP(S) proxy listening at …" line
LISTENER_LOGGERS = ("mitmproxy.addons.proxyserver", "mitmproxy.proxy.mode_servers")


def hide_listening_line(record: logging.LogRecord) -> bool:
    return LISTENING_LOG_TEXT not in record.getMessage()


CERTS_LOGGER = "mitmproxy.certs"  # warns that a served certificate is a CA each time it loads `certs`


class HideNotALeafWarning(logging.Filter):
    """Drops mitmproxy's "is a certificate authority and not a leaf certificate" warning for
    one file: it judges by the CA flag alone (which `openssl req -x509` sets on a certificate
    made to serve) and repeats it at every load of the `certs` option (twice at start-up)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.text = f'"{os.path.abspath(path)}" is a certificate authority'

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _source(thing: ModuleType | type[object] | Callable[..., object]) -> str:
    try:
        return inspect.getsource(thing)
    except (OSError, TypeError):
        return ""


def deferred_text(loader: Any, name: str) -> str | None:
    """The text `--set name=text` gave for an option not yet declared when the command line was
    read (mitmproxy keeps it unparsed in `OptManager.deferred`); None when there is none."""
    deferred = getattr(getattr(getattr(loader, "master", None), "options", None), "deferred", None)
    if not deferred or name not in deferred:
        return None
    texts = getattr(deferred[name], "val", None)  # an _UnconvertedStrings: the texts, unparsed
    return texts[0] if isinstance(texts, list) and len(texts) == 1 and isinstance(texts[0], str) else None


def set_deferred(loader: Any, name: str, value: Any) -> None:
    """Put the parsed value in place of the deferred text (mitmproxy sets it once the option is
    declared); None drops it."""
    deferred = loader.master.options.deferred
    if value is None:
        deferred.pop(name, None)
    else:
        deferred[name] = value


def missing() -> list[str]:
    """What this module uses that the installed mitmproxy no longer offers (empty: all there)."""
    import dataclasses

    from mitmproxy import optmanager
    from mitmproxy.addons import tlsconfig, view
    from mitmproxy.proxy import mode_servers, server

    checks = [
        ("writer" in {f.name for f in dataclasses.fields(server.ConnectionIO)}, "ConnectionIO.writer"),
        (
            "writer.is_closing()" in _source(server.ConnectionHandler),
            "ConnectionHandler writes only while writer.is_closing() is false (silencing a second response)",
        ),
        ("self._store" in _source(view.View.__init__), "View._store (flows in arrival order)"),
        ("listening at" in _source(mode_servers), "the 'HTTP(S) proxy listening at' log line"),
        (
            "self.deferred" in _source(optmanager.OptManager.__init__) and "value.val" in _source(optmanager),
            "OptManager.deferred holding --set texts as _UnconvertedStrings.val (float options)",
        ),
        (
            "client_alpn = client.alpn" in _source(tlsconfig.TlsConfig.tls_start_client)
            and "return client_alpn" in _source(tlsconfig.alpn_select_callback),
            "TlsConfig answering a TLS client with Client.alpn when set before the handshake (HTTP/2 preferred)",
        ),
    ]
    gone = _connections_missing() + [what for present, what in checks if not present] + missing_for_guard()
    return list(dict.fromkeys(gone))


def _connections_missing() -> list[str]:
    from mitmproxy.addons import proxyserver
    from mitmproxy.proxy import server

    checks = [
        (
            "self.connections" in _source(proxyserver.Proxyserver.__init__),
            "Proxyserver.connections (client handlers by connection id)",
        ),
        ("self.transports" in _source(server.ConnectionHandler.__init__), "ConnectionHandler.transports"),
        ("self.client" in _source(server.ConnectionHandler.__init__), "ConnectionHandler.client"),
    ]
    return [what for present, what in checks if not present]


def missing_for_guard() -> list[str]:
    """What the intake guard (`ClientGuard`) uses that the installed mitmproxy lacks."""
    from mitmproxy.proxy import context, server
    from mitmproxy.proxy.layers import http as http_layers

    checks = [
        (
            "reader = self.transports[connection].reader" in _source(server.ConnectionHandler.handle_connection),
            "ConnectionHandler reads a client through transports[client].reader (the intake guard)",
        ),
        (
            "self.buf" in _source(Http1Connection.__init__)
            and "self.body_reader(self.buf)" in _source(Http1Connection),
            "Http1Connection.buf and .body_reader (heads bounded, bodies ended early)",
        ),
        ("self.stream_id += 2" in _source(Http1Connection), "Http1Server.stream_id (the request being read)"),
        (
            "self.connections" in _source(HttpLayer.__init__) and "self.streams" in _source(HttpLayer.__init__),
            "HttpLayer.connections and .streams",
        ),
        (
            "self.request_body_buf += event.data" in _source(http_layers.HttpStream.state_consume_request_body),
            "HttpStream.request_body_buf (request bodies capped)",
        ),
        ("layers" in _source(context.Context.__init__), "Context.layers (a connection's layers)"),
        ("self._len" in _source(ReceiveBuffer), "ReceiveBuffer._len"),
        ("async def server_event" in _source(server.ConnectionHandler), "ConnectionHandler.server_event"),
    ]
    return _connections_missing() + [what for present, what in checks if not present]
