"""Run the simulator as N worker processes behind HAProxy, sharing one quota: `make run WORKERS=N`.

    python scripts/workers.py --workers 4 [--port 8000] [--listen-host 0.0.0.0] [-- mitmdump args]

The launcher itself is `aoai.launch.workers` (also behind `aoai-simulator --workers N`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "addons"))

from aoai.launch.workers import Workers, haproxy_config, haproxy_path, main, max_connections, run

__all__ = ["Workers", "haproxy_config", "haproxy_path", "main", "max_connections", "run"]

if __name__ == "__main__":
    sys.exit(main())
