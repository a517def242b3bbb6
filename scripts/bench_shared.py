#!/usr/bin/env python3
"""What sharing state through Redis costs each request: one simulator keeping everything in
memory against one with SIMULATOR_REDIS_URL (a local redis-server this script starts), the
same Responses API workload on both:

* create: a stored response (written to Redis before the answer leaves);
* follow-up: a response with previous_response_id (the earlier one read from Redis first);
* chat: a plain chat completion (only the rate-limit windows go through Redis);

each round one of each, on keep-alive connections, `--concurrency` clients at once (1: one
request at a time, the latency of a request alone). Latency is off in the simulator, so the
figures are its own work plus Redis's. Prints p50 and p99 per request kind for each, and what
Redis adds.

This is a benchmark that prints figures, not a test: it exits 0 whatever it measures (unless
a simulator or redis-server fails to start).

    python scripts/bench_shared.py [--rounds 300] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import simulator_process
from bench import machine_line
from bench_latency import percentile
from simulator_process import SIMULATOR
from simulator_process import Process as Simulator

API_VERSION = "2024-10-21"
KINDS = ("create", "follow-up", "chat")
WARM_UP_ROUNDS = 20
BANNER = "Azure OpenAI simulator:"  # logged once its listener is up
STARTUP_SETTLE_S = 1.0  # for the add-ons that start after the listener


@contextmanager
def simulator(redis_url: str | None) -> Iterator[Simulator]:
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as folder:
        tmp = Path(folder)
        env = {
            "SIMULATOR_API_KEY": secrets.token_hex(16),
            "SIMULATOR_LATENCY": "false",
            "RECORDING_DIR": str(tmp / "recordings"),
        }
        if redis_url:
            env["SIMULATOR_REDIS_URL"] = redis_url
        sim = simulator_process.start(SIMULATOR, cwd=tmp, env=env)
        try:
            simulator_process.wait_ready(sim, after_log=BANNER, settle=STARTUP_SETTLE_S, timeout=120)
            yield sim
        finally:
            sim.stop()


async def one_client(sim: Simulator, rounds: int, times: dict[str, list[float]]) -> None:
    """`rounds` rounds of create, follow-up and chat; the times of those after the warm-up."""
    headers = {"api-key": sim.key}
    responses = f"{sim.url}/openai/v1/responses"
    chat = f"{sim.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:

        async def timed(kind: str, url: str, body: dict, keep: bool) -> dict:
            started = time.perf_counter()
            answer = await client.post(url, json=body)
            spent = time.perf_counter() - started
            if answer.status_code != 200:
                raise RuntimeError(f"{kind}: {answer.status_code} {answer.text[:300]}")
            if keep:
                times[kind].append(spent * 1000)
            return answer.json()

        for n in range(WARM_UP_ROUNDS + rounds):
            keep = n >= WARM_UP_ROUNDS
            first = await timed(
                "create", responses, {"model": "gpt-4o", "input": f"Round {n}.", "max_output_tokens": 16}, keep
            )
            follow = {
                "model": "gpt-4o",
                "input": "And then?",
                "previous_response_id": first["id"],
                "max_output_tokens": 16,
            }
            await timed("follow-up", responses, follow, keep)
            await timed("chat", chat, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}, keep)


def measure(sim: Simulator, rounds: int, concurrency: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}

    async def run() -> None:
        await asyncio.gather(*(one_client(sim, rounds, times) for _ in range(concurrency)))

    asyncio.run(run())
    return times


def redis_commands(url: str) -> int:
    """Commands Redis has run so far (INFO commandstats)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sum(int(stats["calls"]) for stats in client.info("commandstats").values())
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="rounds per client (each: create, follow-up, chat)")
    parser.add_argument("--concurrency", type=int, default=1, help="clients at once")
    args = parser.parse_args()

    started = simulator_process.start_redis()
    if started is None:
        print("redis-server is not installed (Debian package redis-server)", file=sys.stderr)
        return 1
    redis, redis_url = started
    results: dict[str, dict[str, list[float]]] = {}
    commands: dict[str, int] = {}
    try:
        for name, url in (("memory", None), ("redis", redis_url)):
            with simulator(url) as sim:
                before = redis_commands(redis_url)
                results[name] = measure(sim, args.rounds, args.concurrency)
                commands[name] = redis_commands(redis_url) - before
    finally:
        simulator_process.stop(redis)

    print(machine_line())
    print(
        f"{args.rounds} rounds x {args.concurrency} client(s), keep-alive, simulator latency off; "
        "times in ms from sending a request to its whole answer\n"
    )
    print(f"{'request':<10} {'memory p50':>11} {'p99':>7} {'redis p50':>10} {'p99':>7} {'added p50':>10} {'p99':>7}")
    for kind in KINDS:
        memory, redis_times = results["memory"][kind], results["redis"][kind]
        m50, m99 = percentile(memory, 50), percentile(memory, 99)
        r50, r99 = percentile(redis_times, 50), percentile(redis_times, 99)
        print(f"{kind:<10} {m50:>11.2f} {m99:>7.2f} {r50:>10.2f} {r99:>7.2f} {r50 - m50:>+10.2f} {r99 - m99:>+7.2f}")
    rounds = (WARM_UP_ROUNDS + args.rounds) * args.concurrency
    print(f"\nRedis commands per round (create, follow-up, chat): {commands['redis'] / rounds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
