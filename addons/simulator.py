"""Azure OpenAI simulator: mitmproxy addons that answer where Azure OpenAI would.

    mitmdump -s addons/simulator.py

The stages are stacked in request order by `aoai.stack.build_addons`; this script only
makes the package importable, reads `.env`, checks the settings and builds the stack.
"""

import os
import sys

# The `aoai` package lives beside this file; keep it importable after mitmproxy restores
# sys.path, so extensions can import it too.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dotenv import load_dotenv

# .env in the working directory fills in what the environment does not set.
load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)

from aoai.runtime.config import SimulatorConfig  # noqa: E402
from aoai.runtime.services import Services  # noqa: E402
from aoai.runtime.startup import Startup, preflight  # noqa: E402
from aoai.stack import build_addons, declared_options  # noqa: E402

# A bad setting stops the process at once, before the stack is built (mitmproxy is already listening).
startup = Startup(exit_process=True)
preflight(startup, declared_options())

config = SimulatorConfig()  # the configuration; extensions receive it in initialize(config)
addons = build_addons(config, Services.build(config), startup)
