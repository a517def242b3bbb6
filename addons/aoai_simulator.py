"""The simulator inside a pytest suite: a fixture, a marker and a cassette per test.

Loaded by its `pytest11` entry point once the project is installed (`pip install .`), or with
`-p aoai_simulator` from a checkout (pyproject's `pythonpath` puts addons/ on the path).

- `aoai_simulator` (session fixture; one per pytest-xdist worker): a simulator started on a free
  loopback port in generate mode, latency off, with `base_url`, `key`, `azure_client()`,
  `async_azure_client()`, `v1_client()`, `env()`, `patch()`, `reset_limits()`, `metrics()`.
- `@pytest.mark.aoai(deployments=..., faults=..., content_filter=..., seed=...)`: one
  PATCH /++/config before the test, and one after that puts back what it replaced.
- `aoai_cassette`: the test's requests read from and written to one file,
  `cassettes/<module>/<test>.yaml` beside the test file, as `--aoai-record-mode` says.

A marker or cassette the simulator refuses fails its own test with the simulator's one line;
the session and the other tests go on.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aoai.launch.processes import SETTINGS_PREFIXES, Process, free_port, lean_command, wait_ready

API_VERSION = "2024-10-21"
RECORD_MODES = ("none", "once", "new_episodes", "all")
# The marker's arguments and the PATCH /++/config fields they set.
MARKER_FIELDS = {"deployments": "deployments", "faults": "faults", "content_filter": "contentFilter", "seed": "seed"}
START_TIMEOUT_S = 60
REFUSED = pytest.StashKey[str]()  # why the simulator refused this test's marker or cassette
CASSETTE = pytest.StashKey["Cassette"]()
SETTINGS = pytest.StashKey[dict[str, str]]()


class Refused(Exception):
    """The simulator answered 400 (or another 4xx): its message, one line."""


class Simulator:
    """A running simulator and what a test asks of it."""

    def __init__(self, process: Process, api_version: str = API_VERSION) -> None:
        self.process = process
        self.base_url = process.url
        self.key = process.key
        self.api_version = api_version
        # One kept-alive connection: a marker or cassette switch is a request or two of about a millisecond.
        self.http = httpx.Client(base_url=self.base_url, headers={"api-key": self.key}, timeout=30)

    # --- clients for the code under test ---------------------------------------------------------

    def azure_client(self, **kwargs: Any) -> Any:
        """An `openai.AzureOpenAI` client of this simulator; keyword arguments go to it."""
        from openai import AzureOpenAI

        return AzureOpenAI(**{**self._azure_arguments(), **kwargs})

    def async_azure_client(self, **kwargs: Any) -> Any:
        """An `openai.AsyncAzureOpenAI` client of this simulator."""
        from openai import AsyncAzureOpenAI

        return AsyncAzureOpenAI(**{**self._azure_arguments(), **kwargs})

    def v1_client(self, **kwargs: Any) -> Any:
        """An `openai.OpenAI` client of the simulator's v1 API (`/openai/v1/`)."""
        from openai import OpenAI

        return OpenAI(**{"base_url": f"{self.base_url}/openai/v1/", "api_key": self.key, **kwargs})

    def _azure_arguments(self) -> dict[str, Any]:
        return {"azure_endpoint": self.base_url, "api_key": self.key, "api_version": self.api_version}

    def env(self) -> dict[str, str]:
        """What an application reads to reach Azure OpenAI, pointing at this simulator: for
        `monkeypatch.setenv` or a subprocess's `env={**os.environ, **sim.env()}`."""
        return {
            "AZURE_OPENAI_ENDPOINT": self.base_url,
            "AZURE_OPENAI_API_KEY": self.key,
            "OPENAI_API_VERSION": self.api_version,
        }

    # --- management ------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """GET /++/config: the mode, seed, deployments, faults and content filters in force."""
        return self._json("GET", "/++/config")

    def patch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH /++/config; raises Refused with the simulator's message for a bad body.
        Not undone after the test: the `aoai` marker is."""
        return self._json("PATCH", "/++/config", body)

    def reset_limits(self) -> None:
        """Empty every rate-limit window: the next request meets a full quota."""
        self._json("POST", "/++/reset-limits")

    def metrics(self) -> str:
        """GET /++/metrics: Prometheus text."""
        answer = self.http.get("/++/metrics")
        answer.raise_for_status()
        return answer.text

    def use_cassette(self, path: Path | None, mode: str = "none") -> dict[str, Any]:
        """PUT /++/cassette: read and write recordings in `path` as `mode` says; None goes back
        to the simulator's own mode and recordings."""
        return self._json("PUT", "/++/cassette", {"path": None if path is None else str(path), "mode": mode})

    def log(self, tail: int | None = None) -> str:
        """The simulator's output so far; with `tail`, its last lines."""
        return self.process.log(tail)

    def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = self.http.request(method, path, json=body)
        if 400 <= answer.status_code < 500:
            raise Refused(_message(answer))
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        self.http.close()
        self.process.stop()


