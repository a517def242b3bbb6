"""Starting the simulator as processes, outside mitmproxy: the `aoai-simulator` command
(`cli.py`), workers behind HAProxy (`workers.py`) and the process helpers both use
(`processes.py`). Nothing here runs inside mitmproxy, and no stage imports it."""
