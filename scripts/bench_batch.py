#!/usr/bin/env python3
"""What a large batch job costs the simulator: chat jobs of 10,000 and 50,000 lines (by
default) in generate mode with every wait at zero (BATCH_VALIDATING_SECONDS,
BATCH_LINE_SECONDS and BATCH_FINALIZING_SECONDS 0, latency off), one after the other, each on
a fresh simulator:

* wall time from the create call to `completed` (the batch polled every 100 ms), and lines
  per second;
* the simulator process's peak resident memory (VmHWM in /proc/<pid>/status): before the job,
  when it completes, and after its output file is downloaded;
* the event loop's responsiveness meanwhile: `/++/health` asked every 50 ms, p50/p99/max of
  its latency, as an online client beside the job would feel it.

This is a benchmark that prints figures, not a test: it exits 0 whatever it measures (unless
a simulator fails to start or a job does not complete).

    python scripts/bench_batch.py [--lines 10000 50000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
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

DEPLOYMENT = "gpt-4o-batch"
BANNER = "Azure OpenAI simulator:"
STARTUP_SETTLE_S = 1.0
HEALTH_EVERY_S = 0.05
POLL_S = 0.1


@contextmanager
def simulator() -> Iterator[tuple[Simulator, Path]]:
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        tmp = Path(folder)
        deployments = tmp / "deployments.json"
        deployments.write_text(json.dumps({DEPLOYMENT: {"model": "gpt-4o", "sku": "GlobalBatch"}}), encoding="utf-8")
        env = {
            "SIMULATOR_API_KEY": secrets.token_hex(16),
            "SIMULATOR_LATENCY": "false",
            "RECORDING_DIR": str(tmp / "recordings"),
            "OPENAI_DEPLOYMENT_CONFIG_PATH": str(deployments),
            "BATCH_VALIDATING_SECONDS": "0",
            "BATCH_LINE_SECONDS": "0",
            "BATCH_FINALIZING_SECONDS": "0",
        }
        sim = simulator_process.start(SIMULATOR, cwd=tmp, env=env)
        try:
            simulator_process.wait_ready(sim, after_log=BANNER, settle=STARTUP_SETTLE_S, timeout=120)
            yield sim, tmp
        finally:
            sim.stop()


def input_file(lines: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"task-{i}",
                "method": "POST",
                "url": "/chat/completions",
                "body": {
                    "model": DEPLOYMENT,
                    "messages": [{"role": "user", "content": f"Tell me about item {i}."}],
                    "max_tokens": 32,
                },
            }
        ).encode()
        + b"\n"
        for i in range(lines)
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class HealthProbe(threading.Thread):
    """Asks /++/health every 50 ms on its own connection; keeps each latency in ms."""

    def __init__(self, sim: Simulator):
        super().__init__(daemon=True)
        self.url = f"{sim.url}/++/health"
        self.times: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.is_set():
                started = time.perf_counter()
                client.get(self.url)
                spent = time.perf_counter() - started
                self.times.append(spent * 1000)
                self.stopping.wait(max(0.0, HEALTH_EVERY_S - spent))


def run_job(sim: Simulator, lines: int) -> dict[str, float]:
    data = input_file(lines)
    with httpx.Client(base_url=f"{sim.url}/openai/v1", headers={"api-key": sim.key}, timeout=120) as client:
        uploaded = client.post("/files", data={"purpose": "batch"}, files={"file": ("input.jsonl", data)})
        uploaded.raise_for_status()
        before = peak_rss_mib(sim.process.pid)
        probe = HealthProbe(sim)
        probe.start()
        started = time.perf_counter()
        made = client.post(
            "/batches",
            json={"input_file_id": uploaded.json()["id"], "endpoint": "/chat/completions", "completion_window": "24h"},
        )
        made.raise_for_status()
        while True:
            batch = client.get(f"/batches/{made.json()['id']}").json()
            if batch["status"] in ("completed", "failed", "cancelled", "expired"):
                break
            time.sleep(POLL_S)
        wall = time.perf_counter() - started
        probe.stopping.set()
        probe.join()
        peak_job = peak_rss_mib(sim.process.pid)
        if batch["status"] != "completed" or batch["request_counts"]["completed"] != lines:
            raise RuntimeError(f"the job did not complete: {json.dumps(batch)[:500]}")
        output = client.get(f"/files/{batch['output_file_id']}/content")
        if output.content.count(b"\n") != lines:
            raise RuntimeError("the output file does not have one line per request")
    return {
        "wall_s": wall,
        "lines_per_s": lines / wall,
        "rss_before_mib": before,
        "rss_peak_mib": peak_job,
        "rss_after_download_mib": peak_rss_mib(sim.process.pid),
        "health_p50_ms": percentile(probe.times, 50),
        "health_p99_ms": percentile(probe.times, 99),
        "health_max_ms": max(probe.times),
        "health_samples": len(probe.times),
        "output_mib": len(output.content) / 1024 / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 50_000], help="lines of each job")
    args = parser.parse_args()

    measured: dict[int, dict[str, float]] = {}
    for lines in args.lines:
        with simulator() as (sim, _):
            measured[lines] = run_job(sim, lines)

    print(machine_line())
    print("chat jobs in generate mode, every batch wait 0, latency off; one fresh simulator per job\n")
    print(
        f"{'lines':>7} {'wall s':>8} {'lines/s':>8} {'RSS MiB before':>15} {'peak':>6} {'+download':>10} "
        f"{'health p50 ms':>14} {'p99':>6} {'max':>7} {'output MiB':>11}"
    )
    for lines, m in measured.items():
        print(
            f"{lines:>7} {m['wall_s']:>8.1f} {m['lines_per_s']:>8.0f} {m['rss_before_mib']:>15.0f} "
            f"{m['rss_peak_mib']:>6.0f} {m['rss_after_download_mib']:>10.0f} {m['health_p50_ms']:>14.1f} {m['health_p99_ms']:>6.1f} "
            f"{m['health_max_ms']:>7.1f} {m['output_mib']:>11.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
