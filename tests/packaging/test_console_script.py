"""`pip install .` into a new virtual environment gives the `aoai-simulator` command: the
simulator on its lean launcher, from the installed package (not the checkout), with mitmdump's
options passed through; `--workers 2` behind HAProxy where
HAProxy and Redis are installed.

No network: the new environment reaches the project's installed packages (mitmproxy and the
rest) through a path file, and pip builds with the setuptools already installed here."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
import simulator_process
from conftest import API_KEY, API_VERSION, ROOT
from simulator_process import Process, clean_env, free_port, wait_ready
from workers import haproxy_path

pytest.importorskip("setuptools", reason="the build backend (requirements-test.txt) installs the project offline")

CHAT = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new virtual environment with the project installed in it, as `pip install .` would."""
    folder = tmp_path_factory.mktemp("install")
    source = folder / "source"  # a copy: the build leaves its own files beside the sources
    shutil.copytree(ROOT / "addons", source / "addons", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, source)
    env = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (and pip, and setuptools) from the environment running the tests.
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        check=True,
        timeout=300,
    )
    return env


def launch(venv: Path, folder: Path, port: int, args: list[str]) -> Process:
    log_path = folder / f"aoai-simulator-{port}.log"
    env = clean_env({"SIMULATOR_API_KEY": API_KEY, "RECORDING_DIR": str(folder / "recordings")})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [venv / "bin" / "aoai-simulator", *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return Process(process, port, API_KEY, log_path, "aoai-simulator", time.perf_counter())


def chat(server: Process) -> httpx.Response:
    return httpx.post(
        f"{server.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
        headers={"api-key": API_KEY},
        json=CHAT,
        timeout=30,
    )


def test_the_installed_command_runs_the_installed_simulator(venv, tmp_path):
    port = free_port()
    certs = tmp_path / "certs"
    server = launch(venv, tmp_path, port, ["--listen-host", "127.0.0.1", "-p", str(port), "--set", f"confdir={certs}"])
    try:
        wait_ready(server, timeout=60)
        answer = chat(server)
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "chat.completion"
        loaded = server.log().split("Loaded the simulator from ")[1].split()[0]
        assert Path(loaded).is_relative_to(venv) and Path(loaded).name == "aoai", loaded
        assert (certs / "mitmproxy-ca-cert.pem").exists()  # the --set reached mitmproxy
    finally:
        server.stop()


def test_the_installed_command_refuses_a_bad_worker_count(venv):
    done = subprocess.run(
        [venv / "bin" / "aoai-simulator", "--workers", "none"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--workers: expected a whole number, got 'none'" in done.stderr


@pytest.mark.skipif(
    haproxy_path() is None or shutil.which("redis-server") is None, reason="--workers needs haproxy and redis-server"
)
def test_the_installed_command_runs_workers_behind_haproxy(venv, tmp_path):
    port = free_port()
    args = ["--workers", "2", "--listen-host", "127.0.0.1", "-p", str(port), "--set", f"confdir={tmp_path / 'certs'}"]
    server = launch(venv, tmp_path, port, args)
    try:
        wait_ready(server, after_log=simulator_process.WORKERS_BANNER, timeout=90)
        assert f"2 workers behind HAProxy on http://127.0.0.1:{port}" in server.log()
        answer = chat(server)
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "chat.completion"
    finally:
        server.stop(timeout=20)


def test_the_installed_pytest_plugin_loads_by_itself_and_starts_the_installed_simulator(venv, tmp_path):
    """The `pytest11` entry point: a suite outside the checkout gets the fixture without `-p`."""
    (tmp_path / "test_installed.py").write_text(
        "import aoai_simulator\n"
        "from aoai.launch import processes\n\n"
        "def test_chat(aoai_simulator):\n"
        "    import aoai_simulator as plugin\n"
        "    assert str(plugin.__file__).startswith(PREFIX), plugin.__file__\n"
        "    assert str(processes.SIMULATOR).startswith(PREFIX), processes.SIMULATOR\n"
        "    client = aoai_simulator.azure_client(max_retries=0)\n"
        "    answer = client.chat.completions.create(\n"
        "        model='gpt-4o', messages=[{'role': 'user', 'content': 'Hello!'}], max_tokens=5)\n"
        "    assert answer.choices[0].message.content\n"
        f"\nPREFIX = {str(venv)!r}\n"
    )
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_installed.py"],
        cwd=tmp_path,
        env=clean_env({"PYTHONPATH": ""}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