def _message(answer: httpx.Response) -> str:
    """The first line of an Azure-style error's message, else the status and the start of the body."""
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"{answer.status_code} {answer.text[:200]}"
    return str(message).strip().splitlines()[0] if str(message).strip() else str(answer.status_code)


# --- starting one -------------------------------------------------------------------------------


def upstream(environ: Mapping[str, str]) -> dict[str, str]:
    """Where record modes forward to: the test process's AZURE_OPENAI_ENDPOINT and its key
    (AZURE_OPENAI_KEY, else AZURE_OPENAI_API_KEY), as the simulator's settings."""
    endpoint = environ.get("AZURE_OPENAI_ENDPOINT", "").strip()
    if not endpoint:
        return {}
    found = {"AZURE_OPENAI_ENDPOINT": endpoint}
    key = environ.get("AZURE_OPENAI_KEY") or environ.get("AZURE_OPENAI_API_KEY")
    if key:
        found["AZURE_OPENAI_KEY"] = key
    return found


def start(
    folder: Path, settings: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> Simulator:
    """A simulator in `folder` (its log, its recordings), ready to serve: generate mode, latency
    off, a fresh key, the upstream from `environ` (os.environ), then `settings` on top."""
    environ = os.environ if environ is None else environ
    env = {name: value for name, value in environ.items() if not name.startswith(SETTINGS_PREFIXES)}
    env.update(
        {
            "SIMULATOR_API_KEY": f"sim-{secrets.token_hex(12)}",
            "SIMULATOR_LATENCY": "false",
            "RECORDING_DIR": str(folder / "recordings"),
        }
    )
    env.update(upstream(environ))
    env.update(settings or {})
    port = free_port()
    command = [*lean_command(), "--listen-host", "127.0.0.1", "-p", str(port)]
    log_path = folder / f"aoai-simulator-{port}.log"
    with open(log_path, "wb") as log:
        begun = time.perf_counter()
        popen = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    process = Process(popen, port, env["SIMULATOR_API_KEY"], log_path, "aoai simulator", begun)
    wait_ready(process, timeout=START_TIMEOUT_S)
    return Simulator(process)


def settings_of(config: pytest.Config) -> dict[str, str]:
    """NAME=VALUE pairs from the `aoai_env` ini lines, then from --aoai-env (which wins)."""
    pairs = [*config.getini("aoai_env"), *(config.getoption("aoai_env") or [])]
    settings = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise pytest.UsageError(f"--aoai-env / aoai_env: expected NAME=VALUE, got {pair!r}")
        settings[name.strip()] = value
    return settings


# --- the marker ---------------------------------------------------------------------------------


def marker_body(item: pytest.Item) -> dict[str, Any]:
    """The PATCH body of the test's `aoai` markers, the closest winning (a deployment named by
    both a class and its test: the test's)."""
    body: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("aoai"))):
        if mark.args:
            raise Refused("takes keyword arguments only: deployments=, faults=, content_filter=, seed=")
        for argument, value in mark.kwargs.items():
            field = MARKER_FIELDS.get(argument)
            if field is None:
                raise Refused(f"unknown argument {argument!r}; use deployments, faults, content_filter, seed")
            if isinstance(value, dict) and isinstance(body.get(field), dict):
                body[field] = {**body[field], **value}
            else:
                body[field] = value
    return body


