#!/usr/bin/env python3
"""How accurately does the simulator keep its configured latency under concurrency?

Starts `mitmdump -s addons/simulator.py` on a free loopback port with a temporary deployments
file (TTFT and inter-token latency with standard deviation 0), then measures, for each
concurrency level given with --streams, each pattern given with --patterns and each API given
with --apis (chat completions, and the Responses API's event stream):

* steady: that many streams kept in flight, as load tools keep a concurrency (clients
  started evenly over one stream's duration, each asking again on its keep-alive connection
  as soon as its stream ends; the streams sent in the next two stream durations count);
* burst: that many streams written at the same instant on fresh connections;

and reports:

* TTFT: from writing the request to the arrival of the first SSE frame whose
  `choices[0].delta.content` is non-empty (the definition GenAI-Perf and LLMPerf use), or, on
  the Responses API, the first `response.output_text.delta` event;
* ITL: per stream, the mean gap between consecutive content frames, (last - first) / (n - 1);
  also the p99 of all single gaps pooled over the streams;
* errors: connection failures, non-200 answers, broken streams, a missing `data: [DONE]` (or
  Responses `response.completed`),
  or a number of content frames other than max_tokens;

and for concurrent non-streamed requests the time from writing the request to the end of
the answer, against TTFT + ITL * (max_tokens - 1) from the same configuration.

The client shares the machine with mitmdump, so it is kept cheap: plain asyncio transports
and protocols (no HTTP library, no task switch per frame), a hand-written HTTP/1.1 request,
and a minimal chunked/SSE scan that looks for `"content":"` followed by a non-empty value
instead of parsing JSON. All connections are opened first, so connection setup is not
counted; every request has its own send time.

Each run also prints the CPU used by the client, by mitmdump and by the rest of the machine
(mitmdump is one event loop, so near 100 % of one core it is saturated), and any accept-queue
overflows (a dropped handshake costs 1 s), to tell where the time went when figures slip.

This is a benchmark that prints figures, not a test: it exits 0 whatever it measures
(unless the simulator fails to start).

    python scripts/bench_latency.py --streams 200,500,1000 --patterns steady,burst
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import simulator_process
from bench import machine_line, process_cpu_seconds, tree_cpu_seconds
from simulator_process import SIMULATOR
from simulator_process import Process as Simulator

API_VERSION = "2024-10-21"
CONTENT_KEY = b'"content":"'
DONE = b"data: [DONE]"
TEXT_DELTA = b"event: response.output_text.delta\n"  # a Responses stream's token event
# A Responses stream's end (it has no [DONE]); incomplete when max_output_tokens cut the answer.
ENDS = (b"event: response.completed\n", b"event: response.incomplete\n")
APIS = ("chat", "responses")
CONNECT_BATCH = 25  # connections opened at a time, well below the listener's accept backlog
CONNECT_PAUSE_S = 0.01  # between two batches
BANNER = "Azure OpenAI simulator:"  # logged by the simulator once its listener is up
SATURATED = 0.9  # mitmdump CPU share of one core from which its event loop is the bottleneck
BUSY_OTHERS = 0.25  # CPU share of one core used by other processes above which a run is suspect
IDLE_CPU, IDLE_WINDOW_S = 0.05, 0.3  # mitmdump counts as idle below 5 % of a core over 0.3 s
STARTUP_SETTLE_S = 1.0  # for the add-ons that start after the listener (see simulator)


# --------------------------------------------------------------------------- the simulator


@dataclass
class Deployment:
    name: str
    ttft_ms: float
    itl_ms: float

    def config(self) -> dict:
        return {
            "model": "gpt-4o",
            "latency": {
                "timeToFirstTokenMs": {"mean": self.ttft_ms, "stdDev": 0},
                "interTokenMs": {"mean": self.itl_ms, "stdDev": 0},
                "requestMs": {"mean": 100, "stdDev": 0},
            },
        }

    def total_ms(self, tokens: int) -> float:
        """When the last of `tokens` tokens is due, counted from the request's arrival."""
        return self.ttft_ms + self.itl_ms * (tokens - 1)


