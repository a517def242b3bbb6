#!/usr/bin/env python3
"""How well the simulator keeps a realtime voice deployment's timing under load: N concurrent
voice sessions (100 by default) against a real mitmdump with latency on, each on the GA path
with a plain WebSocket client: session.update (audio out), a user text item, response.create,
then everything until response.done. The deployment's time to first token is set exactly
(standard deviation 0), so each session's target is known:

* first audio: from sending response.create to the first output_audio delta, against the
  deployment's time to first token (`--first-audio-ms`);
* pacing: the audio seconds of every delta but the last, over the wall seconds from the first
  delta to the last (each delta is due when the audio before it has played: 1.0 is real time);
* events a second, per session and in all;
* round trip: from sending response.create to response.created (sent at once): how much of
  the first audio's lateness is the way through mitmproxy and back rather than the wait;
* the simulator's CPU seconds (utime + stime from /proc/<pid>/stat) per session-second;
* `/++/health` asked every 50 ms meanwhile: how late the event loop answers.

Errors are in % of the target, signed (+ late, slow); p50/p95/p99 are of their absolute
values. Sessions start spread over `--ramp` seconds, as callers do.

This is a benchmark that prints figures, not a test: it exits 0 whatever it measures (unless
the simulator fails to start or a session fails).

    python scripts/bench_realtime.py [--sessions 10 100] [--first-audio-ms 500] [--ramp 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import simulator_process
from bench import OTHERS_BUSY, machine_line, process_cpu_seconds, system_busy_seconds
from bench_batch import HealthProbe
from bench_latency import percentile
from simulator_process import SIMULATOR
from simulator_process import Process as Simulator
from websockets.asyncio.client import connect

DEPLOYMENT = "gpt-realtime-bench"
MODEL = "gpt-realtime"
BANNER = "Azure OpenAI simulator:"
STARTUP_SETTLE_S = 1.0
PCM16_BYTES_PER_SECOND = 24_000 * 2  # the session's default output: PCM16, 24 kHz, mono
SESSION_TIMEOUT_S = 180.0


@contextmanager
def simulator(first_audio_ms: float, extra_args: list[str]) -> Iterator[Simulator]:
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as folder:
        tmp = Path(folder)
        deployments = tmp / "deployments.json"
        latency = {"timeToFirstTokenMs": {"mean": first_audio_ms, "stdDev": 0}}
        deployments.write_text(json.dumps({DEPLOYMENT: {"model": MODEL, "latency": latency}}), encoding="utf-8")
        env = {
            "SIMULATOR_API_KEY": secrets.token_hex(16),
            "SIMULATOR_LATENCY": "true",
            "RECORDING_DIR": str(tmp / "recordings"),
            "OPENAI_DEPLOYMENT_CONFIG_PATH": str(deployments),
        }
        sim = simulator_process.start(SIMULATOR, cwd=tmp, env=env, extra_args=extra_args)
        try:
            simulator_process.wait_ready(sim, after_log=BANNER, settle=STARTUP_SETTLE_S, timeout=120)
            yield sim
        finally:
            sim.stop()


@dataclass
class Measured:
    """One session's figures, times in seconds."""

    first_audio: float = 0.0
    round_trip: float = 0.0  # response.create sent to response.created back: the relay's share of first audio
    pacing: float = 0.0  # audio seconds per wall second
    audio_seconds: float = 0.0
    events: int = 0
    session_seconds: float = 0.0  # from connecting to response.done
    deltas: int = 0
    gaps: list[float] = field(default_factory=list)  # wall seconds between audio deltas


async def one_session(sim: Simulator, delay: float) -> Measured:
    await asyncio.sleep(delay)
    url = f"{sim.url.replace('http://', 'ws://')}/openai/v1/realtime?model={DEPLOYMENT}"
    m = Measured()
    began = time.perf_counter()
    async with connect(url, additional_headers={"api-key": sim.key}, max_size=None, compression=None) as ws:

        async def until(kind: str) -> dict:
            async for frame in ws:
                m.events += 1
                event = json.loads(frame)
                if event["type"] == "error":
                    raise RuntimeError(f"error event: {event['error']}")
                if event["type"] == kind:
                    return event
            raise RuntimeError(f"the session closed before {kind}")

        await until("session.created")
        await ws.send(
            json.dumps({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}})
        )
        await until("session.updated")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        asked = time.perf_counter()
        first = last = 0.0
        sizes: list[int] = []
        async for frame in ws:
            now = time.perf_counter()
            m.events += 1
            event = json.loads(frame)
            kind = event["type"]
            if kind == "response.created":
                m.round_trip = now - asked
            elif kind == "response.output_audio.delta":
                if not sizes:
                    first = now
                else:
                    m.gaps.append(now - last)
                last = now
                sizes.append(len(base64.b64decode(event["delta"])))
            elif kind == "error":
                raise RuntimeError(f"error event: {event['error']}")
            elif kind == "response.done":
                if event["response"]["status"] != "completed":
                    raise RuntimeError(f"response {event['response']['status']}: {event['response']['status_details']}")
                break
        m.session_seconds = time.perf_counter() - began
    if len(sizes) < 2:
        raise RuntimeError("fewer than two audio deltas")
    m.first_audio = first - asked
    m.deltas = len(sizes)
    m.audio_seconds = sum(sizes) / PCM16_BYTES_PER_SECOND
    # Each delta is due once the audio before it has played: all but the last span first → last.
    m.pacing = (sum(sizes[:-1]) / PCM16_BYTES_PER_SECOND) / (last - first)
    return m


