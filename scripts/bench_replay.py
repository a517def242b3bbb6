"""Replay of a large recording: start-up time, memory and throughput. `make bench-replay`.

What it measures, in one run:

1. the recording: --interactions chat completions (default 100,000: 146 MB) written
   as one file, gpt-4o.chat-completions.yaml, in a temporary directory, in the exact format
   the record mode writes (checked: sample documents load with the project's loader, dump
   back byte for byte, and have the keys the load generator asks for). Every request is
   distinct (a counter in the user message); every response is a chat completion with
   Azure's headers, content_filter_results and usage.
2. start-to-serving: from launching `mitmdump -s addons/simulator.py` with
   SIMULATOR_MODE=replay until a first replayed request is answered 200: cold (no cached
   index, so this start builds it) and then --warm-starts times warm (index cached). For
   comparison, the same for a generate-mode start, which loads no recording. With each, the
   CPU time mitmdump used by then (less disturbed than the wall time when the machine is
   busy) and its peak resident memory (VmHWM in /proc/PID/status).
3. throughput: requests/s over --connections keep-alive connections for --duration seconds
   (after --warmup seconds unmeasured) with every request for a different recorded
   interaction (the counter walks the whole recording with a large stride), against the
   simulator in replay mode and then in generate mode with the same requests and the same
   load generator; errors are non-200 answers and socket errors, and all must be 200.
   SIMULATOR_LATENCY=false in both, so neither waits.
4. the machine: CPUs and their model, Python and mitmproxy versions.

The load generator is wrk (one thread, a Lua request() that builds each body from the
counter) when installed, else a Python asyncio generator on raw sockets; both share the
machine with mitmdump, and their CPU use is printed. It exits 1 when a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import simulator_process
import yaml

# The pieces of the throughput benchmark this one shares: result rows, the machine line, wrk
# helpers and the HTTP/1.1 response reader of its Python generator.
from bench import (
    API_KEY,
    API_VERSION,
    HEADER,
    WRK_SUMMARY,
    CpuMeter,
    Result,
    Tally,
    _lua_string,
    keep_asking,
    machine_line,
    notes,
    process_cpu_seconds,
    result_line,
    wrk_version,
)
from simulator_process import ROOT, SIMULATOR
from simulator_process import Process as Server

sys.path.insert(0, str(ROOT / "addons"))
from aoai.runtime.recording import Interaction, KeyRules, _Loader, dump_document, file_name_for, request_key

TARGET_WARM_START_S = 5.0
DEPLOYMENT = "gpt-4o"
PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
URL_PATH = f"{PATH}?api-version={API_VERSION}"
N = "{n}"  # where the counter goes in a request body
SYSTEM_PROMPT = "You are a helpful support assistant."
MAX_TOKENS = 200


def request_body(n: int | str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Summarise support ticket {n} in one sentence."},
        ],
        "model": DEPLOYMENT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0.7,
    }


# The request body as text with the counter left out: what both load generators fill in.
BODY_PARTS = json.dumps(request_body(N), separators=(",", ":")).split(N)


def body_bytes(n: int) -> bytes:
    return str(n).join(BODY_PARTS).encode()


# Answers of different lengths, so documents are not all the same size (kept under the
# dumper's 120-column width, so the template matches its output exactly).
ANSWERS = [
    "Ticket {n} reports a late delivery; a replacement was sent and shipping was refunded.",
    "The customer could not log in after a password reset; clearing cookies fixed it.",
    "The blue jacket comes in size XL and is back in stock next week.",
    "A parcel arrived damaged; photos were attached and a full refund was approved.",
    "A duplicate order was cancelled before shipping.",
    "Ticket {n} is about a double charge; the bank hold was released within two days.",
]

# One interaction as the record mode writes it (recording.dump_document); {fields} filled by str.format.
DOCUMENT = """\
---
request:
  method: POST
  path: {path}
  query:
    api-version: '{api_version}'
  headers:
    content-type: application/json
  body:
    messages:
    - role: system
      content: {system}
    - role: user
      content: Summarise support ticket {n} in one sentence.
    model: {deployment}
    max_tokens: {max_tokens}
    temperature: 0.7