def cpu_seconds(sim: Simulator) -> float:
    """User + system CPU time mitmdump (or a worker pool, all its processes) has used so far
    (Linux /proc; 0 elsewhere)."""
    used = (tree_cpu_seconds if sim.label == "workers" else process_cpu_seconds)(sim.process.pid)
    return 0.0 if math.isnan(used) else used


@contextmanager
def simulator(
    deployments: list[Deployment], extra_args: list[str], workers: int = 1, program: str = "mitmdump"
) -> Iterator[Simulator]:
    """Run the simulator (mitmdump -s, or `program` simulator_process.LEAN: the lean launcher) in
    a temporary folder; stop it on the way out.

    Nothing is sent before its start-up banner and a short pause after it: the simulator
    opens its listener in its own `running` hook, before mitmproxy's later add-ons (TLS
    settings, the stream server) have run theirs, and a request in that window makes
    mitmdump exit with "Errors logged during startup".
    """
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        tmp = Path(folder)
        config_path = tmp / "deployments.json"
        config_path.write_text(json.dumps({d.name: d.config() for d in deployments}))
        env = {
            "SIMULATOR_API_KEY": secrets.token_hex(16),
            "OPENAI_DEPLOYMENT_CONFIG_PATH": str(config_path),
            "RECORDING_DIR": str(tmp / "recordings"),
            # Natural answers far longer than max_tokens, so the limit sets every length.
            "SIMULATOR_COMPLETION_TOKENS_MEAN": "10000",
            "SIMULATOR_COMPLETION_TOKENS_STD_DEV": "0",
        }
        if workers > 1:
            sim = simulator_process.start_workers(workers, cwd=tmp, env=env, extra_args=extra_args)
            banner = simulator_process.WORKERS_BANNER
        else:
            sim = simulator_process.start(SIMULATOR, cwd=tmp, extra_args=extra_args, env=env, program=program)
            banner = BANNER
        try:
            simulator_process.wait_ready(sim, after_log=banner, settle=STARTUP_SETTLE_S, timeout=120)
            yield sim
        finally:
            if not sim.alive():
                print(
                    f"\nmitmdump exited with {sim.process.returncode} during the benchmark; its log ends:\n"
                    + sim.log(tail=30),
                    file=sys.stderr,
                )
            sim.stop()


# --------------------------------------------------------------------------- the client


@dataclass
class Outcome:
    """What one request saw; times are time.perf_counter() values."""

    sent: float = 0.0
    status: int = 0
    ended: float = 0.0
    content: list[float] = field(default_factory=list)  # arrival of each content frame
    done: bool = False
    error: str | None = None


