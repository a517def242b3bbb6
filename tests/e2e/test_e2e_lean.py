"""The lean launcher as users run it (`python addons/simulator.py`, what `aoai-simulator`,
`make run` and the container start): mitmdump's command line, a line per request only when
asked, scripts of one's own with -s, and a start it refuses ending in one line before its
port ever opens. (Every other test's simulator runs on it too,
unless SIMULATOR_TEST_LAUNCHER=mitmdump.)"""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest
import simulator_process
from conftest import start_simulator
from helpers import HELLO, deployment_url

CHAT = {"messages": HELLO, "max_tokens": 3}


def chat(sim, key: str) -> httpx.Response:
    return httpx.post(deployment_url(sim, "gpt-4o"), json=CHAT, headers={"api-key": key}, timeout=30)


def test_no_line_per_request_unless_asked_for(simulator_factory):
    quiet = simulator_factory({"SIMULATOR_LATENCY": "false"}, program=simulator_process.LEAN)
    lines = simulator_factory(
        {"SIMULATOR_LATENCY": "false"}, program=simulator_process.LEAN, args=["--set", "flow_detail=1"]
    )
    for sim in (quiet, lines):
        assert chat(sim, sim.key).status_code == 200
    time.sleep(0.5)  # the log is written as the flow ends
    line = "POST https://azure-openai-endpoint.invalid/openai/deployment"  # (mitmproxy cuts long URLs)
    assert line not in quiet.log()
    assert line in lines.log()


def test_a_script_of_ones_own_runs_after_the_simulator(simulator_factory, tmp_path):
    script = tmp_path / "stamp.py"
    script.write_text(
        "def response(flow):\n"
        "    # Sees the simulator's answer: it runs after the stages.\n"
        "    flow.response.headers['x-stamp'] = str(flow.response.status_code)\n"
    )
    sim = simulator_factory({"SIMULATOR_LATENCY": "false"}, program=simulator_process.LEAN, args=["-s", str(script)])
    answer = chat(sim, sim.key)
    assert answer.status_code == 200 and answer.headers["x-stamp"] == "200"
    refused = chat(sim, "not-the-key")
    assert refused.status_code == 401 and refused.headers["x-stamp"] == "401"


def test_the_simulators_own_script_given_with_s_is_not_loaded_twice(simulator_factory, tmp_path):
    # As one would start mitmdump: the launcher has the stages already, so a second copy (which
    # would refuse to start: its options are declared twice) is left out, and said so.
    script = tmp_path / "stamp.py"
    script.write_text("def response(flow):\n    flow.response.headers['x-stamp'] = 'own'\n")
    own = str(simulator_process.ROOT / "addons" / "simulator.py")
    sim = simulator_factory(
        {"SIMULATOR_LATENCY": "false"}, program=simulator_process.LEAN, args=["-s", own, "-s", str(script)]
    )
    answer = chat(sim, sim.key)
    assert answer.status_code == 200 and answer.headers["x-stamp"] == "own"
    assert "that script is not loaded again" in sim.log()


def test_a_bad_setting_on_the_command_line_stops_it_in_one_line_before_the_port_opens(tmp_path):
    sim = start_simulator(tmp_path, args=["--set", "simulator_mode=bogus"], wait=False, program=simulator_process.LEAN)
    try:
        connected = 0
        deadline = time.monotonic() + 40
        while sim.process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", sim.port), timeout=0.2):
                    connected += 1
            except OSError:
                time.sleep(0.005)
        code = sim.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the simulator kept running:\n{sim.log()}")
    finally:
        sim.stop()
    assert code != 0
    assert connected == 0, sim.log()
    lines = [line for line in sim.log().splitlines() if line.strip()]
    assert len(lines) == 1 and "Cannot start the simulator" in lines[0] and "bogus" in lines[0], sim.log()
