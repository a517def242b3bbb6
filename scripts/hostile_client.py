"""What the hostile suite measures with and sends through: a monitor process that samples a
simulator's memory and event-loop lag, and a raw HTTP/1.1 client for what ordinary clients
refuse to send (bytes that are not UTF-8, heads of a megabyte, bodies trickled or streamed
without end).

The monitor is a process of its own, so the suite's own work (compressing, encoding,
sending) never delays a health probe on this side and shows up as lag that is not there.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

INTERVAL_S = 0.02  # between health probes, and between memory samples
PROBE_TIMEOUT_S = 300.0
HEALTH = b"GET /++/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
KiB, MiB = 1024, 1024 * 1024


# --- memory and lag -------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process now (VmRSS, KiB); None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _read_answer(sock: socket.socket) -> None:
    """Read one HTTP answer with a content-length (the health endpoint's) off a socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk


class _Sampling:
    """One measured stretch: a thread probing /++/health every INTERVAL_S on a kept
    connection, and one reading the processes' resident memory as often."""

    def __init__(self, port: int, pids: list[int]):
        self.port, self.pids = port, pids
        self.stop = threading.Event()
        self.probes: list[tuple[float, float, bool]] = []  # (sent at, seconds to the answer, answered)
        self.rss: list[tuple[float, int, int | None]] = []  # (at, pid, KiB)
        self.in_flight: float | None = None  # when the probe waiting now was sent
        self.threads = [
            threading.Thread(target=self._probe, daemon=True),
            threading.Thread(target=self._memory, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _probe(self) -> None:
        sock: socket.socket | None = None
        due = time.monotonic()
        while not self.stop.is_set():
            sent = time.monotonic()
            self.in_flight = sent
            answered = True
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=PROBE_TIMEOUT_S)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(HEALTH)
                _read_answer(sock)
            except (OSError, ValueError):
                answered = False
                if sock is not None:
                    sock.close()
                sock = None
            self.in_flight = None
            if not self.stop.is_set() or answered:
                self.probes.append((sent, time.monotonic() - sent, answered))
            due = max(due + INTERVAL_S, time.monotonic() - INTERVAL_S)
            self.stop.wait(max(0.0, due - time.monotonic()))
        if sock is not None:
            sock.close()

    def _memory(self) -> None:
        while True:
            now = time.monotonic()
            for pid in self.pids:
                self.rss.append((now, pid, rss_kib(pid)))
            if self.stop.wait(INTERVAL_S):
                return

    def finish(self) -> dict:
        self.stop.set()
        self.threads[1].join()
        self.threads[0].join(timeout=0.2)
        probes = list(self.probes)
        waiting = self.in_flight
        if waiting is not None:  # a probe the simulator has not answered yet: it counts as long as it waited
            probes.append((waiting, time.monotonic() - waiting, False))
        return {"probes": probes, "rss": list(self.rss)}


def _monitor_main(conn) -> None:
    sampling: _Sampling | None = None
    while True:
        command = conn.recv()
        if command[0] == "start":
            sampling = _Sampling(command[1], command[2])
            conn.send("started")
        elif command[0] == "stop":
            conn.send(sampling.finish() if sampling is not None else {"probes": [], "rss": []})
            sampling = None
        else:
            return


class Monitor:
    """The sampling process: start(port, pids) … stop() -> Samples."""

    def __init__(self):
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_monitor_main, args=(child,), daemon=True)
        self.process.start()

    def start(self, port: int, pids: list[int]) -> None:
        self.conn.send(("start", port, pids))
        self.conn.recv()

    def stop(self) -> Samples:
        self.conn.send(("stop",))
        raw = self.conn.recv()
        return Samples(raw["probes"], raw["rss"])

    def close(self) -> None:
        try:
            self.conn.send(("quit",))
        except OSError:
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()


@dataclass
class Samples:
    probes: list[tuple[float, float, bool]]
    rss: list[tuple[float, int, int | None]]

    def lags(self, start: float = float("-inf"), end: float = float("inf")) -> list[float]:
        """Probe latencies (s) of probes sent in [start, end], with the probes a stall kept
        from being sent counted as they would have waited (coordinated omission: a probe that
        waited 2 s stands for the hundred that would have been sent meanwhile)."""
        values: list[float] = []
        for sent, latency, _ in self.probes:
            if start <= sent <= end:
                values.append(latency)
                extra = latency - INTERVAL_S
                while extra > 0 and len(values) < 200_000:
                    values.append(extra)
                    extra -= INTERVAL_S
        return values

    def lag_figures(self) -> tuple[float, float, float]:
        """p50, p99, max of the probe latency, in ms."""
        values = sorted(self.lags())
        if not values:
            return (0.0, 0.0, 0.0)

        def at(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))] * 1000

        return at(0.5), at(0.99), values[-1] * 1000

    def unanswered(self) -> int:
        return sum(1 for _, _, answered in self.probes if not answered)

    def rss_growth_mib(self, start: float = float("-inf"), end: float = float("inf")) -> float:
        """The largest rise of any process's resident memory over its first sample."""
        first: dict[int, int] = {}
        growth = 0.0
        for at, pid, kib in self.rss:
            if kib is None or at > end:
                continue
            base = first.setdefault(pid, kib)
            if at >= start:
                growth = max(growth, (kib - base) / 1024)
        return growth

    def rss_end_mib(self) -> float:
        """How much above its first sample each process ended (memory kept), the largest."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for _, pid, kib in self.rss:
            if kib is not None:
                first.setdefault(pid, kib)
                last[pid] = kib
        return max(((last[p] - first[p]) / 1024 for p in last), default=0.0)


# --- a raw HTTP/1.1 client --------------------------------------------------------------------


@dataclass
class Answer:
    outcome: str  # the status as text ("200"), or "closed" (no answer), "timeout", "refused"
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # its first `keep` bytes
    size: int = 0  # body bytes received
    seconds: float = 0.0
    sent: int = 0  # request bytes written


async def _read_answer_async(reader: asyncio.StreamReader, keep: int) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    answer = Answer(str(status), status, headers)
    body = bytearray()

    def take(data: bytes) -> None:
        answer.size += len(data)
        if len(body) < keep:
            body.extend(data[: keep - len(body)])

    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            left = size
            while left:
                data = await reader.read(min(left, 1 << 20))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                take(data)
                left -= len(data)
            await reader.readexactly(2)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = await reader.read(min(left, 1 << 20))
            if not data:
                break
            take(data)
            left -= len(data)
    elif status not in (204, 304) and not 100 <= status < 200:
        while data := await reader.read(1 << 20):
            take(data)
    answer.body = bytes(body)
    return answer


Body = bytes | Iterable[bytes] | AsyncIterator[bytes] | None


async def exchange(
    port: int, head: bytes, body: Body = None, *, timeout: float = 30.0, keep: int = 64 * KiB, half_close: bool = False
) -> Answer:
    """Send one request (its head as given, then the body: bytes, or chunks written as the
    connection takes them) on a new connection and read the answer. The answer may come
    before the body is all sent (a refusal): sending stops there. With `half_close`, the
    sending side is shut once all is sent (a client that promised more and stopped). Never
    raises for what the server does: a connection closed without an answer is outcome "closed"."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=2 * MiB), timeout)
    except (TimeoutError, OSError):
        return Answer("refused", seconds=time.monotonic() - started)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(head)
        sent += len(head)
        await writer.drain()
        if body is None:
            return
        if isinstance(body, bytes):
            chunks: Iterable[bytes] | AsyncIterator[bytes] = (body,)
        else:
            chunks = body
        if hasattr(chunks, "__aiter__"):
            async for chunk in chunks:  # type: ignore[union-attr]
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        else:
            for chunk in chunks:  # type: ignore[union-attr]
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(timeout):
            try:
                answer = await _read_answer_async(reader, keep)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError, IndexError):
                answer = Answer("closed")
    except TimeoutError:
        answer = Answer("timeout")
    finally:
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        writer.transport.abort()
    answer.seconds = time.monotonic() - started
    answer.sent = sent
    return answer


