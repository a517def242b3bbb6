"""The Makefile's commands as the README and the examples give them: `make run ARGS="..."`
passes mitmproxy options on (one simulator, workers, mitmweb), and the fault injector's own
command runs as written."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess

import httpx
import pytest
from conftest import API_KEY, API_VERSION, ROOT
from simulator_process import Process, clean_env, free_port, wait_ready

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

ARGS = "--set fault_error_share=0.2 --set 'confdir=/a b'"


def dry_run(*make_args: str) -> str:
    """The commands make would run (nothing runs: -n)."""
    done = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", *make_args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


@pytest.mark.parametrize(
    ("make_args", "command"),
    [
        (["run"], ".venv/bin/python addons/simulator.py"),
        (["run", "WORKERS=2"], ".venv/bin/python scripts/workers.py --workers 2 --"),
        (["web"], ".venv/bin/mitmweb -s addons/simulator.py"),
    ],
)
def test_args_reach_mitmproxy(make_args, command):
    assert f"{command} {ARGS}\n" in dry_run(*make_args, f"ARGS={ARGS}")


def test_without_args_the_commands_are_the_usual_ones():
    assert ".venv/bin/python addons/simulator.py \n" in dry_run("run")  # (ARGS is empty)


def test_the_fault_injectors_own_command_works(tmp_path):
    source = (ROOT / "examples" / "fault_injector.py").read_text()
    command = re.search(r"^ +(EXTENSION_PATH=examples/fault_injector.py make run .*)$", source, re.M).group(1)
    assert 'ARGS="--set fault_error_share=0.2"' in command
    port = free_port()
    # On a free loopback port, and without checking the install (the environment is the tests' own).
    command = command.replace("make run", "make -o .venv/.installed run").replace(
        'ARGS="', f'ARGS="--listen-host 127.0.0.1 -p {port} --set confdir={shlex.quote(str(tmp_path / "certs"))} '
    )
    log_path = tmp_path / "make-run.log"
    env = clean_env({"SIMULATOR_API_KEY": API_KEY, "RECORDING_DIR": str(tmp_path / "recordings")})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Process(process, port, API_KEY, log_path, "make run", 0.0)
    try:
        wait_ready(server, timeout=60)
        statuses = set()
        with httpx.Client(base_url=server.url, headers={"api-key": API_KEY}, timeout=30) as client:
            for _ in range(200):  # a fifth of them fail: none in 200 is a chance of 0.8**200
                answer = client.post(
                    f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
                    json={"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5},
                )
                statuses.add(answer.status_code)
                if statuses == {200, 503}:
                    break
        assert statuses == {200, 503}, server.log(40)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # make and the mitmdump it started
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_install_says_what_it_does_and_shows_pips_progress():
    done = subprocess.run(
        ["make", "-n", "-B", "install"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    steps = done.stdout.splitlines()
    install = next(s for s in steps if "-r requirements.txt" in s)
    assert "--quiet" not in install
    assert steps.index(install) > next(i for i, s in enumerate(steps) if s.startswith('echo "Creating .venv'))
    assert "about a minute" in done.stdout
