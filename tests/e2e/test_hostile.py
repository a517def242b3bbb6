"""The hostile suite in its short form (scripts/hostile.py --short; `make hostile` is the
long one): each hostile case against a real simulator, with its memory and
/++/health lag measured, and a few hundred mutation-fuzzer rounds. A failure names each
case that missed its target, with the suite's table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from workers import haproxy_path

pytestmark = pytest.mark.serial  # it measures memory and event-loop lag under load

SCRIPT = ROOT / "scripts" / "hostile.py"


def run_suite(tmp_path, *args: str, timeout: float = 600) -> list[dict]:
    out = tmp_path / "hostile.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--short", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if not out.exists():
        raise AssertionError(f"the suite ended with {done.returncode} and wrote no results:\n{done.stderr[-4000:]}")
    results = json.loads(out.read_text())
    failed = [r for r in results if r["failures"]]
    assert not failed and done.returncode == 0, "\n".join(
        [f"{r['case']}: {'; '.join(r['failures'])}" for r in failed] + ["", done.stdout[-8000:]]
    )
    return results


def test_hostile_requests_answer_4xx_within_memory_and_lag(tmp_path):
    results = run_suite(tmp_path, "--only", "main,record")
    assert {r["class"] for r in results} == {"memory", "stall", "error", "boundary"}


@pytest.mark.skipif(
    haproxy_path() is None or shutil.which("redis-server") is None,
    reason="haproxy and redis-server are needed for workers (.ci/run installs them)",
)
def test_hostile_requests_to_workers(tmp_path):
    results = run_suite(tmp_path, "--only", "workers")
    assert len(results) == 3 and not any(r["skipped"] for r in results)


def test_mutation_fuzzer_finds_no_5xx_stall_or_memory_rise(tmp_path):
    (result,) = run_suite(tmp_path, "--only", "fuzz")
    assert result["case"] == "fuzz" and sum(result["statuses"].values()) == 300