def request_head(
    method: str, path: str | bytes, headers: Iterable[tuple[str | bytes, str | bytes]] = (), length: int | None = None
) -> bytes:
    """A request's line and headers, as bytes (any bytes: nothing is checked)."""

    def raw(v: str | bytes) -> bytes:
        return v if isinstance(v, bytes) else v.encode("latin-1", "surrogateescape")

    out = [raw(method) + b" " + raw(path) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    out += [raw(name) + b": " + raw(value) for name, value in headers]
    if length is not None:
        out.append(b"Content-Length: " + str(length).encode())
    return b"\r\n".join(out) + b"\r\n\r\n"


async def held_open(port: int, opening: bytes, drip: bytes, *, every_s: float, limit_s: float) -> tuple[str, float]:
    """Send `opening`, then `drip` one byte every `every_s` seconds, until the server answers
    or closes, or `limit_s` passes. (outcome, seconds): the status, "closed", or "open"."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused", 0.0
    try:
        writer.write(opening)
        await writer.drain()
        position = 0
        while time.monotonic() - started < limit_s:
            try:
                data = await asyncio.wait_for(reader.read(4096), every_s)
            except TimeoutError:
                data = None
            if data == b"":
                return "closed", time.monotonic() - started
            if data:
                line = data.split(b"\r\n", 1)[0].split()
                status = line[1].decode() if len(line) > 1 and line[0].startswith(b"HTTP/") else "closed"
                return status, time.monotonic() - started
            if position < len(drip):
                writer.write(drip[position : position + 1])
                position += 1
                try:
                    await writer.drain()
                except ConnectionError:
                    return "closed", time.monotonic() - started
        return "open", time.monotonic() - started
    except ConnectionError:
        return "closed", time.monotonic() - started
    finally:
        writer.transport.abort()
