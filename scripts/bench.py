"""Throughput of the simulator compared with a bare mitmdump: `make bench`.

What it measures, in one run:

1. a bare mitmdump (scripts/bench_bare_addon.py: every request answered with one fixed
   chat-completion-like JSON body, nothing else) in reverse mode on a free loopback port;
2. the simulator in mitmdump (`mitmdump -s addons/simulator.py`, SIMULATOR_LATENCY=false)
   generating chat completions for {"messages":[{"role":"user","content":"Hello!"}],"max_tokens":10};
3. the same simulator on its lean launcher (`python addons/simulator.py`, what `make run`,
   `aoai-simulator` and the container run: a master with only the mitmproxy addons it needs);
4. with --embeddings, all three again with an embeddings request (text-embedding-3-small,
   input "Hello world", encoding_format base64).

Each is loaded with POST /openai/deployments/<name>/<operation>?api-version=2024-10-21 over
--connections keep-alive connections for --duration seconds (after a short warm-up) from one
load-generator thread: wrk when it is installed, else a Python asyncio generator on raw
sockets. For each run it prints requests/s, mean latency, errors (responses that are not 200,
and socket errors), and from /proc the server's CPU time per request and how busy the server,
the load generator and everything else on the machine were: a run limited by the load
generator, or disturbed by other processes, says so. Then the ratios simulator/bare and
lean/mitmdump, in requests/s and in CPU per request (the latter barely moves when other
processes compete). --rounds N alternates the servers N times and takes medians, for a noisy
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import simulator_process
from simulator_process import ROOT, SIMULATOR, Process

BARE_ADDON = ROOT / "scripts" / "bench_bare_addon.py"
API_KEY = "bench-key-0123456789"
API_VERSION = "2024-10-21"
TARGET_RATIO = 0.85  # the simulator in mitmdump against the bare mitmdump
TARGET_LEAN = 1.6  # the lean launcher against the simulator in mitmdump
# A load generator using more of a core than this may be what limits the figures.
LOADER_SATURATED = 0.85


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    body: bytes


CHAT = Workload(
    "chat",
    f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
    json.dumps({"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 10}, separators=(",", ":")).encode(),
)
EMBEDDINGS = Workload(
    "embeddings",
    f"/openai/deployments/text-embedding-3-small/embeddings?api-version={API_VERSION}",
    json.dumps({"input": "Hello world", "encoding_format": "base64"}, separators=(",", ":")).encode(),
)


@dataclass
class Result:
    label: str
    requests: int  # responses received in the measured window, whatever their status
    seconds: float
    latency_ms: float  # mean, over all responses
    non_200: int
    socket_errors: int
    cpu: CpuUse

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_200 + self.socket_errors

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu.server / self.requests * 1000 if self.requests else math.nan

    def share(self, seconds: float) -> float:
        """CPU seconds as a share of one core over the measured window."""
        return seconds / self.seconds if self.seconds else math.nan


# --- CPU accounting (Linux /proc; NaN elsewhere) --------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (a worker pool: the launcher, HAProxy,
    Redis and every mitmdump)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += process_cpu_seconds(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return total


def system_busy_seconds() -> float:
    """CPU time all processes together have used so far (every core), from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return math.nan
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values) - idle) / CLOCK_TICKS


@dataclass
class CpuUse:
    """CPU seconds used during the measured window."""

    server: float  # the mitmdump process
    loader: float  # the load generator
    system: float  # everything on the machine

    @property
    def other(self) -> float:
        # Clock-tick rounding can make it a hair negative on an idle machine.
        return max(0.0, self.system - self.server - self.loader)


class CpuMeter:
    """Measures the server's and the whole machine's CPU use between start() and stop()."""

    def __init__(self, server_pid: int, tree: bool = False):
        self.pid = server_pid
        self.used = tree_cpu_seconds if tree else process_cpu_seconds
        self.server = self.system = 0.0

    def start(self) -> None:
        self.server = self.used(self.pid)
        self.system = system_busy_seconds()

    def stop(self, loader: float) -> CpuUse:
        return CpuUse(self.used(self.pid) - self.server, loader, system_busy_seconds() - self.system)


# --- the servers -------------------------------------------------------------------------


