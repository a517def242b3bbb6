"""Azure OpenAI simulator: mitmproxy addons that answer where Azure OpenAI would.

    python addons/simulator.py [mitmdump options]   # the lean launcher (aoai-simulator, make run)
    mitmdump -s addons/simulator.py [options]       # the same stages in mitmdump
    mitmweb -s addons/simulator.py [options]        # ... with mitmproxy's web UI

The stages are stacked in request order by `aoai.stack.build_addons`; as a mitmproxy script,
this file only makes the package importable and hands mitmproxy what
`aoai.launch.assembly.simulator_addons` builds (`.env` read, settings checked, the stack).
Run as a program, it starts the same addons on a master that holds only the mitmproxy addons
the simulator needs (`aoai.launch.lean`).
"""

import os
import sys

# The `aoai` package lives beside this file; keep it importable after mitmproxy restores
# sys.path, so extensions can import it too.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    from aoai.launch.lean import main

    sys.exit(main())
else:
    from aoai.launch.assembly import simulator_addons

    addons = simulator_addons()
