"""Start, wait for and stop the simulator on a free loopback port: on its lean master
(`python addons/simulator.py`, program LEAN), in mitmdump or mitmweb (`-s`), or a bare
mitmdump as a baseline. One helper for the tests and the benchmarks, so they all
start it the same way, clean the same settings out of the environment and stop it the same
way.

    server = start(SIMULATOR, cwd=folder, env={"SIMULATOR_API_KEY": "key"})
    try:
        wait_ready(server)
        ...  # requests to server.url
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The launchers' helpers live in the package (the installed `aoai-simulator` uses them too).
if str(ROOT / "addons") not in sys.path:
    sys.path.insert(0, str(ROOT / "addons"))

from aoai.launch.processes import (  # noqa: E402
    LOG_TAIL_LINES,
    SETTINGS_PREFIXES,
    Process,
    StartError,
    free_port,
    lean_command,
    program_path,
    start_redis,
    stop,
    wait_ready,
)

__all__ = [
    "LEAN",
    "LOG_TAIL_LINES",
    "ROOT",
    "SETTINGS_PREFIXES",
    "SIMULATOR",
    "WORKERS_BANNER",
    "Process",
    "StartError",
    "clean_env",
    "free_port",
    "program_path",
    "start",
    "start_redis",
    "start_workers",
    "stop",
    "wait_ready",
]

SIMULATOR = ROOT / "addons" / "simulator.py"
LEAN = "lean"  # as `program`: the first script run as a program (the lean launcher), the rest with -s


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the simulator's settings, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    env.update(extra or {})
    return env


def start(
    scripts: str | Path | Iterable[str | Path],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    program: str = "mitmdump",
    extra_args: Iterable[str] = (),
    label: str | None = None,
) -> Process:
    """Launch `program -s SCRIPT... --listen-host 127.0.0.1 -p PORT EXTRA_ARGS` in `cwd` (with
    program LEAN: `python SCRIPT -s MORE_SCRIPT... ...`), with the cleaned environment plus
    `env`, its output in `cwd/LABEL-PORT.log`. It does not wait: see wait_ready."""
    scripts = [scripts] if isinstance(scripts, (str, Path)) else list(scripts)
    port = port or free_port()
    label = label or program
    full_env = clean_env(env)
    if program == LEAN:
        first, *scripts = scripts
        start_with = lean_command(Path(first))
    else:
        start_with = [str(program_path(program))]
    command = [
        *start_with,
        *(a for s in scripts for a in ("-s", str(s))),
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        *extra_args,
    ]
    log_path = Path(cwd) / f"{label}-{port}.log"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    return Process(process, port, full_env.get("SIMULATOR_API_KEY", ""), log_path, label, started)


WORKERS_BANNER = "behind HAProxy"  # in scripts/workers.py's start-up lines, once it serves


def start_workers(
    count: int,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    extra_args: Iterable[str] = (),
) -> Process:
    """scripts/workers.py: `count` simulators behind HAProxy on a free loopback port, with the
    cleaned environment plus `env`, its output in `cwd/workers-PORT.log`. It does not wait:
    `wait_ready(pool, after_log=WORKERS_BANNER)`."""
    port = port or free_port()
    full_env = clean_env(env)
    extra = list(extra_args)
    command = [
        sys.executable,
        str(ROOT / "scripts" / "workers.py"),
        "--workers",
        str(count),
        "--port",
        str(port),
        "--listen-host",
        "127.0.0.1",
        *(["--", *extra] if extra else []),
    ]
    log_path = Path(cwd) / f"workers-{port}.log"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    return Process(process, port, full_env.get("SIMULATOR_API_KEY", ""), log_path, "workers", started)
