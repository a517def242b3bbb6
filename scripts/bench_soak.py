"""A long run of mixed traffic against the simulator: `make bench-soak` (30 minutes; shorter
with SOAK_ARGS="--minutes 5").

Three simulators run on loopback ports: one in generate mode (latency on, a tight deployment
that answers 429s), one recording from a fake Azure upstream, and one recording from an
upstream that is down (every answer there is an injected 502). Clients keep a mix going at
about half of what one process serves: chat, streams (some cut off by the client mid-way),
embeddings, throttled requests and record-mode requests. Every minute it prints, for the
generate-mode process: resident memory, open file descriptors, the event loop's lag (p99 of
that minute, from /++/metrics) and requests, 429s, injected and unexpected errors. At the end:
whether memory and descriptors stayed flat (growth under 10 % after the warm-up) with no
unexpected error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import simulator_process
from bench import machine_line
from prometheus_client.parser import text_string_to_metric_families
from simulator_process import SIMULATOR

sys.path.insert(0, str(simulator_process.ROOT / "tests"))
from fake_azure import UPSTREAM_KEY, FakeAzure

KEY = "soak-key-0123456789"
VERSION = "2024-10-21"
DEPLOYMENTS = {
    "chat": {
        "model": "gpt-4o",
        "latency": {"timeToFirstTokenMs": {"mean": 50, "stdDev": 10}, "interTokenMs": {"mean": 5, "stdDev": 1}},
    },
    "tight": {"model": "gpt-4o-mini", "tokensPerMinute": 6000, "requestsPerMinute": 600},
    "embed": {"model": "text-embedding-3-small", "latency": {"requestMs": {"mean": 20, "stdDev": 5}}},
}
GROWTH_LIMIT = 0.10


@dataclass
class Minute:
    requests: int = 0
    throttled: int = 0
    injected: int = 0  # 502s from the record-mode simulator whose upstream is down
    unexpected: list[str] = field(default_factory=list)  # 5xx and client errors that were not injected


def process_figures(pid: int) -> tuple[int, int]:
    """Resident memory (KiB) and open file descriptors of a process."""
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def lag_buckets(text: str) -> dict[float, float]:
    for family in text_string_to_metric_families(text):
        if family.name == "aoai_event_loop_lag_seconds":
            return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}
    return {}


def p99(before: dict[float, float], after: dict[float, float]) -> float:
    """The 99th percentile of what a histogram gained between two scrapes (its bucket bound)."""
    gained = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = gained.get(math.inf, 0.0)
    if not total:
        return 0.0
    return next(bound for bound, count in gained.items() if count >= 0.99 * total)


class Traffic:
    def __init__(self, generate: str, record: str, down: str, rate: float):
        self.urls = {"generate": generate, "record": record, "down": down}
        self.rate = rate
        self.minute = Minute()
        self.rng = random.Random(1)

    async def one(self, client: httpx.AsyncClient) -> None:
        kind = self.rng.choices(
            ["chat", "stream", "cut", "embed", "tight", "record", "down"], [30, 25, 5, 20, 10, 6, 4]
        )[0]
        base = self.urls[kind if kind in ("record", "down") else "generate"]
        deployment = {"embed": "embed", "tight": "tight", "record": "gpt-4o", "down": "gpt-4o"}.get(kind, "chat")
        operation = "embeddings" if kind == "embed" else "chat/completions"
        body = (
            {"input": f"soak {self.rng.random()}"}
            if kind == "embed"
            else {
                "messages": [{"role": "user", "content": f"soak {self.rng.randrange(50)}"}],
                "max_tokens": 20,
                "stream": kind in ("stream", "cut"),
            }
        )
        url = f"{base}/openai/deployments/{deployment}/{operation}?api-version={VERSION}"
        minute = self.minute
        try:
            async with client.stream("POST", url, json=body, headers={"api-key": KEY}) as r:
                if kind == "cut":
                    async for _ in r.aiter_lines():
                        break  # the client goes away mid-stream
                else:
                    await r.aread()
            minute.requests += 1
            if r.status_code == 429:
                minute.throttled += 1
            elif kind == "down" and r.status_code == 502:
                minute.injected += 1
            elif r.status_code != 200:
                minute.unexpected.append(f"{kind} {r.status_code}")
        except httpx.HTTPError as e:
            minute.unexpected.append(f"{kind} {type(e).__name__}")

    async def run(self, seconds: float) -> None:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            pending: set[asyncio.Task] = set()
            started, sent = time.monotonic(), 0
            while (now := time.monotonic() - started) < seconds:
                due = int(now * self.rate)
                for _ in range(due - sent):
                    task = asyncio.create_task(self.one(client))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                sent = due
                await asyncio.sleep(0.01)
            await asyncio.gather(*pending, return_exceptions=True)


async def soak(args: argparse.Namespace, generate, record, down) -> bool:
    traffic = Traffic(generate.url, record.url, down.url, args.rate)
    runner = asyncio.create_task(traffic.run(args.minutes * 60))
    baseline_at = min(5, max(1, args.minutes // 2))
    rows, lags = [], lag_buckets(httpx.get(generate.url + "/++/metrics").text)  # noqa: ASYNC210 (before the load)
    print(
        f"{'minute':>6} {'RSS MiB':>8} {'fds':>5} {'loop lag p99':>13} {'requests':>9} {'429s':>6} "
        f"{'injected':>9} {'unexpected':>11}"
    )
    for minute in range(1, args.minutes + 1):
        await asyncio.sleep(60)
        scrape = await asyncio.to_thread(httpx.get, generate.url + "/++/metrics")
        now_lags = lag_buckets(scrape.text)
        rss, fds = process_figures(generate.process.pid)
        done, traffic.minute = traffic.minute, Minute()
        rows.append((rss, fds, done))
        print(
            f"{minute:>6} {rss / 1024:>8.1f} {fds:>5} {p99(lags, now_lags) * 1000:>10.1f} ms {done.requests:>9} "
            f"{done.throttled:>6} {done.injected:>9} {len(done.unexpected):>11}"
            + (f"  ({', '.join(sorted(set(done.unexpected))[:3])})" if done.unexpected else ""),
            flush=True,
        )
        lags = now_lags
    await runner
    base_rss, base_fds, _ = rows[baseline_at - 1]
    last_rss, last_fds, _ = rows[-1]
    rss_growth, fd_growth = last_rss / base_rss - 1, last_fds / base_fds - 1
    unexpected = sum(len(r[2].unexpected) for r in rows)
    flat = rss_growth < GROWTH_LIMIT and fd_growth < GROWTH_LIMIT
    print(
        f"\nafter minute {baseline_at}: RSS {rss_growth:+.1%}, fds {fd_growth:+.1%} (limit {GROWTH_LIMIT:.0%}); "
        f"unexpected errors {unexpected}: {'flat and clean' if flat and not unexpected else 'NOT within target'}"
    )
    return flat and not unexpected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30, help="how long (default 30)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests started per second (default 150)")
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.rate <= 0:
        parser.error("--minutes at least 1, --rate above 0")
    print(machine_line())
    print(
        f"Soak: {args.minutes} min, {args.rate:g} requests/s started (chat 30 %, streams 25 %, cut streams 5 %, "
        "embeddings 20 %, throttled 10 %, record 6 %, record with the upstream down 4 %)\n"
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as folder, FakeAzure() as upstream:
        tmp = Path(folder)
        (tmp / "deployments.json").write_text(json.dumps(DEPLOYMENTS))
        common = {"SIMULATOR_API_KEY": KEY, "OPENAI_DEPLOYMENT_CONFIG_PATH": str(tmp / "deployments.json")}
        servers = [
            simulator_process.start(SIMULATOR, cwd=tmp, label="generate", env=common),
            simulator_process.start(
                SIMULATOR,
                cwd=tmp,
                label="record",
                env={
                    **common,
                    "SIMULATOR_MODE": "record",
                    "AZURE_OPENAI_ENDPOINT": upstream.url,
                    "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                    "RECORDING_DIR": str(tmp / "recordings"),
                },
            ),
            simulator_process.start(
                SIMULATOR,
                cwd=tmp,
                label="down",
                env={
                    **common,
                    "SIMULATOR_MODE": "record",
                    "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
                    "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                    "RECORDING_DIR": str(tmp / "down"),
                },
            ),
        ]
        try:
            for server in servers:
                simulator_process.wait_ready(server, timeout=60)
            ok = asyncio.run(soak(args, *servers))
        finally:
            for server in servers:
                server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