def request_bytes(sim: Simulator, deployment: str, max_tokens: int, stream: bool, api: str = "chat") -> bytes:
    if api == "responses":
        path = "/openai/v1/responses"
        body = json.dumps(
            {
                "model": deployment,
                "input": "Tell me a long story.",
                "max_output_tokens": max_tokens,
                "store": False,
                "stream": stream,
            }
        ).encode()
    else:
        path = f"/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}"
        body = json.dumps(
            {
                "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": max_tokens,
                "stream": stream,
            }
        ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"host: 127.0.0.1:{sim.port}\r\napi-key: {sim.key}\r\ncontent-type: application/json\r\n"
        f"accept: {'text/event-stream' if stream else 'application/json'}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class BodyScanner:
    """Incremental reader of a response body (chunked or content-length) that stamps each SSE
    event carrying non-empty `content` with the time of the read it arrived in."""

    def __init__(self, chunked: bool, length: int | None):
        self.chunked = chunked
        self.remaining = length  # content-length bodies: bytes still to come
        self.raw = bytearray()  # chunked framing not yet decoded
        self.sse = bytearray()  # decoded body not yet split into events
        self.complete = False  # the body's end was seen
        self.done = False  # `data: [DONE]` was seen
        self.times: list[float] = []

    def feed(self, data: bytes, now: float) -> None:
        if self.chunked:
            self._dechunk(data)
        else:
            self.sse += data
            if self.remaining is not None:
                self.remaining -= len(data)
                self.complete = self.remaining <= 0
        sse, pos, times = self.sse, 0, self.times
        while (end := sse.find(b"\n\n", pos)) >= 0:
            if sse.startswith(b"event: ", pos):  # the Responses API names each event
                if sse.startswith(TEXT_DELTA, pos):
                    times.append(now)
                elif sse.startswith(ENDS, pos):
                    self.done = True
                pos = end + 2
                continue
            i = sse.find(CONTENT_KEY, pos, end)
            if i >= 0 and sse[i + len(CONTENT_KEY)] != 0x22:  # not `"content":""`
                times.append(now)
            elif sse.startswith(DONE, pos):
                self.done = True
            pos = end + 2
        if pos:
            del sse[:pos]

    def _dechunk(self, data: bytes) -> None:
        raw = self.raw
        raw += data
        pos = 0
        while (eol := raw.find(b"\r\n", pos)) >= 0:
            size = int(raw[pos:eol].split(b";", 1)[0], 16)
            start, end = eol + 2, eol + 2 + size
            if size == 0:  # the last chunk (trailers are not used here)
                self.complete = True
                pos = len(raw)
                break
            if len(raw) < end + 2:
                break
            self.sse += raw[start:end]
            pos = end + 2
        if pos:
            del raw[:pos]


class ResponseReader(asyncio.Protocol):
    """One connection's client side: parses a single response as its bytes arrive.

    A protocol rather than a StreamReader: each read is handled in the callback that receives
    it, with no task switch per frame, so the client stays cheap at thousands of frames/s.
    """

    def __init__(self, outcome: Outcome, stream: bool):
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.expect(outcome)

    def expect(self, outcome: Outcome) -> None:
        """Read the next response on this connection into `outcome`."""
        self.outcome = outcome
        self.head = bytearray()
        self.scanner: BodyScanner | None = None
        self.finished = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.transport.write(request)  # the transport sends at once; the stamp is the send time
        self.outcome.sent = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.finished.done():
            return
        try:
            if self.scanner is None:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                data = bytes(self.head[end + 4 :])
                self.scanner = self._start(bytes(self.head[:end]))
            self.scanner.feed(data, now)
        except (ValueError, IndexError) as e:
            self.finish(f"bad response: {type(e).__name__}: {e}")
            return
        if self.scanner.complete:
            self.finish(None)

    def _start(self, head: bytes) -> BodyScanner:
        lines = head.split(b"\r\n")
        self.outcome.status = int(lines[0].split(b" ", 2)[1])
        chunked, length = False, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"content-length":
                length = int(value)
        scanner = BodyScanner(chunked, length)
        scanner.complete = length == 0
        return scanner

    def eof_received(self) -> bool:
        self.finish("broken stream" if self.stream else "broken body")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(f"connection lost: {exc}" if exc else ("broken stream" if self.stream else "broken body"))

    def finish(self, error: str | None) -> None:
        """Settle the outcome once: the body's end, a failure, or the run's timeout."""
        if self.finished.done():
            return
        outcome = self.outcome
        outcome.ended = time.perf_counter()
        if self.scanner is not None:
            outcome.content, outcome.done = self.scanner.times, self.scanner.done
        if outcome.status and outcome.status != 200:
            error = f"HTTP {outcome.status}"
        elif error is None and self.stream and not outcome.done:
            error = "no end of stream"
        outcome.error = error
        self.finished.set_result(None)


async def open_connections(sim: Simulator, outcomes: list[Outcome], stream: bool) -> list[ResponseReader]:
    """Open one connection per outcome, in small batches with a pause between them, so
    mitmproxy's accept queue never overflows (an overflowed handshake stalls for a 1 s
    retransmission); the outcomes of failed connections get their error."""
    loop = asyncio.get_running_loop()

    async def connect(outcome: Outcome) -> ResponseReader | None:
        try:
            _, reader = await loop.create_connection(lambda: ResponseReader(outcome, stream), "127.0.0.1", sim.port)
            return reader
        except OSError as e:
            outcome.error = f"connect: {e}"
            return None

    readers: list[ResponseReader] = []
    for first in range(0, len(outcomes), CONNECT_BATCH):
        batch = outcomes[first : first + CONNECT_BATCH]
        readers += [r for r in await asyncio.gather(*(connect(o) for o in batch)) if r is not None]
        await asyncio.sleep(CONNECT_PAUSE_S)
    return readers


async def wait_idle(sim: Simulator, timeout: float = 30.0) -> None:
    """Wait until mitmdump is idle: after a large run it is busy closing its connections for
    a while, and a run started then would be measured against that work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = cpu_seconds(sim)
        await asyncio.sleep(IDLE_WINDOW_S)
        if cpu_seconds(sim) - used <= IDLE_CPU * IDLE_WINDOW_S:
            return


async def fire(sim: Simulator, count: int, request: bytes, stream: bool, timeout: float) -> tuple[list[Outcome], Load]:
    """Open `count` connections, then write one request on each back to back and read all
    answers; the load is measured from the first request written to the last answer read."""
    outcomes = [Outcome() for _ in range(count)]
    readers = await open_connections(sim, outcomes, stream)
    await wait_idle(sim)  # for mitmproxy to take in the connections and finish the last run
    before = LoadSnapshot.take(sim)
    for reader in readers:
        reader.send(request)
    if readers:
        await asyncio.wait([r.finished for r in readers], timeout=timeout)
    load = before.until(LoadSnapshot.take(sim))
    for reader in readers:
        if not reader.finished.done():
            reader.finish("timeout")
        if reader.transport is not None:
            reader.transport.close()
    return outcomes, load


async def keep_busy(
    sim: Simulator, count: int, request: bytes, stream: bool, ramp: float, window: float
) -> tuple[list[Outcome], Load]:
    """Steady load, as a load tool keeps it: `count` clients, started evenly over `ramp`
    seconds, each sending its next request as soon as its last answer ended, so `count`
    requests are in flight at any time. Only requests sent in the `window` seconds after
    the ramp count; the load is measured over that window."""
    outcomes = [Outcome() for _ in range(count)]
    readers = await open_connections(sim, outcomes, stream)
    await wait_idle(sim)
    counted: list[Outcome] = []
    started = time.perf_counter()
    steady, stop = started + ramp, started + ramp + window
    snapshots: list[LoadSnapshot] = []

    async def client(reader: ResponseReader, delay: float) -> None:
        await asyncio.sleep(delay)
        while time.perf_counter() < stop and reader.transport is not None and not reader.transport.is_closing():
            outcome = Outcome()
            reader.expect(outcome)
            reader.send(request)
            await reader.finished
            if outcome.sent >= steady:
                counted.append(outcome)

    async def measure() -> None:
        await asyncio.sleep(ramp)
        snapshots.append(LoadSnapshot.take(sim))
        await asyncio.sleep(window)
        snapshots.append(LoadSnapshot.take(sim))

    clients = [client(r, ramp * i / len(readers)) for i, r in enumerate(readers)]
    await asyncio.gather(measure(), *clients)
    for reader in readers:
        if reader.transport is not None:
            reader.transport.close()
    return counted + [o for o in outcomes if o.error], snapshots[0].until(snapshots[1])


# --------------------------------------------------------------------------- figures


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks; `values` need not be sorted."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def deviation(measured: float, configured: float) -> str:
    return f"{(measured - configured) / configured * 100:+.1f} %"


def error_summary(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.error:
            counts[o.error] = counts.get(o.error, 0) + 1
    if not counts:
        return "0"
    return f"{sum(counts.values())} (" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")"


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used so far, summed over the cores (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """Times a full accept queue dropped a connection, machine-wide (Linux TcpExt counter)."""
    try:
        names, values = [
            line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")
        ][:2]
        return int(values[names.index("ListenOverflows")])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Load:
    """CPU seconds used over a run by this client, mitmdump and the whole machine."""

    wall: float
    client: float
    server: float
    machine: float
    overflows: int

    def line(self) -> str:
        def pct(seconds: float) -> str:
            return f"{seconds / self.wall * 100:.0f} %"

        others = max(0.0, self.machine - self.client - self.server)
        text = (
            f"CPU (% of one core): client {pct(self.client)}, mitmdump {pct(self.server)}, "
            f"other processes {pct(others)}"
        )
        if self.overflows:
            text += f"; accept-queue overflows {self.overflows}"
        if self.server / self.wall > SATURATED:
            text += "\n  mitmdump's event loop (one thread) was saturated"
        if others / self.wall > BUSY_OTHERS:
            text += "\n  WARNING: other processes were busy during this run; its figures are not reliable"
        return text


@dataclass
class LoadSnapshot:
    wall: float
    client: float
    server: float
    machine: float
    overflows: int

    @classmethod
    def take(cls, sim: Simulator) -> LoadSnapshot:
        return cls(
            time.perf_counter(), time.process_time(), cpu_seconds(sim), machine_busy_seconds(), listen_overflows()
        )

    def until(self, later: LoadSnapshot) -> Load:
        return Load(
            later.wall - self.wall,
            later.client - self.client,
            later.server - self.server,
            later.machine - self.machine,
            later.overflows - self.overflows,
        )


async def bench_streams(
    sim: Simulator,
    deployment: Deployment,
    count: int,
    max_tokens: int,
    tolerance: float,
    steady: bool,
    api: str = "chat",
) -> str:
    """Run `count` concurrent streams of `api`, all started together (a burst) or kept in flight
    (steady load), print their figures, and return a one-line summary."""
    request = request_bytes(sim, deployment.name, max_tokens, stream=True, api=api)
    duration = deployment.total_ms(max_tokens) / 1000
    if steady:
        outcomes, load = await keep_busy(sim, count, request, True, ramp=duration, window=2 * duration)
    else:
        outcomes, load = await fire(sim, count, request, True, duration + 60)
    for o in outcomes:
        if o.error is None and len(o.content) != max_tokens:
            o.error = f"{len(o.content)} content frames, not {max_tokens}"
    good = [o for o in outcomes if o.error is None]
    ttft = [(o.content[0] - o.sent) * 1000 for o in good]
    itl = [(o.content[-1] - o.content[0]) * 1000 / (len(o.content) - 1) for o in good if len(o.content) > 1]
    gaps = [(b - a) * 1000 for o in good for a, b in zip(o.content, o.content[1:], strict=False)]
    last = [(o.content[-1] - o.sent) * 1000 for o in good]
    sent_spread = (
        (max(o.sent for o in outcomes if o.sent) - min(o.sent for o in outcomes if o.sent)) * 1000
        if any(o.sent for o in outcomes)
        else 0.0
    )
    pattern = "steady" if steady else "burst"
    if steady:
        print(
            f"\n== {api}: {count} streams kept in flight (steady load: started over {duration:.1f} s, then each "
            f"client asks again as soon as its stream ends; {len(outcomes)} streams sent in the "
            f"{2 * duration:.1f} s after that counted), max_tokens {max_tokens} "
            f"(configured TTFT {deployment.ttft_ms:g} ms, ITL {deployment.itl_ms:g} ms)"
        )
    else:
        print(
            f"\n== {api}: {count} concurrent streams started together (burst), max_tokens {max_tokens} "
            f"(configured TTFT {deployment.ttft_ms:g} ms, ITL {deployment.itl_ms:g} ms)"
        )
    print(
        f"  TTFT ms   p50 {percentile(ttft, 50):7.1f}  p90 {percentile(ttft, 90):7.1f}  "
        f"p99 {percentile(ttft, 99):7.1f}  mean {mean(ttft):7.1f}  max {max(ttft, default=float('nan')):7.1f}"
        f"   p50 vs configured {deviation(percentile(ttft, 50), deployment.ttft_ms)}"
    )
    print(
        f"  ITL ms    mean {mean(itl):6.2f}  p99 (per-stream mean) {percentile(itl, 99):6.2f}  "
        f"p99 (single gaps) {percentile(gaps, 99):6.2f}   mean vs configured "
        f"{deviation(mean(itl), deployment.itl_ms)}"
    )
    print(
        f"  last token ms  p50 {percentile(last, 50):7.1f}  p99 {percentile(last, 99):7.1f}  "
        f"(configured {deployment.total_ms(max_tokens):g})"
    )
    spread = "" if steady else f" (requests written within {sent_spread:.1f} ms)"
    print(f"  wall {load.wall:.2f} s{spread}   errors {error_summary(outcomes)}")
    print(f"  {load.line()}")
    if steady and outcomes:
        # Over a steady window the streams started and finished balance: CPU per stream in all.
        print(
            f"  mitmdump CPU per stream {load.server / len(outcomes) * 1000:.2f} ms "
            f"({max_tokens} tokens; start, frames and finish)"
        )
    within = (
        bool(ttft)
        and bool(itl)
        and abs(percentile(ttft, 50) / deployment.ttft_ms - 1) <= tolerance
        and abs(mean(itl) / deployment.itl_ms - 1) <= tolerance
        and len(good) == len(outcomes)
    )
    print(f"  TTFT p50 and ITL mean within {tolerance * 100:g} % with zero errors: {'yes' if within else 'NO'}")
    return (
        f"{api:9s} {count:5d} streams {pattern:6s} TTFT p50 {percentile(ttft, 50):7.1f} ms "
        f"({deviation(percentile(ttft, 50), deployment.ttft_ms)}), ITL mean {mean(itl):5.2f} ms "
        f"({deviation(mean(itl), deployment.itl_ms)}), errors {len(outcomes) - len(good)}, "
        f"mitmdump CPU {load.server / load.wall * 100:.0f} %: {'ok' if within else 'NOT within'}"
    )


async def bench_plain(sim: Simulator, deployment: Deployment, count: int, max_tokens: int, tolerance: float) -> str:
    """Run `count` concurrent non-streamed requests, print their figures, and return a summary."""
    request = request_bytes(sim, deployment.name, max_tokens, stream=False)
    expected = deployment.total_ms(max_tokens)
    outcomes, load = await fire(sim, count, request, False, expected / 1000 + 60)
    latency = [(o.ended - o.sent) * 1000 for o in outcomes if o.error is None]
    print(
        f"\n== {count} concurrent non-streamed requests, max_tokens {max_tokens} "
        f"(configured {deployment.ttft_ms:g} + {deployment.itl_ms:g} * {max_tokens - 1} = {expected:g} ms)"
    )
    print(
        f"  latency ms  mean {mean(latency):7.1f}  p50 {percentile(latency, 50):7.1f}  "
        f"p99 {percentile(latency, 99):7.1f}  max {max(latency, default=float('nan')):7.1f}"
        f"   mean vs configured {deviation(mean(latency), expected)}"
    )
    print(f"  wall {load.wall:.2f} s   errors {error_summary(outcomes)}")
    print(f"  {load.line()}")
    within = bool(latency) and abs(mean(latency) / expected - 1) <= tolerance and len(latency) == count
    print(f"  mean within {tolerance * 100:g} % with zero errors: {'yes' if within else 'NO'}")
    return (
        f"{count:5d} non-streamed  latency mean {mean(latency):7.1f} ms of {expected:g} "
        f"({deviation(mean(latency), expected)}), errors {count - len(latency)}: "
        f"{'ok' if within else 'NOT within'}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--streams",
        default="200,500",
        help="concurrency levels of the streamed runs, comma-separated (e.g. 200,500,1000)",
    )
    p.add_argument(
        "--patterns",
        default="steady,burst",
        help="how the streams start: 'steady' keeps that many in flight as a load tool does "
        "(started over one stream's duration, each client asking again when its stream ends); "
        "'burst' starts them all at the same instant",
    )
    p.add_argument(
        "--apis",
        default="chat,responses",
        help="which streams to measure: chat (chat completions), responses (the Responses API) or both",
    )
    p.add_argument("--nonstreamed", type=int, default=200, help="concurrent non-streamed requests; 0 skips")
    p.add_argument("--max-tokens", type=int, default=100, help="max_tokens of every request")
    p.add_argument("--ttft-ms", type=float, default=300, help="TTFT of the streamed deployment")
    p.add_argument("--itl-ms", type=float, default=20, help="inter-token latency of the streamed deployment")
    p.add_argument(
        "--total-ms",
        type=float,
        default=1000,
        help="total latency of a second deployment for the non-streamed run "
        "(its TTFT is chosen so TTFT + ITL * (max_tokens - 1) equals this)",
    )
    p.add_argument("--total-itl-ms", type=float, default=8, help="inter-token latency of that second deployment")
    p.add_argument("--tolerance", type=float, default=5, help="accepted deviation, %%")
    p.add_argument("--mitmdump-args", default="", help="extra mitmdump arguments, e.g. '-q'")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="simulator processes behind HAProxy (scripts/workers.py); 1: one mitmdump, no balancer",
    )
    args = p.parse_args(argv)
    args.stream_counts = [int(s) for s in args.streams.split(",") if s.strip()]
    args.patterns = [s.strip() for s in args.patterns.split(",") if s.strip()]
    args.apis = [s.strip() for s in args.apis.split(",") if s.strip()]
    if not args.apis or not set(args.apis) <= set(APIS):
        p.error("--apis takes chat, responses or both")
    if not set(args.patterns) <= {"steady", "burst"}:
        p.error("--patterns takes steady, burst or both")
    if args.max_tokens < 2:
        p.error("--max-tokens must be at least 2 to measure inter-token latency")
    if args.nonstreamed and args.total_ms - args.total_itl_ms * (args.max_tokens - 1) <= 0:
        p.error("--total-ms is too short for --total-itl-ms and --max-tokens")
    return args


async def run(args: argparse.Namespace, sim: Simulator, paced: Deployment, total: Deployment) -> None:
    tolerance = args.tolerance / 100
    # Warm up: the first requests load encodings and warm caches; not counted.
    for api in args.apis:
        await fire(sim, 4, request_bytes(sim, paced.name, args.max_tokens, True, api), True, 60)
    if args.nonstreamed:
        await fire(sim, 4, request_bytes(sim, total.name, args.max_tokens, False), False, 60)
    summary = [
        await bench_streams(sim, paced, count, args.max_tokens, tolerance, pattern == "steady", api)
        for api in args.apis
        for pattern in args.patterns
        for count in args.stream_counts
    ]
    if args.nonstreamed:
        summary.append(await bench_plain(sim, total, args.nonstreamed, args.max_tokens, tolerance))
        summary.append(await bench_plain(sim, paced, args.nonstreamed, args.max_tokens, tolerance))
    print(f"\n== summary (target: within {args.tolerance:g} % with zero errors)")
    for line in summary:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paced = Deployment("paced", args.ttft_ms, args.itl_ms)
    total = Deployment("total", args.total_ms - args.total_itl_ms * (args.max_tokens - 1), args.total_itl_ms)
    print(machine_line())
    with simulator(
        [paced, total] if args.nonstreamed else [paced], shlex.split(args.mitmdump_args), args.workers
    ) as sim:
        what = f"{args.workers} workers behind HAProxy" if args.workers > 1 else "mitmdump"
        print(f"simulator: {what} on 127.0.0.1:{sim.port} (pid {sim.process.pid})")
        asyncio.run(run(args, sim, paced, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
