"""Start-up refusal: a bad setting, deployments file or extension stops the simulator before
its port opens, in one line and without a traceback.

mitmproxy loads a script while it brings its listener up and exits on logged errors only
after that, so a client connecting in between (a health probe, a load balancer) would meet a
port that accepts and then dies, with tracebacks of the cancelled connections. The stages
that check what they are given at start-up call `refuse` instead: the simulator script
(addons/simulator.py) asks it to end the process there and then, before the listener binds.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping

from mitmproxy import exceptions

from .config import ConfigError
from .options import Option, environment_value

logger = logging.getLogger(__name__)


class Startup:
    def __init__(self, exit_process: bool = False):
        self.exit_process = exit_process  # False: log the error and let mitmproxy stop (tests)
        self.running = False  # once running, a bad value is refused as an option error

    def applying(self, apply: Callable[[], object], env_error: str | None = None) -> None:
        """Apply a stage's options: a wrong value (or a wrong environment value, which its option
        stood in for) is refused, at start-up in one line, later as an option error."""
        try:
            if env_error:
                raise ConfigError(env_error)
            apply()
        except ConfigError as e:
            self.refuse(str(e))

    def refuse(self, message: str) -> None:
        if self.running:
            raise exceptions.OptionsError(message)  # type: ignore[no-untyped-call]  # mitmproxy's, unannotated
        line = f"Cannot start the simulator: {message}"
        if not self.exit_process:
            logger.error(line)
            return
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os._exit(1)


def preflight(startup: Startup, options: Iterable[Option], environ: Mapping[str, str] = os.environ) -> None:
    """Check every setting the environment gives, by type, choices and range, before the stack
    is built: mitmproxy has its listener up by the time a script loads, so the sooner a start
    that cannot succeed ends, the fewer clients meet a port that is about to close. (What
    depends on several settings, and values set with --set, are checked as they are applied.)"""
    try:
        for option in options:
            environment_value(option, environ)
    except ConfigError as e:
        startup.refuse(str(e))
