"""Shared fixtures: a real `mitmdump -s addons/simulator.py` on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from processes import free_port, stop_process  # noqa: F401  (free_port: for the test modules)

ROOT = Path(__file__).resolve().parent.parent
MITMDUMP = Path(sys.executable).with_name("mitmdump")
API_KEY = "test-key-0123456789"
API_VERSION = "2024-10-21"


@dataclass
class Simulator:
    process: subprocess.Popen
    port: int
    key: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def start_simulator(tmp_path: Path, env: dict[str, str] | None = None, args: list[str] | None = None,
                    script: str = "addons/simulator.py", wait: bool = True, program: str = "mitmdump") -> Simulator:
    """Start mitmdump (or mitmweb) with the simulator; the environment is cleaned of the
    caller's settings. Answers are seeded so that a test never meets a rare draw (a 3-token
    natural answer to a max_tokens=5 request) by chance; pass SIMULATOR_SEED="" for fresh
    randomness."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SIMULATOR_", "AZURE_OPENAI", "LATENCY_", "RECORDING_", "OPENAI_"))}
    full_env.update({"SIMULATOR_API_KEY": API_KEY, "RECORDING_DIR": str(tmp_path / "recordings"),
                     "SIMULATOR_SEED": "1"})
    full_env.update(env or {})
    log_path = tmp_path / f"mitmdump-{port}.log"
    command = [str(MITMDUMP.with_name(program)), "-s", str(ROOT / script),
               "--listen-host", "127.0.0.1", "-p", str(port), *(args or [])]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    sim = Simulator(process, port, full_env["SIMULATOR_API_KEY"], log_path)
    if wait:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"simulator exited with {process.returncode}:\n{sim.log()}")
            try:
                if httpx.get(f"{sim.url}/++/health", timeout=1).status_code == 200:
                    return sim
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        sim.stop()
        raise RuntimeError(f"simulator did not become ready:\n{sim.log()}")
    return sim


@pytest.fixture
def simulator_factory(tmp_path) -> Iterator:
    """Start simulators with given environment variables; all are stopped after the test."""
    started: list[Simulator] = []

    def factory(env: dict[str, str] | None = None, **kwargs) -> Simulator:
        sim = start_simulator(tmp_path, env, **kwargs)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory) -> Iterator[Simulator]:
    """One generate-mode simulator shared by a test module, with latency off."""
    sim = start_simulator(tmp_path_factory.mktemp("sim"), {"SIMULATOR_LATENCY": "false"})
    yield sim
    sim.stop()
