"""Run the simulator as N worker processes behind HAProxy, sharing one quota: `make run WORKERS=N`,
`aoai-simulator --workers N`.

One simulator process is one event loop on one core. This starts N of them on loopback ports, each
told the others' addresses (SIMULATOR_PEERS, so a PATCH of /++/config, a save or a reset
reaches all of them, and /++/metrics answers for all) and a secret made for this launch that
their calls to each other carry (SIMULATOR_PEER_SECRET), one Redis for the state they
share (unless SIMULATOR_REDIS_URL, or its older name RATE_LIMIT_REDIS_URL, names one), and
HAProxy on the usual port in front: TCP mode, so TLS and HTTP/2 still reach the workers as they are, least-connections balancing,
and a health check on /++/health every second that takes a worker out of rotation while it
is down. A worker that exits is started again on its port. Ctrl-C or SIGTERM stops them all.

    python scripts/workers.py --workers 4 [--port 8000] [--listen-host 0.0.0.0] [-- mitmdump args]
    aoai-simulator --workers 4 [-p 8000] [--listen-host 0.0.0.0] [mitmdump args]

Each worker, and the one process of `--workers 1`, is the simulator on its lean master
(aoai/launch/lean.py), given mitmdump's options. Every simulator setting comes from the
environment (or .env) as for one process.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv

from .processes import Process, StartError, free_port, lean_command, start_redis, stop, wait_ready

DEFAULT_PORT = 8000  # the simulator's own default (a bare mitmdump -s addons/simulator.py)
DEFAULT_LISTEN_HOST = "0.0.0.0"
HEALTH_INTERVAL_MS = 1000  # HAProxy's check of each worker
RESTART_PAUSE_S = 0.5  # between a worker's exit and its restart


def haproxy_path() -> str | None:
    # Debian puts it in /usr/sbin, which a non-root PATH may lack.
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def max_connections() -> int:
    """Client connections HAProxy can hold: each takes two descriptors (client and worker)
    of this process's limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, min(20000, (soft - 64) // 2)) if soft != resource.RLIM_INFINITY else 20000


def haproxy_config(listen_host: str, port: int, worker_ports: list[int]) -> str:
    """HAProxy in TCP mode: the client's bytes, TLS included, reach a worker unchanged."""
    servers = "\n".join(
        f"    server worker{i} 127.0.0.1:{p} check inter {HEALTH_INTERVAL_MS} fall 2 rise 1"
        for i, p in enumerate(worker_ports)
    )
    return f"""global
    maxconn {max_connections()}

defaults
    mode tcp
    timeout connect 5s
    # Long enough for slow streams and long polls; the simulator ends idle connections itself.
    timeout client 10m
    timeout server 10m

frontend simulator
    bind {listen_host}:{port}
    default_backend workers

backend workers
    balance leastconn
    # A worker that is down: its connections go to another (the client sees nothing), and the
    # health check takes it out of rotation until it answers again.
    option redispatch
    retries 2
    option httpchk GET /++/health
    http-check expect status 200
{servers}
"""


