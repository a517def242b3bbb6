"""For the scripts a user runs by hand (`python scripts/mint_token.py`): when the python that
runs them lacks the simulator's packages, run them again with the project's .venv, or say in
one line how to. Standard library only, as it runs before those packages are found."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def rerun_in_venv(missing: ModuleNotFoundError, argv: list[str] | None = None) -> NoReturn:
    """Replace this process with the same script under .venv/bin/python; exits with one line
    where there is no .venv, or this already is it."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).name
    python = VENV / "bin" / "python"
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if python.exists() and not in_venv:
        print(f"{script}: this python lacks {missing.name}; running it with .venv/bin/python", file=sys.stderr)
        sys.stderr.flush()
        os.execv(python, [str(python), str(Path(argv[0]).resolve()), *argv[1:]])
    sys.exit(
        f"{script} needs the simulator's packages ({missing.name} is missing): "
        f"run `make install`, then `.venv/bin/python scripts/{script}`"
    )