response:
  status: 200
  headers:
    content-type: application/json
    apim-request-id: {request_id}
    x-ms-region: Sweden Central
    x-ms-deployment-name: {deployment}
    x-ms-rai-invoked: 'true'
  body:
    choices:
    - content_filter_results:
        hate:
          filtered: false
          severity: safe
        self_harm:
          filtered: false
          severity: safe
        sexual:
          filtered: false
          severity: safe
        violence:
          filtered: false
          severity: safe
      finish_reason: stop
      index: 0
      logprobs: null
      message:
        content: {answer}
        refusal: null
        role: assistant
    created: {created}
    id: chatcmpl-{chat_id}
    model: gpt-4o-2024-11-20
    object: chat.completion
    system_fingerprint: fp_b705f0c291
    usage:
      completion_tokens: {completion_tokens}
      prompt_tokens: {prompt_tokens}
      total_tokens: {total_tokens}
  duration_ms: {duration_ms}
recorded_at: '{recorded_at}'
"""
FIRST_CREATED = 1732600000  # 2024-11-26


def document(n: int) -> str:
    answer = ANSWERS[n % len(ANSWERS)].format(n=n)
    mixed = (n * 0x9E3779B97F4A7C15) % (1 << 64)  # a cheap scramble, so ids look random but stay distinct
    created = FIRST_CREATED + 3 * n
    prompt_tokens = 38 + len(str(n)) // 2
    completion_tokens = 12 + len(answer) // 5
    return DOCUMENT.format(
        path=PATH,
        api_version=API_VERSION,
        system=SYSTEM_PROMPT,
        deployment=DEPLOYMENT,
        max_tokens=MAX_TOKENS,
        n=n,
        request_id=f"{mixed >> 32:08x}-{mixed >> 16 & 0xFFFF:04x}-4{mixed & 0xFFF:03x}-a{n >> 16 & 0xFFF:03x}-{n:012x}",
        answer=answer,
        created=created,
        chat_id=f"B{mixed:020d}{n:08d}",
        completion_tokens=completion_tokens,
        prompt_tokens=prompt_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        duration_ms=f"{420 + mixed % 2600 + n % 10 / 10:.1f}",
        recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
    )


def write_recording(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name_for(PATH)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, count, 10_000):
            f.write("".join(document(n) for n in range(start, min(start + 10_000, count))))
    return path


def check_documents(count: int) -> None:
    """Sample documents load with the project's loader, dump back to the same bytes (so the
    file is exactly what the record mode writes) and have the key the load generator asks for."""
    rules = KeyRules()
    for n in sorted({0, 1, 2, 3, 4, 5, 999, 12345, count // 2, count - 1} & set(range(count))):
        text = document(n)
        interaction = Interaction.from_document(yaml.load(text, Loader=_Loader))
        if dump_document(interaction).decode() != text:
            raise SystemExit(f"document {n} is not what the recorder would write:\n{text}")
        asked = request_key("POST", PATH, [("api-version", API_VERSION)], body_bytes(n), "application/json", rules)
        if interaction.key(rules) != asked:
            raise SystemExit(f"document {n}: recorded key {interaction.key(rules)} but requests ask for {asked}")


# --- starting mitmdump -------------------------------------------------------------------


def start(label: str, env: dict[str, str], workdir: Path, probe: int) -> tuple[Server, float]:
    """Launch mitmdump; return it and the seconds from launch until chat request `probe` was
    answered 200. Polls health every 20 ms; the probe follows at once and waits for its answer."""
    server = simulator_process.start(
        SIMULATOR, cwd=workdir, label=label, env={"SIMULATOR_API_KEY": API_KEY, "SIMULATOR_LATENCY": "false", **env}
    )
    try:
        simulator_process.wait_ready(server, timeout=600, poll=0.02)
        response = httpx.post(
            f"{server.url}{URL_PATH}",
            content=body_bytes(probe),
            timeout=600,
            headers={"api-key": API_KEY, "content-type": "application/json"},
        )
    except simulator_process.StartError as e:  # it has exited, or been stopped
        raise SystemExit(str(e)) from None
    except httpx.HTTPError as e:
        stop(server)
        raise SystemExit(f"{label}: {e}") from None
    elapsed = time.perf_counter() - server.started
    if response.status_code != 200:
        stop(server)
        raise SystemExit(f"{label}: the first request was answered {response.status_code}: {response.text[:500]}")
    return server, elapsed


def stop(server: Server) -> float:
    """Stop mitmdump (SIGTERM, as a service manager would); the seconds it took to exit."""
    started = time.perf_counter()
    server.stop(timeout=60)
    return time.perf_counter() - started


def start_line(label: str, seconds: float, server: Server) -> str:
    return (
        f"  {label:<28} {seconds:6.2f} s   mitmdump CPU {process_cpu_seconds(server.process.pid):5.2f} s   "
        f"peak memory {peak_memory_mib(server):4.0f} MiB"
    )


def peak_memory_mib(server: Server) -> float:
    """The process's peak resident set so far (VmHWM)."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024


