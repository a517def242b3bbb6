"""What `addons/simulator.py` gives mitmproxy, as a function: the lean launcher (lean.py) adds
the same addons to its own master.

Nothing from the rest of `aoai` is imported before `.env` is read, so that whatever reads the
environment when it is imported sees the file's values too.
"""

from __future__ import annotations

import os
from typing import Any

from dotenv import load_dotenv


def simulator_addons() -> list[Any]:
    """Read `.env` in the working directory (the environment wins), check every setting the
    environment gives, and build the simulator's addons. A bad setting ends the process here,
    in one line, before any port is open."""
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)

    from ..runtime.config import SimulatorConfig
    from ..runtime.services import Services
    from ..runtime.startup import Startup, preflight
    from ..stack import build_addons, declared_options

    startup = Startup(exit_process=True)
    preflight(startup, declared_options())
    config = SimulatorConfig()  # the configuration; extensions receive it in initialize(config)
    return list(build_addons(config, Services.build(config), startup))
