"""Starting the simulator: the `aoai-simulator` command (`cli.py`), the lean mitmproxy master it
runs the simulator on (`lean.py`, with the addons `assembly.py` builds, as addons/simulator.py
gives mitmdump), workers behind HAProxy (`workers.py`) and the process helpers they share
(`processes.py`). No stage imports anything here."""
