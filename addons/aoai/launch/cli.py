"""The `aoai-simulator` command that `pip install .` puts on PATH.

    aoai-simulator [mitmdump options]                 # the simulator on its lean master
    aoai-simulator --workers N [mitmdump options]     # N simulators behind HAProxy, one quota

The simulator runs on a mitmproxy master that holds only the mitmproxy addons it needs
(aoai/launch/lean.py); `mitmdump -s addons/simulator.py` runs the same stages with all of
mitmdump's. Every argument but `--workers` is read as mitmdump reads its own (`--set
key=value`, `-p PORT`, `--listen-host`, `--mode`, `-s SCRIPT`, ...). With several workers, the
listen address (`-p`/`--listen-port`, `--listen-host`, or the same as `--set`) is HAProxy's,
and every other argument reaches each worker. `--workers` defaults to $WORKERS, else 1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from . import workers

USAGE = "usage: aoai-simulator [--workers N] [mitmdump options, e.g. --set key=value]"


class UsageError(ValueError):
    """A command line the launcher cannot read; the message is one line."""


@dataclass
class Launch:
    """What a command line asks for: how many workers, HAProxy's address, and mitmdump's arguments."""

    workers: int = 1
    listen_host: str | None = None
    port: int | None = None
    mitmdump_args: list[str] = field(default_factory=list)


def parse(argv: list[str], default_workers: str | None = None) -> Launch:
    """Take `--workers N` (or `--workers=N`) out of argv; the rest is mitmdump's. With more
    than one worker, the listen address is taken out too, as it is HAProxy's."""
    launch = Launch()
    count = default_workers or "1"
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--workers":
            count = next(args, "")
        elif arg.startswith("--workers="):
            count = arg.partition("=")[2]
        else:
            rest.append(arg)
    try:
        launch.workers = int(count)
    except ValueError:
        raise UsageError(f"--workers: expected a whole number, got {count!r}") from None
    if launch.workers < 1:
        raise UsageError("--workers: at least 1")
    if launch.workers == 1:
        launch.mitmdump_args = rest
        return launch
    try:
        address, launch.mitmdump_args = workers.take_listen_address(rest)
    except ValueError as e:
        raise UsageError(str(e)) from None
    launch.listen_host, launch.port = address.host, address.port
    return launch


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        print("mitmdump's own options: mitmdump --help")
        return 0
    try:
        launch = parse(argv, os.environ.get("WORKERS"))
    except UsageError as e:
        print(f"aoai-simulator: {e}\n{USAGE}", file=sys.stderr)
        return 2
    if launch.workers > 1:
        return workers.run(
            launch.workers,
            workers.DEFAULT_LISTEN_HOST if launch.listen_host is None else launch.listen_host,
            workers.DEFAULT_PORT if launch.port is None else launch.port,
            launch.mitmdump_args,
        )
    # One simulator: the lean launcher, in this process.
    from . import lean

    sys.argv = ["aoai-simulator", *launch.mitmdump_args]
    return lean.main(launch.mitmdump_args)


if __name__ == "__main__":
    sys.exit(main())