@dataclass
class Workers:
    count: int
    listen_host: str
    port: int
    mitmdump_args: list[str]
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Process] = field(default_factory=list)
    haproxy: subprocess.Popen | None = None
    redis: subprocess.Popen | None = None
    stopping: bool = False

    def start(self) -> None:
        haproxy = haproxy_path()
        if haproxy is None:
            raise StartError("WORKERS needs HAProxy (Debian: apt-get install haproxy; macOS: brew install haproxy)")
        self.env = dict(os.environ)
        if not self.env.get("SIMULATOR_API_KEY"):
            self.env["SIMULATOR_API_KEY"] = secrets.token_urlsafe(24)  # one key for every worker
        # New for each launch: only these workers' calls to each other carry it.
        self.env["SIMULATOR_PEER_SECRET"] = secrets.token_urlsafe(32)
        if not self.redis_url:
            started = start_redis()
            if started is None:
                raise StartError(
                    "WORKERS needs Redis for one shared quota and configuration: set SIMULATOR_REDIS_URL "
                    "or install redis-server"
                )
            self.redis, self.env["SIMULATOR_REDIS_URL"] = started
        ports = [free_port() for _ in range(self.count)]
        # The first worker starts alone: on a first start it makes mitmproxy's CA in the shared
        # confdir, which the others then load, so every worker's TLS chains to the same CA.
        self.workers = [self._launch(0, ports[0], ports)]
        wait_ready(self.workers[0], timeout=60)
        self.workers += [self._launch(i, port, ports) for i, port in enumerate(ports) if i > 0]
        for worker in self.workers[1:]:
            wait_ready(worker, timeout=60)
        config = self.folder / "haproxy.cfg"
        config.write_text(haproxy_config(self.listen_host, self.port, ports))
        self.haproxy = subprocess.Popen(
            [haproxy, "-f", str(config), "-db"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "haproxy.log", "wb"),  # noqa: SIM115 (held by the process)
        )
        wait_ready(Process(self.haproxy, self.port, "", self.folder / "haproxy.log", "haproxy", 0.0), path=None)
        host = "localhost" if self.listen_host in ("0.0.0.0", "::", "") else self.listen_host
        print(
            f"Azure OpenAI simulator: {self.count} workers behind HAProxy on http://{host}:{self.port}\n"
            f"  API key:     {self.env['SIMULATOR_API_KEY']}\n"
            f"  Shared:      quota and state through Redis at {self.redis_url}\n"
            f"  Workers:     {', '.join(w.url for w in self.workers)} (logs in {self.folder})",
            flush=True,
        )

    @property
    def redis_url(self) -> str:
        """The Redis the workers share: the user's (either setting), else the one started."""
        return (self.env.get("SIMULATOR_REDIS_URL") or self.env.get("RATE_LIMIT_REDIS_URL") or "").strip()

    def _launch(self, index: int, port: int, ports: list[int]) -> Process:
        env = {
            **self.env,
            "SIMULATOR_WORKER": f"127.0.0.1:{port}",
            "SIMULATOR_PEERS": ",".join(f"http://127.0.0.1:{p}" for p in ports if p != port),
        }
        log_path = self.folder / f"worker{index}.log"
        command = [*lean_command(), "--listen-host", "127.0.0.1", "-p", str(port), *self.mitmdump_args]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return Process(process, port, env["SIMULATOR_API_KEY"], log_path, f"worker{index}", time.perf_counter())

    def supervise(self) -> None:
        """Start again any worker that exits, until asked to stop."""
        ports = [w.port for w in self.workers]
        while not self.stopping:
            for index, worker in enumerate(self.workers):
                if not worker.alive() and not self.stopping:
                    print(f"worker{index} exited with {worker.process.returncode}; starting it again", flush=True)
                    time.sleep(RESTART_PAUSE_S)
                    self.workers[index] = self._launch(index, worker.port, ports)
            if self.haproxy is not None and self.haproxy.poll() is not None and not self.stopping:
                raise StartError(f"HAProxy exited with {self.haproxy.returncode}; see {self.folder / 'haproxy.log'}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True
        if self.haproxy is not None:
            stop(self.haproxy)
        for worker in self.workers:
            worker.stop()
        if self.redis is not None:
            stop(self.redis)


@dataclass
class ListenAddress:
    """HAProxy's address, when mitmdump's arguments name it; None: the default."""

    host: str | None = None
    port: int | None = None


def take_listen_address(mitmdump_args: list[str]) -> tuple[ListenAddress, list[str]]:
    """mitmdump's listen options (`-p`, `--listen-port`, `--listen-host`, or the same as
    `--set`) taken out of the arguments every worker gets: they name HAProxy's address, as
    each worker has a loopback port of its own. Raises ValueError with one line."""
    address = ListenAddress()
    rest: list[str] = []
    items = iter(mitmdump_args)
    for arg in items:
        name, equals, value = arg.partition("=")
        if name in ("-p", "--listen-port", "--listen-host"):
            value = value if equals else next(items, "")
        elif arg == "--set":
            option = next(items, "")
            name, _, value = option.partition("=")
            if name not in ("listen_port", "listen_host"):
                rest += [arg, option]
                continue
        else:
            rest.append(arg)
            continue
        if name.endswith("host"):
            address.host = value
        else:
            try:
                address.port = int(value)
            except ValueError:
                raise ValueError(f"listen port: expected a number, got {value!r}") from None
    return address, rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS") or 1),
        help="worker processes (default: $WORKERS, else 1: one simulator process, no balancer)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port clients use (default {DEFAULT_PORT})")
    parser.add_argument(
        "--listen-host", default=DEFAULT_LISTEN_HOST, help="the address HAProxy listens on (default all)"
    )
    parser.add_argument("mitmdump_args", nargs="*", help="more mitmdump arguments for every worker, after --")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: at least 1")
    if args.workers == 1:  # the simulator as it always runs, in this process
        from . import lean

        return lean.main(["--listen-host", args.listen_host, "-p", str(args.port), *args.mitmdump_args])
    try:
        address, mitmdump_args = take_listen_address(args.mitmdump_args)
    except ValueError as e:
        parser.error(str(e))
    return run(args.workers, address.host or args.listen_host, address.port or args.port, mitmdump_args)


def run(count: int, listen_host: str, port: int, mitmdump_args: list[str]) -> int:
    """`count` workers behind HAProxy on listen_host:port until SIGTERM or Ctrl-C: the exit status."""
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
    workers = Workers(count, listen_host, port, mitmdump_args, Path(tempfile.mkdtemp(prefix="simulator-workers-")))

    def finish(*_) -> None:
        workers.stopping = True

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    try:
        workers.start()
        workers.supervise()
    except StartError as e:
        print(f"Cannot start the simulator: {e}", file=sys.stderr)
        return 1
    finally:
        workers.stop()
    return 0