def run(sim: Simulator, sessions: int, ramp: float) -> dict:
    rng = random.Random(sessions)
    delays = [rng.uniform(0, ramp) for _ in range(sessions)]
    probe = HealthProbe(sim)

    async def all_sessions() -> list[Measured]:
        async with asyncio.timeout(SESSION_TIMEOUT_S):
            return await asyncio.gather(*(one_session(sim, d) for d in delays))

    cpu_before, system_before, client_before = (
        process_cpu_seconds(sim.process.pid),
        system_busy_seconds(),
        time.process_time(),
    )
    probe.start()
    started = time.perf_counter()
    measured = asyncio.run(all_sessions())
    wall = time.perf_counter() - started
    probe.stopping.set()
    probe.join()
    cpu = process_cpu_seconds(sim.process.pid) - cpu_before
    client = time.process_time() - client_before
    others = max(0.0, system_busy_seconds() - system_before - cpu - client)
    return {"measured": measured, "wall": wall, "cpu": cpu, "client": client, "others": others, "health": probe.times}


def error_pct(values: list[float], target: float) -> list[float]:
    return [(v - target) / target * 100 for v in values]


def spread(errors: list[float]) -> str:
    absolute = [abs(e) for e in errors]
    return " ".join(f"{percentile(absolute, p):>6.2f}" for p in (50, 95, 99)) + f" {max(errors, key=abs):>+7.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100], help="concurrent sessions of each run")
    parser.add_argument("--first-audio-ms", type=float, default=500.0, help="the deployment's time to first token")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which the sessions start")
    parser.add_argument(
        "--quiet", action="store_true", help="flow_detail=0: mitmdump logs no line per WebSocket message"
    )
    args = parser.parse_args()

    target = args.first_audio_ms / 1000
    results: dict[int, dict] = {}
    for sessions in args.sessions:
        with simulator(args.first_audio_ms, ["--set", "flow_detail=0"] if args.quiet else []) as sim:
            run(sim, 2, 0.0)  # warm-up: imports, tokenizer, first handshakes
            results[sessions] = run(sim, sessions, args.ramp)

    print(machine_line())
    print(
        f"voice sessions on the GA path through mitmdump, latency on: time to first token {args.first_audio_ms:g} ms "
        f"(std 0), pace 1.0; sessions started over {args.ramp:g} s, one response each, one fresh simulator per run"
    )
    print(
        "errors in % of the target: |error| p50 p95 p99, then the worst signed (first audio + late; pacing + faster, - slower than real time)\n"
    )
    print(
        f"{'sessions':>8} {'first audio p50':>16} {'p95':>6} {'p99':>6} {'worst':>7} {'pacing p50':>11} {'p95':>6} "
        f"{'p99':>6} {'worst':>7} {'audio s':>8} {'events/s':>9} {'per session':>11} {'CPU s/session-s':>16} "
        f"{'round trip p50 ms':>18} {'p99':>6} {'health p99 ms':>14} {'max':>6} {'cores: sim':>11} {'client':>7} {'others':>7}"
    )
    for sessions, r in results.items():
        measured: list[Measured] = r["measured"]
        first = error_pct([m.first_audio for m in measured], target)
        pacing = error_pct([m.pacing for m in measured], 1.0)
        events = sum(m.events for m in measured)
        trips = [m.round_trip * 1000 for m in measured]
        session_seconds = sum(m.session_seconds for m in measured)
        per_session = percentile([m.events / m.session_seconds for m in measured], 50)
        audio = sum(m.audio_seconds for m in measured) / len(measured)
        print(
            f"{sessions:>8} {spread(first):>37} {spread(pacing):>33} {audio:>8.1f} {events / r['wall']:>9.0f} "
            f"{per_session:>11.1f} {r['cpu'] / session_seconds:>16.4f} "
            f"{percentile(trips, 50):>18.1f} {percentile(trips, 99):>6.1f} {percentile(r['health'], 99):>14.1f} "
            f"{max(r['health'], default=float('nan')):>6.1f} {r['cpu'] / r['wall']:>11.2f} {r['client'] / r['wall']:>7.2f} "
            f"{r['others'] / r['wall']:>7.2f}"
        )
    print(
        "\naudio s: mean seconds of audio per answer; per session: median events a second of one session; "
        "CPU s/session-s: the simulator's CPU seconds per second of open session; "
        "cores: how busy the simulator, this client and other processes kept the machine (cores on average)"
    )
    disturbed = [str(n) for n, r in results.items() if r["others"] / r["wall"] >= OTHERS_BUSY]
    if disturbed:
        print(
            f"note: other processes used >= {OTHERS_BUSY:.0%} of a core during the run(s) of {', '.join(disturbed)} "
            "sessions; their lateness is in these figures"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