@contextmanager
def mitmdump(
    label: str,
    script: Path,
    env: dict[str, str],
    workdir: Path,
    extra_args: Iterable[str] = (),
    health: str | None = "/++/health",
    program: str = "mitmdump",
) -> Iterator[Process]:
    """Run mitmdump (or with program LEAN, the lean launcher) on a free loopback port until the
    block ends, once ready (at `health`, or once the port accepts with None) and answering the
    chat workload with 200."""
    server = simulator_process.start(script, cwd=workdir, env=env, extra_args=extra_args, label=label, program=program)
    try:
        try:
            simulator_process.wait_ready(server, health, timeout=60)
            response = httpx.post(
                server.url + CHAT.path,
                content=CHAT.body,
                timeout=5,
                headers={"api-key": API_KEY, "content-type": "application/json"},
            )
        except simulator_process.StartError as e:
            raise SystemExit(str(e)) from None
        except httpx.HTTPError as e:
            raise SystemExit(f"{label}: {e}") from None
        if response.status_code != 200:
            raise SystemExit(f"{label}: {CHAT.name} request answered {response.status_code}: {response.text[:500]}")
        yield server
    finally:
        server.stop()


@contextmanager
def worker_pool(count: int, env: dict[str, str], workdir: Path) -> Iterator[Process]:
    """scripts/workers.py with `count` simulators behind HAProxy on a free loopback port."""
    pool = simulator_process.start_workers(count, cwd=workdir, env=env)
    try:
        try:
            simulator_process.wait_ready(pool, after_log=simulator_process.WORKERS_BANNER, timeout=120)
        except simulator_process.StartError as e:
            raise SystemExit(str(e)) from None
        yield pool
    finally:
        pool.stop(timeout=30)


# The servers of one run, in the order of the first round, with their labels.
KINDS = {"bare": "bare mitmdump", "simulator": "mitmdump -s simulator", "lean": "lean simulator"}


# --- load with wrk -----------------------------------------------------------------------


def _lua_string(data: bytes) -> str:
    text = data.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


# Counts non-200 answers per thread and prints one summary line that run_wrk parses. A
# str.format template, as the scripts it ends are: braces doubled.
WRK_SUMMARY = """\
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) non200 = 0 end
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("non200") end
  local e = summary.errors
  io.write(string.format("BENCH %d %d %.3f %d %d\\n", summary.requests, summary.duration, latency.mean,
                         bad, e.connect + e.read + e.write + e.timeout))
end
"""

WRK_SCRIPT = (
    """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["content-type"] = "application/json"
wrk.headers["api-key"] = {key}

"""
    + WRK_SUMMARY
)


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], check=False, capture_output=True, text=True).stdout
    return out.split("[")[0].strip() or "wrk"


