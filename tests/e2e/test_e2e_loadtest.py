"""The load-test kit end to end: the CI driver against a real simulator with latency and a
small token quota, and the Locust file under Locust when Locust is installed.

Timing bounds are generous: the driver shares two cores with mitmdump.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys

import pytest
from conftest import ROOT

DRIVER = ROOT / "loadtest" / "driver.py"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
TTFT_MS = 200
ITL_MS = 10
# A token quota small enough that a few seconds of chat run out of it (each request reserves
# its prompt plus max_tokens), and a request quota high enough not to be the limit.
DEPLOYMENTS = {
    "chat": {
        "model": "gpt-4o",
        "tokensPerMinute": 600,
        "requestsPerMinute": 6000,
        "latency": {
            "timeToFirstTokenMs": {"mean": TTFT_MS, "stdDev": 20},
            "interTokenMs": {"mean": ITL_MS, "stdDev": 2},
        },
    },
    "embed": {"model": "text-embedding-3-small", "latency": {"requestMs": {"mean": 30, "stdDev": 5}}},
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def throttled_simulator(simulator_factory, tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    return simulator_factory({"OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)})


def run_driver(sim, out, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(DRIVER),
        "--url",
        sim.url,
        "--key",
        sim.key,
        "--duration",
        "4",
        "--concurrency",
        "4",
        "--mix",
        "chat=0.4,stream=0.4,embeddings=0.2",
        "--deployment",
        "chat",
        "--embedding-deployment",
        "embed",
        "--max-tokens",
        "10",
        "--seed",
        "7",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=90)


def test_driver_reports_throughput_429s_and_latency(throttled_simulator, tmp_path):
    out = tmp_path / "report" / "run"
    done = run_driver(throttled_simulator, out, "--expected-itl-ms", str(ITL_MS))
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads(out.with_name("run.json").read_text())
    text = out.with_name("run.txt").read_text()
    assert text in done.stdout  # the same report on stdout and in the file
    assert "TTFT" in text and "ITL" in text and "429" in text

    assert summary["requests"] > 0 and summary["ok"] > 0
    assert summary["throughput_rps"] > 0 and summary["ok_rps"] > 0
    assert summary["statuses"].get("429", 0) == summary["throttled"] > 0
    assert 0 < summary["throttled_share"] < 1
    assert summary["errors"] == 0, summary["first_errors"]

    ttft = summary["ttft_ms"]
    # Taken from the simulator's /++/config, since the command line did not give it.
    assert ttft["expected"] == TTFT_MS
    assert summary["itl_ms"]["expected"] == ITL_MS
    assert ttft["count"] > 0 and summary["itl_ms"]["count"] > 0
    assert 0.7 * TTFT_MS <= ttft["p50"] <= TTFT_MS + 400, ttft
    assert ttft["p50"] <= ttft["p90"] <= ttft["p99"]

    png = out.with_name("run.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    # The first chunk is IHDR: width and height of a real picture.
    length, chunk, width, height = struct.unpack(">I4sII", png[8:24])
    assert chunk == b"IHDR" and length == 13 and width > 100 and height > 100


def test_driver_rejects_a_bad_mix(tmp_path):
    done = subprocess.run(
        [sys.executable, str(DRIVER), "--mix", "chat=1,images=2", "--no-chart", "--out", str(tmp_path / "r")],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--mix" in done.stderr and "images" in done.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="locust is not installed (pip install -r loadtest/requirements.txt)",
)
def test_locustfile_loads_under_locust():
    # In a child process: importing locust patches the standard library for gevent.
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--list"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AzureOpenAIUser" in done.stdout
