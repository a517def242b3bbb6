"""The process helpers the launchers, the tests and the benchmarks share: a free loopback
port, the simulator's command line (its lean launcher), waiting until a process serves, stopping it, and a throwaway
Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# Beside the `aoai` package: addons/simulator.py in a checkout, the installed copy after `pip install .`.
SIMULATOR = Path(__file__).resolve().parents[2] / "simulator.py"
LOG_TAIL_LINES = 60  # of the log quoted when a start fails


class StartError(RuntimeError):
    """The process exited or did not become ready in time; the message ends with its log."""


# The prefixes of the simulator's settings in the environment: a caller's own (a developer's
# shell, a CI job) are kept out of a simulator started for a test or a benchmark.
SETTINGS_PREFIXES = (
    "SIMULATOR_",
    "AZURE_OPENAI",
    "LATENCY_",
    "RECORDING_",
    "REPLAY_",
    "OPENAI_",
    "RATE_LIMIT_",
    "EXTENSION_PATH",
    "DOC_INTELLIGENCE_",
    "PTU_",
    "RESPONSES_",
    "PROMPT_CACHE_",
    "BATCH_",
    "FILES_",
    "REALTIME_",
    "LOG_LEVEL",
    "OTEL_",
)


def free_port() -> int:
    """A port free on the loopback interface now (another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program_path(program: str = "mitmdump") -> Path:
    """The program beside the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name(program)
    if beside.exists():
        return beside
    return Path(shutil.which(program) or beside)


def lean_command(script: Path = SIMULATOR) -> list[str]:
    """How to start the simulator on its lean master (aoai/launch/lean.py): the simulator's
    script run as a program by this interpreter, followed by mitmdump's options."""
    return [sys.executable, str(script)]


@dataclass
class Process:
    process: subprocess.Popen
    port: int
    key: str  # SIMULATOR_API_KEY it was given ("" for none)
    log_path: Path  # its stdout and stderr
    label: str  # names it in errors
    started: float  # time.perf_counter() just before launch

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, tail: int | None = None) -> str:
        """Its output so far; with `tail`, only the last lines."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        stop(self.process, timeout)


def wait_ready(
    server: Process,
    path: str | None = "/++/health",
    *,
    timeout: float = 30,
    poll: float = 0.1,
    after_log: str | None = None,
    settle: float = 0.0,
) -> None:
    """Wait until GET `path` answers 200 (the simulator's health says 503 until its stages
    have started), or with path None until the port accepts (a bare mitmdump). With
    `after_log`, nothing is sent before that text is in the log, and then not for `settle`
    seconds more: for load that must not meet the end of start-up, when a request that logs
    an error makes mitmdump exit with "Errors logged during startup". Raises StartError,
    with the log's tail, if the process exits or is not ready within `timeout` seconds (it
    is then stopped)."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        if not server.alive():
            raise StartError(f"{server.label} exited with {server.process.returncode}:\n{server.log(LOG_TAIL_LINES)}")
        if time.monotonic() > deadline:
            server.stop()
            raise StartError(f"{server.label} was not ready after {timeout:g} s:\n{server.log(LOG_TAIL_LINES)}")

    if after_log is not None:
        while after_log not in server.log():
            check()
            time.sleep(min(poll, 0.05))
        time.sleep(settle)
    while True:
        check()
        try:
            if path is None:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                    return
            elif httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(poll)


def stop(process: subprocess.Popen | Process, timeout: float = 10) -> None:
    """SIGTERM, as a service manager would; SIGKILL if it has not exited after `timeout` s."""
    if isinstance(process, Process):
        process = process.process
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_redis(timeout: float = 10) -> tuple[subprocess.Popen, str] | None:
    """A throwaway redis-server on a free loopback port, saving nothing: the process and its
    URL, once it answers PING; None where redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise StartError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise StartError(f"redis-server did not answer within {timeout:g} s")
        time.sleep(0.05)
