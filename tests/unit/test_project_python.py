"""The scripts a user runs by hand work from a python without the simulator's packages: they
run again with the project's .venv, or say in one line what to run."""

import subprocess
import sys
from pathlib import Path

import project_python
import pytest
from conftest import ROOT


def bare_python() -> list[str]:
    """This interpreter's base, without any site-packages (-S): no jwt, no orjson."""
    return [getattr(sys, "_base_executable", sys.executable), "-S"]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs the project's .venv")
@pytest.mark.parametrize(
    ("script", "args", "missing"),
    [("mint_token.py", [], "jwt"), ("setup_tiktoken.py", ["{tmp}"], "orjson")],
)
def test_a_script_run_by_a_bare_python_runs_again_in_the_venv(tmp_path, script, args, missing):
    done = subprocess.run(
        [*bare_python(), str(ROOT / "scripts" / script), *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"{script}: this python lacks {missing}; running it with .venv/bin/python\n"
    if script == "mint_token.py":
        assert done.stdout.count(".") == 2  # a JWT: header.claims.signature
    else:
        assert len(list(tmp_path.iterdir())) == 2  # both encodings


def test_without_a_venv_it_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(project_python, "VENV", tmp_path / ".venv")
    with pytest.raises(SystemExit) as stopped:
        project_python.rerun_in_venv(ModuleNotFoundError(name="jwt"), ["scripts/mint_token.py"])
    assert stopped.value.code == (
        "mint_token.py needs the simulator's packages (jwt is missing): "
        "run `make install`, then `.venv/bin/python scripts/mint_token.py`"
    )


def test_inside_the_venv_it_does_not_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(project_python, "VENV", Path(sys.prefix))
    with pytest.raises(SystemExit, match="jwt is missing"):
        project_python.rerun_in_venv(ModuleNotFoundError(name="jwt"), ["scripts/mint_token.py"])
