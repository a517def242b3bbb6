"""Rate limits under load: `make bench-limits`.

What it measures, in one run:

1. the limiter's own cost: the Limits stage's request and response hooks on routed flows
   spread over 100 deployments with quotas (in memory; and one Redis round trip per request
   when redis-server is installed), microseconds per request;
2. one simulator (SIMULATOR_LATENCY=false) with a deployment of 60,000 tokens per minute
   (so 360 requests per minute: 60 per 10 s), held above its quota for --seconds by
   --clients concurrent clients sending chat requests with max_tokens 200 and, on a 429,
   waiting exactly retry-after-ms before retrying;
3. the same load on two simulators sharing one quota through a redis-server on a loopback
   port, requests spread round-robin as a load balancer would;
4. a provisioned deployment (gpt-4o, 15 PTUs: 37,500 input-token equivalents a minute, output
   tokens counting 3 each) held above 100 % utilization the same way, by one simulator and by
   two sharing Redis: after a warm-up that fills its bucket (--ptu-warmup), the tokens
   admitted per minute (prompt tokens plus 3 × max_tokens, as the simulator estimates them)
   against its capacity, over --ptu-seconds of measurement.

For each load run it prints the tokens accepted (the limiter's estimate: prompt tokens plus
max_tokens) in each whole minute of the run against the quota, and the least and most in
any 60 s window; the most requests accepted in any 10 s window against the request limit;
the 429s by reason; response times; and the early retries the simulator counted (0 for
clients that honour retry-after-ms). Requests are placed in time by when the simulator
decided them (scripts/bench_limits_probe.py stamps that on each answer): under a burst a
response can leave a few hundred milliseconds after its decision, and windows counted by
the arrival of responses would be blurred by that.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "addons"))

import simulator_process  # noqa: E402
from bench import API_KEY, API_VERSION, machine_line  # noqa: E402  (the shared benchmark helpers)
from simulator_process import SIMULATOR, Process, start_redis, stop  # noqa: E402

PROBE = ROOT / "scripts" / "bench_limits_probe.py"
TPM = 60_000
MAX_TOKENS = 200
DEPLOYMENT = "bench"
TOLERANCE = 0.02
PTU_DEPLOYMENT = "bench-ptu"
PTU_MODEL, PTUS = "gpt-4o", 15
PTU_MAX_TOKENS = 50  # small requests: one more or less moves a minute's figure by under 0.5 %


# --- 1. the limiter's own cost ------------------------------------------------------------


def limiter_cost(per_deployment: int = 200, build_429s: bool = True, log_429s: bool = True) -> dict[str, float]:
    """The Limits stage's hooks on distinct routed requests, 2,000 per (simulated) second over
    100 deployments: each deployment gets 200 requests in 10 s against 60 allowed, so most
    are refused. Without `build_429s` the mitmproxy response object of a 429 is made once
    and reused (the decision alone: estimate, windows, early-retry check, headers and text);
    with `log_429s`, each refusal's log line is formatted as under mitmdump."""
    import logging

    from mitmproxy.test import tflow

    from aoai.openai import catalogue
    from aoai.runtime import limits
    from aoai.runtime.config import Deployment, SimulatorConfig
    from aoai.stages import checks, ratelimit, routing
    from aoai.stages.ratelimit import Limits

    model = catalogue.MODELS["gpt-4o"]
    config = SimulatorConfig(
        api_key=API_KEY, deployments={f"d{i}": Deployment(f"d{i}", model, tokens_per_minute=TPM) for i in range(100)}
    )
    clock = [0.0]
    stage = Limits(config, limits.Limiter(limits.MemoryWindows(), clock=lambda: clock[0]))
    flows = []
    for i in range(100 * per_deployment):
        f = tflow.tflow()
        f.request.method = "POST"
        f.request.path = f"/openai/deployments/d{i % 100}/chat/completions?api-version={API_VERSION}"
        f.request.headers["content-type"] = "application/json"
        f.request.content = json.dumps(
            {"messages": [{"role": "user", "content": f"Question {i}?"}], "max_tokens": MAX_TOKENS}
        ).encode()
        assert checks.check(routing.resolve(f, config)) is None
        flows.append(f)
    logger = logging.getLogger("aoai.stages.ratelimit")
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if log_429s else logging.WARNING)
    logger.propagate = False
    response = tflow.tresp()
    build = ratelimit.too_many_requests
    if not build_429s:
        made = build("", flows[0].request, {}, "eastus")
        ratelimit.too_many_requests = lambda *args: made
    admitted, refused = [], []
    gc.collect()
    gc.freeze()  # the 20,000 prepared flows are the benchmark's, not the limiter's, garbage to scan
    try:
        for f in flows:
            clock[0] += 0.0005
            started = time.perf_counter_ns()
            stage.request(f)
            if f.response is None:
                f.response = response
                stage.response(f)
                admitted.append(time.perf_counter_ns() - started)
            else:
                refused.append(time.perf_counter_ns() - started)
    finally:
        ratelimit.too_many_requests = build
        gc.unfreeze()
        logger.removeHandler(handler)
        logger.propagate = True
    every = sorted(admitted + refused)
    return {
        "mean": statistics.fmean(every) / 1000,
        "p50": every[len(every) // 2] / 1000,
        "p99": every[int(len(every) * 0.99)] / 1000,
        "n": len(every),
        "throttled": len(refused) / len(every),
        "admitted": statistics.fmean(admitted) / 1000,
        "refused": statistics.fmean(refused) / 1000,
    }


async def redis_cost(url: str, n: int = 3000) -> float:
    from aoai.runtime import limits

    windows = limits.RedisWindows.from_url(url, prefix="bench-cost:")
    quota = limits.deployment_quota(TPM, None, 10.0)
    started = time.perf_counter()
    for i in range(n):
        await windows.check(f"d{i % 100}", quota, 220, time.time())
    took = (time.perf_counter() - started) / n * 1e6
    await windows.reset()
    await windows.close()
    return took


# --- 2, 3. holding a deployment above its quota ---------------------------------------------


@dataclass
class Run:
    accepted: list[tuple[float, int]] = field(default_factory=list)  # (decided, seconds from start; cost)
    response_times: list[float] = field(default_factory=list)
    throttled: int = 0
    errors: int = 0
    started: float = 0.0


async def client_loop(
    index: int,
    urls: list[str],
    run: Run,
    until: float,
    turn: list[int],
    http: httpx.AsyncClient,
    max_tokens: int = MAX_TOKENS,
    output_weight: float = 1,
) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        # Each request its own text, as real traffic: the simulator tells retries apart by body.
        body = {
            "messages": [{"role": "user", "content": f"Client {index}, question {n}: count to ten."}],
            "max_tokens": max_tokens,
        }
        while time.monotonic() < until:
            turn[0] += 1
            url = urls[turn[0] % len(urls)]  # round robin, as a load balancer
            sent = time.monotonic()
            try:
                r = await http.post(url, json=body)
                run.response_times.append(time.monotonic() - sent)
            except httpx.HTTPError:
                run.errors += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 429:
                run.throttled += 1
                wait = int(r.headers["retry-after-ms"]) / 1000
                await asyncio.sleep(min(wait, max(0.0, until - time.monotonic())))
                continue
            if r.status_code != 200:
                run.errors += 1
                break
            cost = r.json()["usage"]["prompt_tokens"] + math.ceil(max_tokens * output_weight)
            run.accepted.append((float(r.headers["x-bench-decided-at"]) - run.started, cost))
            break


async def hold_above_quota(
    sims: list[str],
    clients: int,
    seconds: float,
    clock,
    deployment: str = DEPLOYMENT,
    max_tokens: int = MAX_TOKENS,
    output_weight: float = 1,
) -> Run:
    """`clock` is the windows' clock (monotonic in memory, wall time for Redis), in which the
    simulator stamps its decisions."""
    urls = [f"{s}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}" for s in sims]
    run = Run(started=clock())
    until = time.monotonic() + seconds
    limits_ = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(headers={"api-key": API_KEY}, limits=limits_, timeout=30) as http:
        turn = [0]
        await asyncio.gather(
            *(client_loop(i, urls, run, until, turn, http, max_tokens, output_weight) for i in range(clients))
        )
    return run


def report(label: str, run: Run, seconds: float, sims: list[str], request_limit: int, window: float) -> bool:
    accepted = sorted(run.accepted)
    times = [t for t, _ in accepted]
    minutes = [sum(c for t, c in accepted if 60 * m <= t < 60 * (m + 1)) for m in range(int(seconds // 60))]
    sliding = []
    start = 0.0
    while start + 60 <= seconds + 1e-9:
        sliding.append(sum(c for t, c in accepted if start <= t < start + 60))
        start += 0.5
    most_requests, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= window:
            j += 1
        most_requests = max(most_requests, i - j + 1)
    views = [httpx.get(f"{s}/++/limits", headers={"api-key": API_KEY}).json() for s in sims]
    throttled: dict[str, int] = {}
    early = 0
    for v in views:
        for reason, n in v["throttled"].get(DEPLOYMENT, {}).items():
            throttled[reason] = throttled.get(reason, 0) + n
        early += v["earlyRetries"].get(DEPLOYMENT, 0)
    ok_tokens = all(abs(m - TPM) <= TPM * TOLERANCE for m in minutes)
    ok_requests = most_requests <= request_limit
    took = sorted(run.response_times)
    print(f"\n{label}")
    tokens = sum(c for _, c in accepted)
    print(
        f"  {len(took)} requests, {len(accepted)} accepted ({tokens} tokens) in {seconds:.0f} s; "
        f"429s {', '.join(f'{k} {v}' for k, v in sorted(throttled.items())) or 'none'}; errors {run.errors}; "
        f"early retries counted {early}"
    )
    print(f"  response time p50 {took[len(took) // 2] * 1000:.0f} ms, p99 {took[int(len(took) * 0.99)] * 1000:.0f} ms")
    print(
        "  tokens accepted per minute: "
        + ", ".join(f"{m} ({(m - TPM) / TPM:+.2%})" for m in minutes)
        + f" against {TPM}: {'OK' if ok_tokens else 'OUT OF ±2 %'}"
    )
    print(
        f"  any 60 s window (every 0.5 s, {len(sliding)} windows): least {min(sliding)}, most {max(sliding)} "
        f"(acceptance comes in bursts of the request window; a window that cuts one reads low)"
    )
    print(
        f"  most requests accepted in any {window:g} s window: {most_requests} against {request_limit}: "
        f"{'OK' if ok_requests else 'ABOVE THE LIMIT'}"
    )
    return ok_tokens and ok_requests and max(sliding) <= TPM * (1 + TOLERANCE)


def report_ptu(label: str, run: Run, seconds: float, warmup: float, sims: list[str], capacity: float) -> bool:
    """Tokens admitted after the warm-up (which the free bucket lets through at once) against
    the deployment's capacity per minute."""
    accepted = sorted(run.accepted)
    burst = sum(c for t, c in accepted if t < warmup)
    measured = [(t, c) for t, c in accepted if warmup <= t < seconds]
    span = seconds - warmup
    per_minute = sum(c for _, c in measured) / span * 60
    sliding = []
    start = warmup
    while start + 60 <= seconds + 1e-9:
        sliding.append(sum(c for t, c in measured if start <= t < start + 60))
        start += 0.5
    views = [httpx.get(f"{s}/++/limits", headers={"api-key": API_KEY}).json() for s in sims]
    throttled = sum(v["throttled"].get(PTU_DEPLOYMENT, {}).get("utilization", 0) for v in views)
    early = sum(v["earlyRetries"].get(PTU_DEPLOYMENT, 0) for v in views)
    ok = abs(per_minute - capacity) <= capacity * TOLERANCE
    took = sorted(run.response_times)
    print(f"\n{label}")
    print(
        f"  {len(took)} requests, {len(accepted)} admitted; 429s {throttled}; errors {run.errors}; "
        f"early retries counted {early}"
    )
    print(f"  warm-up {warmup:.0f} s: {burst} tokens admitted (the free bucket, {capacity:.0f}, and the drain)")
    print(
        f"  measured {span:.0f} s: {len(measured)} requests, {sum(c for _, c in measured)} tokens, "
        f"{per_minute:,.0f} per minute against a capacity of {capacity:,.0f} "
        f"({(per_minute - capacity) / capacity:+.2%}): {'OK' if ok else 'OUT OF ±2 %'}"
    )
    if sliding:
        print(
            f"  any 60 s window after the warm-up (every 0.5 s, {len(sliding)} windows): least {min(sliding)} "
            f"({(min(sliding) - capacity) / capacity:+.2%}), most {max(sliding)} "
            f"({(max(sliding) - capacity) / capacity:+.2%})"
        )
    return ok


def start_sim(folder: Path, env: dict[str, str]) -> Process:
    """A simulator with the probe that stamps decisions; not waited for, so several start at once."""
    return simulator_process.start(
        [SIMULATOR, PROBE], cwd=folder, env={"SIMULATOR_API_KEY": API_KEY, "SIMULATOR_LATENCY": "false", **env}
    )


def wait_ready(sim: Process) -> None:
    try:
        simulator_process.wait_ready(sim, timeout=60)
    except simulator_process.StartError as e:
        raise SystemExit(str(e)) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=125, help="length of each load run (at least 60)")
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--no-redis", action="store_true", help="skip the two-replica runs")
    parser.add_argument("--ptu-seconds", type=float, default=90, help="measured length of each PTU run")
    parser.add_argument("--ptu-warmup", type=float, default=10, help="seconds before the PTU measurement starts")
    parser.add_argument(
        "--cases",
        default="cost,tpm,ptu",
        help="which parts to run, comma-separated: cost (the limiter's own), tpm, ptu",
    )
    args = parser.parse_args()
    seconds = max(60.0, args.seconds)
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    print(machine_line())
    ok = True
    if "cost" in cases:
        ok &= measure_cost()
    redis = None if args.no_redis else start_redis()
    folder = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    deployments = folder / "deployments.json"
    deployments.write_text(
        json.dumps(
            {
                DEPLOYMENT: {"model": "gpt-4o", "tokensPerMinute": TPM},
                PTU_DEPLOYMENT: {"model": PTU_MODEL, "sku": "ProvisionedManaged", "ptu": PTUS},
            }
        )
    )
    env = {"OPENAI_DEPLOYMENT_CONFIG_PATH": str(deployments)}
    try:
        if redis is not None and "cost" in cases:
            print(f"Redis round trip per check (sequential): {asyncio.run(redis_cost(redis[1])):.0f} µs")
        if "tpm" in cases:
            ok &= tpm_runs(args, seconds, folder, env, redis)
        if "ptu" in cases:
            ok &= ptu_runs(args, folder, env, redis)
    finally:
        if redis is not None:
            stop(redis[0])
        shutil.rmtree(folder, ignore_errors=True)
    print("\nAll within target." if ok else "\nSome figures are outside the target.")
    return 0 if ok else 1


def measure_cost() -> bool:
    print(f"\nLimiter cost per request, 100 deployments of {TPM} TPM, windows in memory (best of 3 runs):")
    ok = True
    for label, build, logged in (
        ("decision", False, False),
        ("+ 429 response objects", True, False),
        ("+ each 429 logged", True, True),
    ):
        cost = min((limiter_cost(build_429s=build, log_429s=logged) for _ in range(3)), key=lambda c: c["mean"])
        print(
            f"  {label:24} mean {cost['mean']:6.1f} µs (admitted {cost['admitted']:.1f}, refused "
            f"{cost['refused']:.1f}), p50 {cost['p50']:.1f}, p99 {cost['p99']:.1f}; {cost['n']} requests, "
            f"{cost['throttled']:.0%} refused"
        )
        if label == "decision":
            ok &= cost["mean"] <= 50
            print(f"  decision within 50 µs: {'OK' if cost['mean'] <= 50 else 'NO'}")
    return ok


def one_then_two(env: dict[str, str], folder: Path, redis, no_redis: bool, one, two) -> bool:
    """`one(url)` against one simulator, then `two(urls)` against two sharing Redis."""
    ok = True
    processes = []
    try:
        sim = start_sim(folder, env)
        processes.append(sim)
        wait_ready(sim)
        ok &= one(sim.url)
        sim.stop()
        if redis is None:
            print("\nTwo replicas: skipped (" + ("--no-redis" if no_redis else "redis-server not installed") + ")")
            return ok
        pair = [start_sim(folder, {**env, "RATE_LIMIT_REDIS_URL": redis[1]}) for _ in range(2)]
        processes += pair
        for sim in pair:
            wait_ready(sim)
        ok &= two([sim.url for sim in pair])
    finally:
        for sim in processes:
            sim.stop()
    return ok


def tpm_runs(args, seconds: float, folder: Path, env: dict[str, str], redis) -> bool:
    request_limit, window = 60, 10.0  # Azure's default: 6 RPM per 1,000 TPM, counted per 10 s

    def one(url: str) -> bool:
        print(f"\nOne simulator: {args.clients} clients above a quota of {TPM} TPM for {seconds:.0f} s …", flush=True)
        run = asyncio.run(hold_above_quota([url], args.clients, seconds, time.monotonic))
        return report("One simulator", run, seconds, [url], request_limit, window)

    def two(urls: list[str]) -> bool:
        print(f"\nTwo replicas sharing Redis: {args.clients} clients, round robin, for {seconds:.0f} s …", flush=True)
        run = asyncio.run(hold_above_quota(urls, args.clients, seconds, time.time))
        return report("Two replicas sharing one quota through Redis", run, seconds, urls, request_limit, window)

    return one_then_two(env, folder, redis, args.no_redis, one, two)


def ptu_runs(args, folder: Path, env: dict[str, str], redis) -> bool:
    from aoai.openai import catalogue

    figures = catalogue.provisioned(catalogue.MODELS[PTU_MODEL])
    capacity = PTUS * figures.input_tpm_per_ptu
    warmup = args.ptu_warmup
    seconds = warmup + max(60.0, args.ptu_seconds)
    what = (
        f"{args.clients} clients above a provisioned deployment ({PTU_MODEL}, {PTUS} PTUs: {capacity:,} a "
        f"minute, output × {figures.output_weight:g}, max_tokens {PTU_MAX_TOKENS}) for {seconds:.0f} s"
    )

    def load(urls: list[str], clock) -> Run:
        return asyncio.run(
            hold_above_quota(urls, args.clients, seconds, clock, PTU_DEPLOYMENT, PTU_MAX_TOKENS, figures.output_weight)
        )

    def one(url: str) -> bool:
        print(f"\nOne simulator: {what} …", flush=True)
        return report_ptu("Provisioned, one simulator", load([url], time.monotonic), seconds, warmup, [url], capacity)

    def two(urls: list[str]) -> bool:
        print(f"\nTwo replicas sharing Redis, round robin: {what} …", flush=True)
        return report_ptu(
            "Provisioned, two replicas sharing one bucket through Redis",
            load(urls, time.time),
            seconds,
            warmup,
            urls,
            capacity,
        )

    return one_then_two(env, folder, redis, args.no_redis, one, two)


if __name__ == "__main__":
    sys.exit(main())