def recorded_count(server: Server) -> int | None:
    """The number of interactions the replay stage says it loaded, from mitmdump's log."""
    found = re.findall(r"(\d+) recorded interactions in", server.log_path.read_text(errors="replace"))
    return int(found[-1]) if found else None


# --- load over many keys -----------------------------------------------------------------


def stride_for(count: int) -> int:
    """A step coprime with `count`, so position * step % count visits every interaction once
    per `count` requests, far apart in the file."""
    step = max(1, int(count * 0.618)) | 1
    while math.gcd(step, count) != 1:
        step += 2
    return step


WRK_SCRIPT = (
    """\
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["api-key"] = {key}

local parts = {{{parts}}}
local count, stride, position = {count}, {stride}, {start}

function request()
  local n = (position * stride) % count
  position = position + 1
  local out = {{parts[1]}}
  for i = 2, #parts do
    out[#out + 1] = string.format("%d", n)
    out[#out + 1] = parts[i]
  end
  return wrk.format(nil, {path}, nil, table.concat(out))
end

"""
    + WRK_SUMMARY
)


class Load:
    """Requests for interaction (position * stride) % count, position counting on across runs
    (plus the requests possibly in flight when a run ended), so a measured run asks for
    interactions its warm-up did not."""

    def __init__(self, wrk: str | None, count: int, connections: int, workdir: Path):
        self.wrk, self.count, self.connections, self.workdir = wrk, count, connections, workdir
        self.stride = stride_for(count)
        self.position = 0

    def run(self, label: str, server: Server, seconds: float) -> Result:
        meter = CpuMeter(server.process.pid)
        if self.wrk:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            meter.start()
            tally, wall = self._wrk(label, server.port, seconds)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = meter.stop((after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime))
        else:
            meter.start()
            own = time.process_time()
            tally, wall = asyncio.run(self._python(server.port, seconds))
            cpu = meter.stop(time.process_time() - own)
        self.position += tally.requests + tally.socket_errors + self.connections
        latency_ms = tally.latency_total / tally.requests * 1000 if tally.requests else 0.0
        return Result(label, tally.requests, wall, latency_ms, tally.non_200, tally.socket_errors, cpu)

    def _wrk(self, label: str, port: int, seconds: float) -> tuple[Tally, float]:
        script = self.workdir / "replay-load.lua"
        script.write_text(
            WRK_SCRIPT.format(
                key=_lua_string(API_KEY.encode()),
                parts=", ".join(_lua_string(p.encode()) for p in BODY_PARTS),
                count=self.count,
                stride=self.stride,
                start=self.position,
                path=_lua_string(URL_PATH.encode()),
            )
        )
        command = [
            self.wrk,
            "-t",
            "1",
            "-c",
            str(self.connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{URL_PATH}",
        ]
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode != 0 or line is None:
            raise SystemExit(f"{label}: wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        requests, duration_us, latency_us, non_200, socket_errors = line.split()[1:]
        tally = Tally(int(requests), int(requests) * float(latency_us) / 1e6, int(non_200), int(socket_errors))
        return tally, int(duration_us) / 1e6

    async def _python(self, port: int, seconds: float) -> tuple[Tally, float]:
        loop = asyncio.get_running_loop()
        tally = Tally()
        position = self.position
        head = (
            f"POST {URL_PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\napi-key: {API_KEY}\r\n"
            f"content-type: application/json\r\n"
        )

        def next_request() -> bytes:
            nonlocal position
            body = body_bytes(position * self.stride % self.count)
            position += 1
            return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body

        started = loop.time()
        await asyncio.gather(
            *(keep_asking(port, next_request, started + seconds, tally) for _ in range(self.connections))
        )
        return tally, loop.time() - started


def check_answers(server: Server, samples: list[int]) -> None:
    """Replayed answers are the recorded ones, not merely 200s."""
    for n in samples:
        response = httpx.post(
            f"http://127.0.0.1:{server.port}{URL_PATH}",
            content=body_bytes(n),
            headers={"api-key": API_KEY, "content-type": "application/json"},
            timeout=30,
        )
        content = response.json()["choices"][0]["message"]["content"]
        if content != ANSWERS[n % len(ANSWERS)].format(n=n):
            raise SystemExit(f"interaction {n}: replayed {content!r}, not the recorded answer")


# --- the run -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, default=100_000, help="recorded interactions (default 100000)")
    parser.add_argument("--warm-starts", type=int, default=3, help="warm starts to time (default 3)")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per mode (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default 2)")
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or force one",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the recording and logs in this directory (its recordings/ folder is replaced); "
        "default: a temporary directory, removed at the end",
    )
    args = parser.parse_args()
    if args.interactions < 1 or args.warm_starts < 1 or args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error(
            "--interactions, --warm-starts and --connections must be at least 1, --duration above 0, "
            "--warmup not negative"
        )
    wrk = shutil.which("wrk") if args.loader != "python" else None
    if args.loader == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    if wrk is not None and (args.duration < 1 or 0 < args.warmup < 1):
        parser.error("wrk measures whole seconds: --duration and --warmup must be at least 1 (or --warmup 0)")

    print(machine_line())
    print(f"Load average before the run: {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)")
    loader = wrk_version(wrk) if wrk else "Python asyncio (raw sockets; shares the CPU with mitmdump)"
    print(
        f"Load: {loader}, 1 thread, {args.connections} keep-alive connections, {args.duration:g} s after "
        f"{args.warmup:g} s warm-up, each request for a different recorded interaction"
    )
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, wrk, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="aoai-bench-replay-") as tmp:
            run(args, wrk, Path(tmp))


