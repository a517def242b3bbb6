"""Every code block of the README and docs/ runs, as a reader would paste it.

The docs' convention: the simulator is at `http://localhost:8000` with the key `my-key`
(`SIMULATOR_API_KEY=my-key make run`). Here both are replaced by the test simulator's
address and key, and nothing else is changed:

- ```python blocks run in a fresh interpreter from the project's folder, each on its own
  (so each must bring its imports);
- ```bash blocks made only of curl commands (`NAME=$(curl …)` too) run, each curl failing on an
  HTTP error;
- ```json blocks parse, and a deployments file among them (names mapped to objects with a
  `model` or `faults`) loads as the simulator loads one;
- ```text blocks are not code (a file tree, a log line).

A marker on the line before a block says how it differs:
`<!-- not-run: why -->` for what cannot run here (make targets, docker, long runs; listed by
`test_blocks_that_do_not_run_say_why`), and `<!-- simulator: NAME=value ... -->` for a block
that needs a simulator started with those settings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT
from simulator_process import clean_env

from aoai.runtime import config as cfg

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "json", "text"}
DOCS_ADDRESS = "localhost:8000"
DOCS_KEY = "my-key"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(not-run|simulator):\s*(.*?)\s*-->\s*$")
# Makes curl fail on an HTTP error status, as a reader would notice one.
CURL_FAILS = 'curl() { command curl --fail-with-body --silent --show-error "$@"; echo; }\n'
RUN_TIMEOUT_S = 120


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None = None  # the reason given
    env: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.group(1), opening.group(2)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        block = Block(path, i + 1, language, "\n".join(body) + "\n")
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(previous)
        if marker and marker.group(1) == "not-run":
            block.not_run = marker.group(2)
        elif marker:
            block.env = dict(pair.split("=", 1) for pair in marker.group(2).split())
        found.append(block)
        i = j + 1
    return found


ALL = [b for path in DOC_FILES for b in blocks(path)]
RUNNABLE = [b for b in ALL if b.not_run is None and b.language in ("python", "bash")]


def commands(code: str) -> list[str]:
    """The shell commands of a block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c.strip() for c in joined.split("\n") if c.strip() and not c.strip().startswith("#")]


def for_simulator(code: str, sim) -> str:
    return code.replace(DOCS_ADDRESS, f"127.0.0.1:{sim.port}").replace(DOCS_KEY, sim.key)


def run(block: Block, sim) -> subprocess.CompletedProcess:
    code = for_simulator(block.code, sim)
    if block.language == "python":
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", CURL_FAILS + code]
    return subprocess.run(
        argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


def test_the_docs_have_blocks_of_every_kind():
    languages = {b.language for b in ALL}
    assert {"python", "bash", "json"} <= languages
    assert sum(b.language == "python" and b.not_run is None for b in ALL) >= 10


@pytest.mark.parametrize("block", ALL, ids=lambda b: b.where)
def test_each_block_names_a_language_this_test_understands(block):
    assert block.language in LANGUAGES, f"{block.where}: say the block's language, one of {sorted(LANGUAGES)}"


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "bash" and b.not_run is None], ids=lambda b: b.where)
def test_a_bash_block_that_runs_is_curl_against_the_simulator(block):
    for command in commands(block.code):
        assert re.match(r"(\w+=\$\()?curl ", command), (
            f"{block.where}: only curl runs here; mark the block <!-- not-run: why --> or make it curl: {command}"
        )
        assert DOCS_ADDRESS in command, f"{block.where}: curl the simulator at http://{DOCS_ADDRESS}: {command}"


def test_blocks_that_do_not_run_say_why():
    skipped = [b for b in ALL if b.not_run is not None]
    print("\nblocks that do not run:")
    for b in skipped:
        print(f"  {b.where} ({b.language}): {b.not_run}")
    assert all(b.not_run for b in skipped), "a not-run marker needs its reason"
    assert all(b.language in ("bash", "python") for b in skipped), "only code is marked not-run"


@pytest.mark.parametrize("block", [b for b in ALL if b.language == "json"], ids=lambda b: b.where)
def test_a_json_block_parses_and_a_deployments_file_loads(block, tmp_path):
    data = json.loads(block.code)
    if (
        isinstance(data, dict)
        and data
        and all(isinstance(v, dict) and ("model" in v or "faults" in v) for v in data.values())
    ):
        path = tmp_path / "deployments.json"
        path.write_text(block.code, encoding="utf-8")
        deployments, _ = cfg.load_deployments(str(path))
        assert set(deployments) == set(data) - {"*"}


@pytest.mark.parametrize("block", [b for b in RUNNABLE if not b.env], ids=lambda b: b.where)
def test_a_block_runs_as_pasted(block, simulator):
    done = run(block, simulator)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("block", [b for b in RUNNABLE if b.env], ids=lambda b: b.where)
def test_a_block_runs_as_pasted_against_the_settings_it_names(block, simulator_factory):
    # A path the docs give from the project's folder (examples/…) is made whole: the simulator runs elsewhere.
    env = {k: str(ROOT / v) if (ROOT / v).exists() and v else v for k, v in block.env.items()}
    sim = simulator_factory({"SIMULATOR_LATENCY": "false", **env})
    done = run(block, sim)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"


def test_the_docs_use_one_address_and_key():
    """Snippets that name another address or key would not run as pasted."""
    for block in RUNNABLE:
        assert "$KEY" not in block.code and "KEY=..." not in block.code, block.where
        assert not re.search(r"localhost:(?!8000)\d+", block.code), f"{block.where}: use {DOCS_ADDRESS}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", *sys.argv[1:]]))
