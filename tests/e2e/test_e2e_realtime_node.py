"""The Realtime API through the openai Node SDK's realtime client (`OpenAIRealtimeWS`), over
TLS as it always connects (wss): one text turn on the GA path and one on the preview path.
Skipped where node or the SDK is missing: `make node-sdk` installs the SDK and `ws` into
.cache/node-openai (.ci/run does it; the test itself reaches nothing but loopback)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import API_KEY, ROOT, start_simulator

SCRIPT = Path(__file__).parent / "node" / "realtime_turn.mjs"
CACHE = ROOT / ".cache" / "node-openai"


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (CACHE / "node_modules" / "openai").exists():
        pytest.skip("the openai Node SDK is not installed: make node-sdk (.ci/run does it)")
    script = CACHE / SCRIPT.name  # beside node_modules, so its imports resolve
    script.write_text(SCRIPT.read_text())
    return script


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("realtime-node")
    conf = folder / "mitmproxy"
    sim = start_simulator(folder, {"SIMULATOR_LATENCY": "false"}, args=["--set", f"confdir={conf}"])
    yield sim, conf / "mitmproxy-ca-cert.pem"
    sim.stop()


@pytest.mark.parametrize(
    "flavour,text_delta", [("ga", "response.output_text.delta"), ("preview", "response.text.delta")]
)
def test_a_text_turn_with_the_node_sdk(node_sdk, tls_sim, flavour, text_delta):
    sim, ca = tls_sim
    run = subprocess.run(
        ["node", str(node_sdk), flavour, f"https://localhost:{sim.port}", API_KEY, "gpt-realtime"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    events = run.stdout.split()
    assert events[0] == "session.created" and text_delta in events and events[-1] == "status=completed"
