#!/usr/bin/env python3
"""What a stream start costs the simulator: `make bench-streams`.

Starts `mitmdump -s addons/simulator.py` (as scripts/bench_latency.py does: a deployment with a
fixed TTFT and inter-token latency) and, for --rounds rounds, writes a burst of --streams
streamed chat requests at the same instant on connections opened beforehand, then the same
number of non-streamed ones, and reads every answer. For each burst it prints mitmdump's CPU
time (Linux /proc, user + system) divided by the number of requests:

* streams of one token (--tokens 1): a stream's start, its one frame and its end, the cost
  that decides how close a burst comes to its configured TTFT (the first frames wait for
  every start before them on the one event loop);
* streams of --long-tokens tokens (51): from the two, the CPU per frame and, by subtracting
  the frames, per stream start;
* non-streamed requests: the same request answered whole, for comparison;

and the TTFT of the burst (from writing the request to the first content frame) against the
configured one. Medians over the rounds come last. CPU per request barely moves when other
processes compete for the cores; the TTFT does, so the other processes' share is printed too.

This is a benchmark that prints figures, not a test: it exits 0 whatever it measures.

    python scripts/bench_streams.py --streams 500 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass

from bench import machine_line
from bench_latency import Deployment, Load, fire, percentile, request_bytes, simulator
from simulator_process import LEAN
from simulator_process import Process as Simulator

LAUNCHERS = {"lean": LEAN, "mitmdump": "mitmdump"}


@dataclass
class Burst:
    label: str
    count: int
    errors: int
    load: Load
    ttft_p50_ms: float = float("nan")
    ttft_p99_ms: float = float("nan")

    @property
    def cpu_ms(self) -> float:
        """mitmdump's CPU per request of the burst, ms."""
        return self.load.server / self.count * 1000

    def line(self) -> str:
        others = max(0.0, self.load.machine - self.load.client - self.load.server) / self.load.wall * 100
        ttft = (
            ""
            if self.ttft_p50_ms != self.ttft_p50_ms
            else f"  TTFT p50 {self.ttft_p50_ms:7.1f} ms  p99 {self.ttft_p99_ms:7.1f} ms"
        )
        return (
            f"  {self.label:28s} CPU/request {self.cpu_ms:6.3f} ms{ttft}  errors {self.errors}"
            f"  (wall {self.load.wall:.2f} s, other processes {others:.0f} % of a core)"
        )


async def burst(sim: Simulator, deployment: Deployment, count: int, tokens: int, stream: bool) -> Burst:
    request = request_bytes(sim, deployment.name, tokens, stream)
    outcomes, load = await fire(sim, count, request, stream, deployment.total_ms(tokens) / 1000 + 60)
    good = [o for o in outcomes if o.error is None]
    label = f"{count} streams of {tokens} tokens" if stream else f"{count} non-streamed, {tokens} tokens"
    result = Burst(label, count, count - len(good), load)
    if stream:
        ttft = [(o.content[0] - o.sent) * 1000 for o in good if o.content]
        result.ttft_p50_ms, result.ttft_p99_ms = percentile(ttft, 50), percentile(ttft, 99)
    return result


async def run(args: argparse.Namespace, sim: Simulator, deployment: Deployment) -> None:
    # Warm up: the first requests load encodings and warm caches; not counted.
    await fire(sim, 8, request_bytes(sim, deployment.name, args.long_tokens, True), True, 60)
    await fire(sim, 8, request_bytes(sim, deployment.name, args.tokens, False), False, 60)
    short, long, plain = [], [], []
    for round_ in range(1, args.rounds + 1):
        print(f"\n== round {round_}")
        for results, tokens, stream in (
            (short, args.tokens, True),
            (long, args.long_tokens, True),
            (plain, args.tokens, False),
        ):
            result = await burst(sim, deployment, args.streams, tokens, stream)
            results.append(result)
            print(result.line())

    def median(results: list[Burst], value: str) -> float:
        return statistics.median(getattr(r, value) for r in results)

    per_frame = (median(long, "cpu_ms") - median(short, "cpu_ms")) / (args.long_tokens - args.tokens)
    start = median(short, "cpu_ms") - per_frame * args.tokens
    print(f"\n== medians of {args.rounds} rounds (configured TTFT {deployment.ttft_ms:g} ms)")
    print(f"  CPU per stream of {args.tokens} token(s)     {median(short, 'cpu_ms'):6.3f} ms")
    print(f"  CPU per stream of {args.long_tokens} tokens     {median(long, 'cpu_ms'):6.3f} ms")
    print(f"  CPU per frame                 {per_frame:6.3f} ms")
    print(f"  CPU per stream start          {start:6.3f} ms (start and end, without its frames)")
    print(f"  CPU per non-streamed request  {median(plain, 'cpu_ms'):6.3f} ms")
    print(
        f"  burst of {args.streams}: TTFT p50 {median(short, 'ttft_p50_ms'):.1f} ms, "
        f"p99 {median(short, 'ttft_p99_ms'):.1f} ms"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--streams", type=int, default=500, help="requests in each burst")
    p.add_argument("--rounds", type=int, default=5, help="bursts of each kind; the medians are reported")
    p.add_argument("--tokens", type=int, default=1, help="max_tokens of the short streams")
    p.add_argument("--long-tokens", type=int, default=51, help="max_tokens of the long streams")
    p.add_argument("--ttft-ms", type=float, default=300, help="the deployment's time to first token")
    p.add_argument("--itl-ms", type=float, default=10, help="the deployment's inter-token latency")
    p.add_argument(
        "--launchers",
        default="lean,mitmdump",
        help="which to measure, one after the other: lean (the launcher: aoai-simulator, make run, "
        "the container) and mitmdump (mitmdump -s addons/simulator.py)",
    )
    args = p.parse_args(argv)
    if args.long_tokens <= args.tokens:
        p.error("--long-tokens must be more than --tokens")
    args.launchers = [name.strip() for name in args.launchers.split(",") if name.strip()]
    if not args.launchers or set(args.launchers) - set(LAUNCHERS):
        p.error("--launchers takes lean, mitmdump or both, separated by a comma")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deployment = Deployment("paced", args.ttft_ms, args.itl_ms)
    print(machine_line())
    for name in args.launchers:
        with simulator([deployment], [], program=LAUNCHERS[name]) as sim:
            print(f"\n=== simulator: {name} on 127.0.0.1:{sim.port} (pid {sim.process.pid})")
            asyncio.run(run(args, sim, deployment))
    return 0


if __name__ == "__main__":
    sys.exit(main())
