"""Helpers shared by the unit tests: flows made with mitmproxy's test kit, and a clean
environment for the settings.

(Not a conftest.py: tests/conftest.py is imported as `conftest` by other test modules.)
"""

from __future__ import annotations

import asyncio
import json
import random
from functools import partial
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow

from aoai.generators import BUILT_IN
from aoai.runtime.config import SimulatorConfig
from aoai.runtime.recording import RecordingStore
from aoai.runtime.services import Services
from aoai.runtime.streams import StreamServer
from aoai.stack import declared_options
from aoai.stages import routing, settings

API_KEY = "unit-test-key-0123456789"
VERSION = "2024-10-21"


def chat_path(deployment: str = "gpt-4o", version: str | None = VERSION) -> str:
    query = f"?api-version={version}" if version is not None else ""
    return f"/openai/deployments/{deployment}/chat/completions{query}"


def make_flow(
    method: str = "POST",
    path: str = "/",
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    key: str | None = API_KEY,
    raw: bytes | None = None,
) -> http.HTTPFlow:
    """A flow as it reaches the addons: `body` is sent as JSON, `raw` as it is."""
    f = tflow.tflow()
    f.request.method = method
    f.request.path = path
    f.request.headers.clear()
    if key is not None:
        f.request.headers["api-key"] = key
    for name, value in (headers or {}).items():
        f.request.headers[name] = value
    if raw is not None:
        f.request.content = raw
    elif body is not None:
        f.request.headers["content-type"] = "application/json"
        f.request.content = json.dumps(body).encode()
    else:
        f.request.content = b""
    routing.resolve(f, None)  # every flow has its context from the routing stage on
    return f


def json_of(response: http.Response) -> Any:
    assert response is not None, "no response was set"
    return json.loads(response.content)


def make_config(**changes: Any) -> SimulatorConfig:
    """A generate-mode configuration with the test key, no latency and a fixed seed (so no test
    depends on a rare random draw)."""
    config = SimulatorConfig(api_key=API_KEY, latency_enabled=False, seed=1, generators=list(BUILT_IN))
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def run(coro):
    return asyncio.run(coro)


def rng(seed: int = 1) -> random.Random:
    return random.Random(seed)


def clear_settings_env(monkeypatch) -> None:
    """No simulator setting comes from the caller's environment (restored after the test)."""
    for option in declared_options():
        monkeypatch.delenv(option.env, raising=False)


def proxy_options():
    """mitmproxy options with the listener already chosen, so Settings leaves it alone and no
    test ever binds a port."""
    from mitmproxy.options import Options

    return Options(mode=["reverse:http://upstream.invalid"], listen_port=1)


def settings_context(config: SimulatorConfig, *addons):
    """A taddons context with the proxy server's options, the Settings addon for `config`, and
    `addons`; returns (context, settings)."""
    from mitmproxy.addons import proxyserver
    from mitmproxy.test import taddons

    s = settings.Settings(config)
    return taddons.context(
        proxyserver.Proxyserver(), s, StageOptions(config, s.startup), *addons, options=proxy_options()
    ), s


class StageOptions:
    """The options of the other stages, declared and applied to the config as those stages do,
    without the stages themselves (a test adds the one it is about)."""

    def __init__(self, config: SimulatorConfig, startup) -> None:
        from aoai.stages import auth, extensions, flowcap, generate, intake, ratelimit, record, replay

        self.config, self.startup = config, startup
        self.owners = (auth, intake, ratelimit, extensions, record, replay, generate, flowcap)

    def load(self, loader) -> None:
        from aoai.runtime.options import declare

        self.env_errors = {owner: declare(loader, owner.OPTIONS) for owner in self.owners}

    def configure(self, updated: set[str]) -> None:
        from aoai.runtime.options import names

        for owner in self.owners:
            if updated & names(owner.OPTIONS):
                self.startup.applying(partial(self._apply, owner, updated), self.env_errors[owner])

    def _apply(self, owner, updated: set[str]) -> None:
        from mitmproxy import ctx

        from aoai.runtime.options import check

        if hasattr(owner, "apply"):
            owner.apply(ctx.options, self.config, updated)
        else:
            check(ctx.options, owner.OPTIONS, updated)


def start(settings_addon) -> None:
    """Run the Settings addon's `running` hook: from now on bad values raise."""
    asyncio.run(settings_addon.running())


def make_services(config: SimulatorConfig, streams: StreamServer | None = None) -> Services:
    """The services a stack would build for `config` (with `streams`, when given), bounded as it says."""
    services = Services(streams=streams or StreamServer(), recordings=RecordingStore(config.recording.dir))
    services.configure(config)
    return services


_SERVICES: dict[int, tuple[SimulatorConfig, Services]] = {}


def services_for(config: SimulatorConfig, streams: StreamServer | None = None) -> Services:
    """The services of the stack `config` belongs to: made on first use (with `streams`, when
    given), the same ones after that, as one stack keeps them."""
    kept = _SERVICES.get(id(config))
    if kept is None or kept[0] is not config or (streams is not None and kept[1].streams is not streams):
        kept = _SERVICES[id(config)] = (config, make_services(config, streams))
    return kept[1]


def admit(flow: http.HTTPFlow, config: SimulatorConfig, services: Services | None = None) -> http.Response | None:
    """Run the routing and checks stages on a flow, as the proxy does first: the error Azure
    would answer, or None with the flow's context filled in."""
    from aoai.stages import checks, routing

    if flow.response is not None:
        return None
    services = services or services_for(config)
    context = routing.resolve(flow, config, services=services)
    flow.response = checks.check(
        context, services.labels if services else None, services.responses if services else None
    )
    return flow.response
