"""Record the example's cassettes anew from a simulator, as they would be recorded from Azure:
a generate-mode simulator (seeded) stands in for Azure OpenAI, and the cassette tests run in
record mode `all` against it (AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_KEY point at it).

    python examples/pytest_app/record_cassettes.py

From a checkout (addons/ on the path) or with the project installed. The cassettes land in
examples/pytest_app/tests/cassettes/; the test's expected answers are then those printed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "addons"))

from aoai_simulator import start  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        azure = start(Path(folder), {"SIMULATOR_SEED": "1"})
        try:
            env = {**os.environ, "AZURE_OPENAI_ENDPOINT": azure.base_url, "AZURE_OPENAI_KEY": azure.key}
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "tests"),
                       "-k", "cassette", "--aoai-record-mode=all"]  # fmt: skip
            return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        finally:
            azure.stop()


if __name__ == "__main__":
    sys.exit(main())
