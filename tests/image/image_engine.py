"""The container engine the image test drives, and the containers it starts: docker where one
answers (`docker info`), else podman (the image itself built with buildah, by `make image`).
Each container's port 8000 is published on a free loopback port, as `docker run -p` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# What podman needs where the engine's default open-files limit is above what this machine
# allows a process (runc then cannot start any container): the container inherits the
# engine's own limits instead. Used only when CONTAINERS_CONF names no other file.
PODMAN_CONF = "[containers]\ndefault_ulimits = []\n"


# What the image test measured (build times, sizes), printed after its results (tests/conftest.py).
FIGURES: dict[str, str] = {}


class EngineError(Exception):
    pass


@dataclass
class Engine:
    name: str  # docker or podman
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def find(cls, folder: Path) -> Engine:
        """docker with a running engine, else podman (with buildah for the builds)."""
        if (
            shutil.which("docker")
            and subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
        ):
            return cls("docker")
        if shutil.which("podman") and shutil.which("buildah"):
            env = dict(os.environ)
            if not env.get("CONTAINERS_CONF"):
                conf = folder / "containers.conf"
                conf.write_text(PODMAN_CONF)
                env["CONTAINERS_CONF"] = str(conf)
            return cls("podman", env)
        raise EngineError("the image test needs docker (with a running engine), or podman and buildah")

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise EngineError(f"{self.name} {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def image_size_mb(self, image: str) -> float:
        return int(self("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()) / 1e6

    def image_config(self, image: str) -> dict:
        return json.loads(self("image", "inspect", "--format", "{{json .Config}}", image).stdout)

    def health_check(self, image: str) -> dict:
        """The image's HEALTHCHECK: where docker and podman show it differ."""
        where = "{{json .Config.Healthcheck}}" if self.name == "docker" else "{{json .HealthCheck}}"
        return json.loads(self("image", "inspect", "--format", where, image).stdout) or {}

    def remove(self, *names: str) -> None:
        if names:
            self("rm", "--force", "--volumes", *names, check=False)  # its anonymous volumes too

    def start(
        self,
        image: str,
        name: str,
        port: int | None,
        env: dict[str, str] | None = None,
        volumes: list[str] = (),  # type: ignore[assignment]
        options: list[str] = (),  # type: ignore[assignment]
    ) -> Container:
        """`run -d` the image with its own command; port None: nothing published."""
        self.remove(name)
        command = ["run", "--detach", "--name", name]
        if port is not None:
            command += ["--publish", f"127.0.0.1:{port}:8000"]
        for key, value in (env or {}).items():
            command += ["--env", f"{key}={value}"]
        for volume in volumes:
            command += ["--volume", volume]
        self(*command, *options, image)
        return Container(self, name, port)


@dataclass
class Container:
    engine: Engine
    name: str
    port: int | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        done = self.engine("logs", self.name, check=False)
        return done.stdout + done.stderr

    def state(self) -> dict:
        return json.loads(self.engine("inspect", "--format", "{{json .State}}", self.name).stdout)

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.engine("exec", self.name, *command, timeout=timeout, check=False)

    def wait_ready(self, timeout: float = 90) -> None:
        """Until /++/health answers 200 on the published port (or, with none, inside)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if not state.get("Running"):
                raise EngineError(f"{self.name} exited with {state.get('ExitCode')}:\n{self.logs()}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise EngineError(f"{self.name}: /++/health did not answer in {timeout:.0f} s:\n{self.logs()}")

    def healthy(self) -> bool:
        if self.port is None:
            return self.exec("python", "-c", HEALTH_PROBE).returncode == 0
        try:
            return httpx.get(f"{self.url}/++/health", timeout=2).status_code == 200
        except httpx.HTTPError:  # the engine's port forwarder answers before the simulator does
            return False

    def wait_log(self, text: str, timeout: float = 30) -> str:
        """The logs once they hold `text` (a banner printed just after the port opens)."""
        deadline = time.monotonic() + timeout
        while text not in (logs := self.logs()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return logs

    def wait_exit(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if not state.get("Running") and state.get("Status") != "created":
                return state
            time.sleep(0.3)
        raise EngineError(f"{self.name} still runs after {timeout:.0f} s:\n{self.logs()}")

    def stop(self, grace: int = 30) -> float:
        """SIGTERM, and SIGKILL after `grace` seconds, as `docker stop` does: the seconds it took."""
        started = time.monotonic()
        self.engine("stop", "--time", str(grace), self.name, timeout=grace + 60)
        return time.monotonic() - started


HEALTH_PROBE = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/++/health', timeout=2)"