def undo_body(before: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH that puts back what `body` replaced, from GET /++/config before it: each
    deployment it named as it was (null for one it added), the default faults, the seed."""
    undo: dict[str, Any] = {"resetLimits": True}
    named = {*(body.get("deployments") or {}), *(body.get("contentFilter") or {})}
    if named:
        undo["deployments"] = {name: before["deployments"].get(name) for name in named}
    if "faults" in body:
        undo["faults"] = before["faults"]
    if "seed" in body:
        undo["seed"] = before["seed"]
    return undo


@pytest.fixture(autouse=True)
def _aoai_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Apply the test's `aoai` marker, and undo it after the test (whatever its outcome)."""
    if request.node.get_closest_marker("aoai") is None:
        yield
        return
    simulator: Simulator = request.getfixturevalue("aoai_simulator")
    try:
        body = marker_body(request.node)
        before = simulator.config()
        # The windows emptied too: a small quota is met from its start, not from the last test's traffic.
        simulator.patch({**body, "resetLimits": True})
    except Refused as e:
        request.node.stash[REFUSED] = f"@pytest.mark.aoai: {e}"
        yield
        return
    try:
        yield
    finally:
        simulator.patch(undo_body(before, body))


# --- cassettes ----------------------------------------------------------------------------------


@dataclass
class Cassette:
    """The test's cassette, as the simulator took it."""

    path: Path
    mode: str
    recording: bool = False  # requests it does not answer go on to the upstream and are written
    interactions: int = 0  # it held when the test began


def cassette_path(item: pytest.Item, folder: str | None, invoked_in: Path) -> Path:
    """`cassettes/<module>/<test>.yaml` beside the test file, or under `folder`; a test in a
    class is `<Class>.<test>`, and parameters keep only what a file name can carry."""
    base = (invoked_in / folder).resolve() if folder else item.path.parent / "cassettes"
    test = ".".join(item.nodeid.split("::")[1:]) or item.name
    return base / item.path.stem / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', test).strip('-')}.yaml"


@pytest.fixture
def aoai_cassette(request: pytest.FixtureRequest, aoai_simulator: Simulator) -> Iterator[Cassette]:
    """The test's requests replayed from, and recorded to, its own cassette (--aoai-record-mode)."""
    config = request.config
    mode = config.getoption("aoai_record_mode")
    path = cassette_path(request.node, config.getoption("aoai_cassette_dir"), config.invocation_params.dir)
    cassette = Cassette(path, mode)
    if mode != "none":
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        answer = aoai_simulator.use_cassette(path, mode)
    except Refused as e:
        request.node.stash[REFUSED] = f"aoai_cassette {path.name}: {e}"
        yield cassette
        return
    cassette.recording, cassette.interactions = bool(answer.get("recording")), int(answer.get("interactions", 0))
    request.node.stash[CASSETTE] = cassette
    try:
        yield cassette
    finally:
        aoai_simulator.use_cassette(None)  # the pending recordings are written to it first


# --- the session's simulator and the hooks ------------------------------------------------------


@pytest.fixture(scope="session")
def aoai_simulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One simulator for the session (for each pytest-xdist worker, its own)."""
    simulator = start(tmp_path_factory.mktemp("aoai-simulator"), request.config.stash[SETTINGS])
    yield simulator
    simulator.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aoai", "Azure OpenAI simulator")
    group.addoption(
        "--aoai-record-mode",
        choices=RECORD_MODES,
        default="none",
        help="aoai_cassette: none replays and fails on a miss; once records a cassette that is absent; "
        "new_episodes adds what a cassette lacks; all records every cassette anew (default: none)",
    )
    group.addoption(
        "--aoai-cassette-dir",
        default=None,
        help="folder of the cassettes (default: cassettes/ beside each test file)",
    )
    group.addoption(
        "--aoai-env",
        action="append",
        metavar="NAME=VALUE",
        help="a setting of the session's simulator, e.g. SIMULATOR_SEED=1 (repeatable)",
    )
    parser.addini("aoai_env", "settings of the session's simulator, NAME=VALUE a line", type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SETTINGS] = settings_of(config)  # a mistake is told before any test runs
    config.addinivalue_line(
        "markers",
        "aoai(deployments={...}, faults=[...], content_filter={...}, seed=N): the simulator's "
        "configuration for this test only (aoai_simulator plugin)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A marker or cassette the simulator refused fails the test here, in one line, unrun."""
    refused = item.stash.get(REFUSED, None)
    if refused:
        pytest.fail(refused, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cassette = item.stash.get(CASSETTE, None)
    text = report.longreprtext if report.failed else ""
    if cassette is not None and ("RecordingNotFound" in text or "No recording matches" in text):
        report.sections.append(
            (
                "aoai cassette",
                f"{cassette.path} (mode {cassette.mode}) holds no recording of a request this test made; "
                "the closest one and the fields that differ are in the error above. Record it with "
                "--aoai-record-mode=once (a new cassette) or new_episodes (added to this one).",
            )
        )
    return report
