"""Shared fixtures: a real simulator process on a free loopback port (its lean launcher,
`python addons/simulator.py`; with SIMULATOR_TEST_LAUNCHER=mitmdump, `mitmdump -s
addons/simulator.py`), or the same stack of stages in this process (tests/inprocess.py)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import inprocess
import pytest
import simulator_process
from simulator_process import ROOT, SETTINGS_PREFIXES, free_port  # noqa: F401  (for the test modules)
from simulator_process import Process as Simulator

# pytest's own tester, for the pytest plugin's tests (tests/plugin).
pytest_plugins = ["pytester"]

# The container image's test (tests/image) builds and runs images, which takes a container
# engine and minutes: `make image-test` runs it (AOAI_IMAGE_TEST=1), `make test` does not.
collect_ignore = [] if os.environ.get("AOAI_IMAGE_TEST") else ["image"]


def pytest_terminal_summary(terminalreporter) -> None:
    """What the image test measured (build times, sizes), after its results."""
    image_engine = sys.modules.get("image_engine")
    if image_engine is not None and image_engine.FIGURES:
        terminalreporter.section("the image, measured")
        for name, value in image_engine.FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


API_KEY = "test-key-0123456789"
API_VERSION = "2024-10-21"

# How the tests' simulators start: "lean" (the launcher users run) or "mitmdump" (-s), the
# compatible path; tests of mitmweb or of a given program name it themselves.
LAUNCHER = os.environ.get("SIMULATOR_TEST_LAUNCHER", "").strip() or simulator_process.LEAN
if LAUNCHER not in (simulator_process.LEAN, "mitmdump"):
    raise pytest.UsageError(f"SIMULATOR_TEST_LAUNCHER: expected lean or mitmdump, got {LAUNCHER!r}")


def start_simulator(
    tmp_path: Path,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    script: str = "addons/simulator.py",
    wait: bool = True,
    program: str | None = None,
) -> Simulator:
    """Start the simulator on LAUNCHER (or `program`: "mitmweb", "mitmdump", "lean"); the
    environment is cleaned of the caller's settings. Answers are seeded so that a test never
    meets a rare draw (a 3-token natural answer to a max_tokens=5 request) by chance; pass
    SIMULATOR_SEED="" for fresh randomness."""
    sim = simulator_process.start(
        ROOT / script,
        cwd=tmp_path,
        program=program or LAUNCHER,
        extra_args=args or (),
        env={
            "SIMULATOR_API_KEY": API_KEY,
            "RECORDING_DIR": str(tmp_path / "recordings"),
            "SIMULATOR_SEED": "1",
            **(env or {}),
        },
    )
    if wait:
        simulator_process.wait_ready(sim)
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


# --- the whole stack in this process (tests/inprocess.py) ---------------------------------------


@contextlib.contextmanager
def stack_environment(folder: Path, env: dict[str, str] | None) -> Iterator[None]:
    """The environment and working folder an end-to-end simulator gets, for as long as the
    in-process stack runs: the caller's simulator settings removed, then the tests' own."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(SETTINGS_PREFIXES):
                patch.delenv(name)
        for name, value in inprocess.simulator_environment(env, str(folder / "recordings")).items():
            patch.setenv(name, value)
        patch.chdir(folder)
        yield


@pytest.fixture
def stack_factory(tmp_path) -> Iterator:
    """Start in-process stacks with given environment variables (latency off unless set), each
    in its own folder; all are stopped after the test."""
    started: list[tuple[inprocess.Stack, contextlib.ExitStack]] = []

    def factory(env: dict[str, str] | None = None) -> inprocess.Stack:
        folder = tmp_path / f"stack{len(started)}"
        folder.mkdir()
        exits = contextlib.ExitStack()
        exits.enter_context(stack_environment(folder, env))
        try:
            stack = inprocess.Stack.start()
        except BaseException:
            exits.close()
            raise
        started.append((stack, exits))
        return stack

    yield factory
    for stack, exits in reversed(started):
        try:
            stack.stop()
        finally:
            exits.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[inprocess.Stack]:
    """One in-process simulator (generate mode, latency off) shared by a test module."""
    with stack_environment(tmp_path_factory.mktemp("stack"), None):
        running = inprocess.Stack.start()
        yield running
        running.stop()


# --- markers by folder, and tests that run alone -----------------------------------------------

FOLDER_MARKS = {
    "unit": "unit",
    "stack": "stack",
    "e2e": "e2e",
    "contract": "contract",
    "packaging": "packaging",
    "plugin": "plugin",
    "examples": "examples",
    "image": "image",
}
TESTS = Path(__file__).resolve().parent


# The order files are handed out to pytest-xdist workers (make test passes --no-loadscope-reorder,
# which keeps it): files with a `serial` test first, so that no worker idles at the end waiting
# for one; then the folders whose tests wait on processes; the many short unit files last, to
# even out the workers' finish.
FOLDER_ORDER = {"e2e": 1, "packaging": 1, "plugin": 1, "examples": 1, "stack": 2, "contract": 2, "unit": 3}


def folder_of(path: Path) -> str:
    """tests/<folder>/…, or `examples` for an example application's tests."""
    path = Path(path).resolve()
    if path.is_relative_to(TESTS):
        return path.relative_to(TESTS).parts[0]
    return "examples" if path.is_relative_to(ROOT / "examples") else ""


def pytest_collection_modifyitems(items) -> None:
    folders: dict[Path, str] = {}
    for item in items:
        folder = folders.setdefault(item.path, folder_of(item.path))
        mark = FOLDER_MARKS.get(folder)
        if mark is not None:
            item.add_marker(mark)
    with_serial = {item.path for item in items if item.get_closest_marker("serial") is not None}
    position = {path: index for index, path in enumerate(dict.fromkeys(item.path for item in items))}

    def rank(item) -> tuple[int, int]:
        first = 0 if item.path in with_serial else FOLDER_ORDER.get(folders[item.path], 2)
        return first, position[item.path]

    items.sort(key=rank)  # stable: a file's own tests keep their order


@pytest.fixture(autouse=True)
def _alone_when_serial(request, tmp_path_factory) -> Iterator[None]:
    """Under pytest-xdist, a test marked `serial` runs with no other test beside it: it holds
    an exclusive lock that every other test holds shared. A serial test waiting raises a flag
    first, so the others stop taking the lock and it is not starved."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # one folder for all the workers of a run
    lock_path = shared / "serial.lock"
    # One flag per waiting worker: while any serial test waits, no other test starts.
    waiting = shared / f"serial.waiting.{os.environ['PYTEST_XDIST_WORKER']}"
    serial = request.node.get_closest_marker("serial") is not None
    with open(lock_path, "a+") as lock:
        if serial:
            waiting.touch()
            fcntl.flock(lock, fcntl.LOCK_EX)
            waiting.unlink(missing_ok=True)
        else:
            while any(shared.glob("serial.waiting.*")):
                time.sleep(0.05)
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