def run_wrk(
    wrk: str,
    label: str,
    server: Process,
    workload: Workload,
    connections: int,
    seconds: float,
    warmup: float,
    workdir: Path,
) -> Result:
    script = workdir / f"{workload.name}.lua"
    script.write_text(WRK_SCRIPT.format(body=_lua_string(workload.body), key=_lua_string(API_KEY.encode())))
    url = f"http://127.0.0.1:{server.port}{workload.path}"

    def wrk_run(duration: float) -> str:
        command = [
            wrk,
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{label}: wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    if warmup > 0:
        wrk_run(warmup)
    meter = CpuMeter(server.process.pid, tree=server.label.startswith("workers"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter.start()
    out = wrk_run(seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = meter.stop((after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime))
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"{label}: no summary from wrk:\n{out}")
    requests, duration_us, latency_us, non_200, socket_errors = line.split()[1:]
    wall = int(duration_us) / 1e6
    return Result(label, int(requests), wall, float(latency_us) / 1000, int(non_200), int(socket_errors), cpu)


# --- load from Python (when wrk is missing) ----------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    latency_total: float = 0.0
    non_200: int = 0
    socket_errors: int = 0


def _request_bytes(workload: Workload, port: int) -> bytes:
    head = (
        f"POST {workload.path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\napi-key: {API_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(workload.body)}\r\n\r\n"
    )
    return head.encode() + workload.body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; its status and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, keep = 0, False, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = b"close" not in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep


async def keep_asking(port: int, next_request: Callable[[], bytes], stop_at: float, tally: Tally) -> None:
    """One keep-alive client of the Python load generator: sends `next_request()` and reads the
    answer, again and again until `stop_at` (loop time), counting into `tally`."""
    loop = asyncio.get_running_loop()
    writer: asyncio.StreamWriter | None = None
    while loop.time() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            request = next_request()
            started = loop.time()
            writer.write(request)
            status, keep = await _read_response(reader)
            tally.requests += 1
            tally.latency_total += loop.time() - started
            if status != 200:
                tally.non_200 += 1
            if not keep:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            tally.socket_errors += 1
            if writer is not None:
                writer.close()
                writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _python_load(port: int, workload: Workload, connections: int, seconds: float) -> tuple[Tally, float]:
    loop = asyncio.get_running_loop()
    request = _request_bytes(workload, port)
    tally = Tally()
    started = loop.time()
    stop_at = started + seconds
    await asyncio.gather(*(keep_asking(port, lambda: request, stop_at, tally) for _ in range(connections)))
    return tally, loop.time() - started


def run_python(
    label: str, server: Process, workload: Workload, connections: int, seconds: float, warmup: float
) -> Result:
    if warmup > 0:
        asyncio.run(_python_load(server.port, workload, connections, warmup))
    meter = CpuMeter(server.process.pid)
    meter.start()
    own = time.process_time()
    tally, wall = asyncio.run(_python_load(server.port, workload, connections, seconds))
    cpu = meter.stop(time.process_time() - own)
    latency_ms = tally.latency_total / tally.requests * 1000 if tally.requests else 0.0
    return Result(label, tally.requests, wall, latency_ms, tally.non_200, tally.socket_errors, cpu)


# --- the report --------------------------------------------------------------------------


def machine_line() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from mitmproxy.version import VERSION as mitmproxy_version
    except ImportError:
        mitmproxy_version = "unknown"
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"Machine: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"mitmproxy {mitmproxy_version}, {platform.system()} {platform.release()}{load}"
    )


# Other processes using more of the machine than this (cores) make the figures unreliable.
OTHERS_BUSY = 0.25


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


HEADER = (
    f"{'run':<30} {'req/s':>8} {'mean latency':>13} {'errors':>7} {'CPU/request':>12} "
    f"{'server CPU':>11} {'loader CPU':>11} {'other CPU':>10}"
)


def result_line(r: Result) -> str:
    errors = str(r.errors)
    if r.errors:
        errors += f" ({r.non_200} non-200, {r.socket_errors} socket)"
    per_request = "n/a" if math.isnan(r.cpu_ms_per_request) else f"{r.cpu_ms_per_request:.3f} ms"
    return (
        f"{r.label:<30} {r.rps:>8.1f} {r.latency_ms:>10.2f} ms {errors:>7} {per_request:>12} "
        f"{_share(r.share(r.cpu.server)):>11} {_share(r.share(r.cpu.loader)):>11} "
        f"{_share(r.share(r.cpu.other)):>10}"
    )


def ratio_line(
    name: str, simulator: list[Result], bare: list[Result], what: str = "simulator/bare", target: float = TARGET_RATIO
) -> str:
    """simulator/bare in req/s and in server CPU per request (medians when there are rounds)."""
    sim_rps, bare_rps = statistics.median(r.rps for r in simulator), statistics.median(r.rps for r in bare)
    ratio = sim_rps / bare_rps if bare_rps else 0.0
    verdict = "met" if ratio >= target else "NOT met"
    of = f", medians of {len(simulator)} rounds" if len(simulator) > 1 else ""
    line = f"ratio {what} ({name}{of}): {ratio:.3f} in req/s ({sim_rps:.0f} / {bare_rps:.0f}"
    line += f"; target >= {target}: {verdict})" if target else ")"
    sim_cpu = statistics.median(r.cpu_ms_per_request for r in simulator)
    bare_cpu = statistics.median(r.cpu_ms_per_request for r in bare)
    if not math.isnan(sim_cpu + bare_cpu):
        line += f"; {bare_cpu / sim_cpu:.3f} in server CPU per request ({sim_cpu:.3f} / {bare_cpu:.3f} ms)"
    return line


def notes(results: list[Result]) -> list[str]:
    out = []
    busy = [r.label for r in results if r.share(r.cpu.loader) >= LOADER_SATURATED]
    if busy:
        out.append(
            f"note: the load generator used >= {LOADER_SATURATED:.0%} of a core in: {', '.join(busy)}; "
            "those figures may be limited by it rather than by mitmdump"
        )
    disturbed = [r.label for r in results if r.share(r.cpu.other) >= OTHERS_BUSY]
    if disturbed:
        out.append(
            f"note: other processes used >= {OTHERS_BUSY:.0%} of a core during: {', '.join(disturbed)}; "
            "req/s is disturbed there (CPU per request much less so)"
        )
    if any(r.errors for r in results):
        out.append("note: some requests failed; see the errors column")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default 2)")
    parser.add_argument("--embeddings", action="store_true", help="also measure embeddings (base64)")
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or force one",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each server this many times, alternating; ratios of the medians (default 1)",
    )
    parser.add_argument(
        "--simulator-script",
        type=Path,
        default=SIMULATOR,
        metavar="PATH",
        help="the addon script to run as the simulator (default addons/simulator.py)",
    )
    parser.add_argument(
        "--simulator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the simulator, to compare settings (repeatable)",
    )
    parser.add_argument(
        "--workers",
        default="",
        metavar="N,N,...",
        help="also run the simulator as N workers behind HAProxy (scripts/workers.py) for each N "
        "of 2 or more and compare their chat throughput with one process, e.g. 2,4",
    )
    args = parser.parse_args()
    if args.connections < 1 or args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--connections and --rounds must be at least 1, --duration above 0, --warmup not negative")
    if any("=" not in item for item in args.simulator_env):
        parser.error("--simulator-env takes NAME=VALUE")
    try:
        pools = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--workers takes whole numbers separated by commas, e.g. 1,2")
    if any(n < 1 for n in pools):
        parser.error("--workers: each count must be at least 1")
    pools = [n for n in pools if n > 1]  # one worker is the lean simulator row itself
    if pools and shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        print("note: haproxy is not installed (Debian: apt-get install haproxy): no workers case")
        pools = []
    extra_env = dict(item.split("=", 1) for item in args.simulator_env)

    wrk = shutil.which("wrk") if args.loader != "python" else None
    if args.loader == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    if args.loader == "auto" and wrk is None:
        print(
            "wrk not found: falling back to the Python asyncio load generator "
            "(it shares the CPU with mitmdump; install wrk for steadier figures)"
        )
    if wrk is not None and args.duration < 1:
        parser.error("wrk measures whole seconds: --duration must be at least 1")
    loader = wrk_version(wrk) if wrk else "Python asyncio (raw sockets)"

    print(machine_line())
    print(
        f"Load: {loader}, 1 thread, {args.connections} keep-alive connections, {args.duration:g} s each "
        f"after {args.warmup:g} s warm-up; errors = non-200 responses + socket errors"
    )
    if args.simulator_script.resolve() != SIMULATOR:
        print(f"Simulator script: {args.simulator_script}")
    if extra_env:
        print("Simulator environment added: " + " ".join(f"{k}={v}" for k, v in extra_env.items()))
    workloads = [CHAT, EMBEDDINGS] if args.embeddings else [CHAT]

    def measure(label: str, server: Process, workload: Workload, workdir: Path) -> Result:
        if wrk:
            return run_wrk(wrk, label, server, workload, args.connections, args.duration, args.warmup, workdir)
        return run_python(label, server, workload, args.connections, args.duration, args.warmup)

    results: dict[tuple[str, str], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="aoai-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        bare_args = ["--mode", "reverse:http://127.0.0.1:9", "--set", "connection_strategy=lazy"]
        env = {
            "SIMULATOR_API_KEY": API_KEY,
            "SIMULATOR_LATENCY": "false",
            "RECORDING_DIR": str(workdir / "recordings"),
            **extra_env,
        }
        # All run throughout (an idle mitmdump costs nothing); the runs alternate between them.
        script = args.simulator_script.resolve()
        servers = {
            "bare": stack.enter_context(mitmdump("bare", BARE_ADDON, {}, workdir, bare_args, health=None)),
            "simulator": stack.enter_context(mitmdump("simulator", script, env, workdir)),
            "lean": stack.enter_context(mitmdump("lean", script, env, workdir, program=simulator_process.LEAN)),
        }
        print()
        print(HEADER)
        for round_ in range(args.rounds):
            # Each round starts with the next server, so none always runs first or last.
            order = list(KINDS)
            kinds = order[round_ % len(order) :] + order[: round_ % len(order)]
            for w in workloads:
                for kind in kinds:
                    label = f"{KINDS[kind]} ({w.name})"
                    if args.rounds > 1:
                        label += f" #{round_ + 1}"
                    r = measure(label, servers[kind], w, workdir)
                    results.setdefault((kind, w.name), []).append(r)
                    print(result_line(r), flush=True)

        if pools:
            print()
            for count in pools:
                with worker_pool(count, env, workdir) as pool:
                    for round_ in range(args.rounds):
                        label = f"{count} worker{'s' if count > 1 else ''} + HAProxy (chat)"
                        if args.rounds > 1:
                            label += f" #{round_ + 1}"
                        r = measure(label, pool, CHAT, workdir)
                        results.setdefault((f"workers{count}", CHAT.name), []).append(r)
                        print(result_line(r), flush=True)

    print()
    for w in workloads:
        print(ratio_line(w.name, results["simulator", w.name], results["bare", w.name], "mitmdump -s simulator/bare"))
        print(
            ratio_line(
                w.name, results["lean", w.name], results["simulator", w.name], "lean/mitmdump -s simulator", TARGET_LEAN
            )
        )
        print(ratio_line(w.name, results["lean", w.name], results["bare", w.name], "lean/bare", 0))
    for count in pools:
        rps = statistics.median(r.rps for r in results[f"workers{count}", CHAT.name])
        single = statistics.median(r.rps for r in results["lean", CHAT.name])
        print(
            f"{count} worker{'s' if count > 1 else ''} behind HAProxy: {rps:.0f} req/s, {rps / single:.2f}x one lean "
            f"simulator process ({os.cpu_count()} cores, the load generator on the same machine)"
        )
    for line in notes([r for runs in results.values() for r in runs]):
        print(line)


if __name__ == "__main__":
    main()