def run(args: argparse.Namespace, wrk: str | None, workdir: Path) -> None:
    count = args.interactions
    folder = workdir / "recordings"
    shutil.rmtree(folder, ignore_errors=True)
    check_documents(count)
    started = time.perf_counter()
    path = write_recording(folder, count)
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    print(
        f"\nRecording: {count:,} interactions, {size / 1e6:.1f} MB ({size / count:,.0f} bytes each) "
        f"in {path.name}, written in {seconds:.2f} s"
    )

    replay_env = {"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)}
    probe = count - 1  # the first request of each start: the file's last interaction
    print("\nStart to serving (launch until the first replayed request is answered 200):")
    server, cold = start("replay-cold", replay_env, workdir, probe)
    line = start_line("replay, cold (builds index)", cold, server)
    loaded = recorded_count(server)
    print(f"{line}   (exit took {stop(server):.1f} s)")
    if loaded is not None and loaded != count:
        raise SystemExit(f"replay loaded {loaded} interactions, not {count}; see {server.log_path}")

    warm_times = []
    for i in range(args.warm_starts):
        server, warm = start(f"replay-warm{i}", replay_env, workdir, probe)
        warm_times.append(warm)
        print(start_line("replay, warm (index cached)", warm, server))
        if i < args.warm_starts - 1:
            stop(server)  # the last one is measured below
    median = statistics.median(warm_times)
    verdict = "met" if median <= TARGET_WARM_START_S else "NOT met"
    print(f"  warm median {median:.2f} s (target <= {TARGET_WARM_START_S:g} s: {verdict})")

    load = Load(wrk, count, args.connections, workdir)
    print(f"\n{HEADER} {'peak memory':>12}")
    try:
        if args.warmup > 0:
            load.run("replay warm-up", server, args.warmup)
        replay = load.run("replay", server, args.duration)
        replay_memory = peak_memory_mib(server)
        print(f"{result_line(replay)} {replay_memory:>8.0f} MiB", flush=True)
        check_answers(server, [0, count // 3, count - 1])
    finally:
        stop(server)

    generate_server, generate_start = start("generate", {"RECORDING_DIR": str(workdir / "empty")}, workdir, 0)
    generate_start_line = start_line("generate (no recording)", generate_start, generate_server)
    try:
        if args.warmup > 0:
            load.run("generate warm-up", generate_server, args.warmup)
        generate = load.run("generate", generate_server, args.duration)
        generate_memory = peak_memory_mib(generate_server)
        print(f"{result_line(generate)} {generate_memory:>8.0f} MiB", flush=True)
    finally:
        stop(generate_server)

    ratio = replay.rps / generate.rps if generate.rps else 0.0
    print(
        f"\nratio replay/generate: {ratio:.2f} in req/s ({replay.rps:.0f} / {generate.rps:.0f}); "
        f"{generate.cpu_ms_per_request / replay.cpu_ms_per_request:.2f} in server CPU per request "
        f"({replay.cpu_ms_per_request:.3f} / {generate.cpu_ms_per_request:.3f} ms)"
    )
    print(f"start to serving, for comparison:\n{generate_start_line}")
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    for line in notes([replay, generate]):
        print(line)
    if replay.errors or generate.errors:
        print("FAILED: not every request was answered 200; see the errors column")
        sys.exit(1)


if __name__ == "__main__":
    main()
