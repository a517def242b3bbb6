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

from mitmproxy import exceptions

logger = logging.getLogger(__name__)


class Startup:
    def __init__(self, exit_process: bool = False):
        self.exit_process = exit_process  # False: log the error and let mitmproxy stop (tests)
        self.running = False  # once running, a bad value is refused as an option error

    def refuse(self, message: str) -> None:
        if self.running:
            raise exceptions.OptionsError(message)
        line = f"Cannot start the simulator: {message}"
        if not self.exit_process:
            logger.error(line)
            return
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os._exit(1)
