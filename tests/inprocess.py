"""The whole simulator in this process: every stage `aoai.stack.build_addons` stacks, loaded
into mitmproxy's test master, with requests driven through their hooks as mitmproxy's proxy
drives them. No mitmdump starts and no socket carries a request, so a test of what the
simulator answers costs milliseconds instead of a process start.

    def test_a_chat(stack_factory):  # or the module's shared `stack` fixture
        stack = stack_factory({"ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS": "false"})
        r = stack.post("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", json={...})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3

The settings come from environment variables, as a real process reads them: the fixtures
(tests/conftest.py) remove the caller's own simulator settings, set the tests' ones and work in
the test's folder, for as long as the stack runs. The stack runs on an event loop of its own, in a
thread, so background work (windows, sweeps, deferred saves) goes on between requests as it
does in a running proxy, and tests stay plain functions.

What this cannot show stays with the end-to-end tests: sockets and connections, TLS, HTTP/2,
start-up and exit, workers, and streams paced onto a client's own connection. (A stream is
played here through the stages' loopback stream server, the path TLS and HTTP/2 clients take.)
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json as jsonlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

import httpx
from mitmproxy import connection, flow, hooks, http
from mitmproxy.addons import proxyserver
from mitmproxy.options import Options
from mitmproxy.proxy import layers, server_hooks
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from aoai.runtime.config import SimulatorConfig
from aoai.runtime.services import Services
from aoai.runtime.startup import Startup
from aoai.stack import build_addons

API_KEY = "test-key-0123456789"
# Where the requests seem to come to: the address a client would have used.
ADDRESS = ("127.0.0.1", 8000)
# The upstream of a bare `mitmdump -s addons/simulator.py` without AZURE_OPENAI_ENDPOINT.
PLACEHOLDER_ENDPOINT = "https://azure-openai-endpoint.invalid"
CALL_TIMEOUT_S = 60
LOGGERS = ("aoai", "mitmproxy")  # a stage that never finishes fails its test instead of hanging the run


class StartError(RuntimeError):
    """The stack logged errors while it started (a bad setting, deployments file, extension)."""


class WentUpstream(AssertionError):
    """No stage answered: mitmproxy would have sent the request to the upstream server."""


class ClientGaveUp(TimeoutError):
    """The request was not answered within the client's timeout; the client then left."""


class _Errors(logging.Handler):
    """Errors logged while the stack starts: mitmdump exits on them, so a test must too."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # asyncio reports what earlier tests left to the garbage collector (a client of a loop
        # long closed) whenever a collection finds it: not this stack's start.
        if record.name != "asyncio":
            self.lines.append(record.getMessage())


def simulator_environment(env: Mapping[str, str] | None, recordings: str) -> dict[str, str]:
    """What the end-to-end simulators get: the test key, a fixed seed, recordings in the test's
    folder, latency off (unless `env` says otherwise), then `env`."""
    return {
        "SIMULATOR_API_KEY": API_KEY,
        "RECORDING_DIR": recordings,
        "SIMULATOR_SEED": "1",
        "SIMULATOR_LATENCY": "false",
        **(env or {}),
    }


class Stack:
    """A running in-process simulator. Build it with `Stack.start`, end it with `stop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.loop = loop
        self.thread = thread
        self.key = API_KEY
        self.config: SimulatorConfig
        self.addons: list[object] = []
        self.context: taddons.context
        self.upstream: tuple[str, str, int]  # scheme, host, port of the reverse-proxy target
        self.mode = ""
        self._client: httpx.AsyncClient | None = None
        # LOG_LEVEL sets the level of the simulator's loggers for the process; put back at the
        # end, so a later test in this process sees them as it would alone.
        self._log_levels = {name: logging.getLogger(name).level for name in LOGGERS}

    # -- life ----------------------------------------------------------------------------------

    @classmethod
    def start(cls) -> Stack:
        """Build and start the stack with the environment as it is now (settings, cwd)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="in-process simulator", daemon=True)
        thread.start()
        stack = cls(loop, thread)
        try:
            stack.call(stack._start())
        except BaseException:
            stack._restore_log_levels()
            stack._end_loop()
            raise
        return stack

    async def _start(self) -> None:
        errors = _Errors()
        logging.getLogger().addHandler(errors)
        try:
            endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT", "").strip() or PLACEHOLDER_ENDPOINT
            self.mode = f"reverse:{endpoint}"
            parsed = urllib.parse.urlsplit(endpoint)
            scheme = parsed.scheme or "https"
            self.upstream = (scheme, parsed.hostname or "", parsed.port or (443 if scheme == "https" else 80))
            self.config = SimulatorConfig()
            # mitmproxy holds what the simulator registers (the stages as one Pipeline); tests
            # reach the stages themselves.
            registered = build_addons(self.config, Services.build(self.config), Startup())
            self.addons = [stage for addon in registered for stage in getattr(addon, "stages", (addon,))]
            # The listener is chosen, so the stack leaves it alone and no port is bound.
            options = Options(mode=[self.mode], listen_host=ADDRESS[0], listen_port=ADDRESS[1])
            self.context = taddons.context(proxyserver.Proxyserver(), *registered, options=options)
            self.context.master.addons.trigger(hooks.ConfigureHook(set(self.context.options.keys())))
            if errors.lines:
                raise StartError("; ".join(errors.lines))
            await self.context.master.running()
            # The Settings stage freezes what exists at start-up for the process's life; here
            # many stacks come and go in one process, and each must be collectable after its test.
            gc.unfreeze()
            if errors.lines:
                raise StartError("; ".join(errors.lines))
        finally:
            logging.getLogger().removeHandler(errors)

    def stop(self) -> None:
        """Stop every stage (their `done` hooks: saving what autosave left, closing servers);
        once, however often it is called."""
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        try:
            self.call(self._stop())
        finally:
            self._end_loop()

    async def _stop(self) -> None:
        try:
            if self._client is not None:
                await self._client.aclose()
            await self.context.master.done()
        finally:
            self._restore_log_levels()

    def _restore_log_levels(self) -> None:
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = CALL_TIMEOUT_S) -> Any:
        """Run `coroutine` on the stack's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def addon(self, kind: type) -> Any:
        """The stage of this class (for a test that must reach one)."""
        return next(a for a in self.addons if isinstance(a, kind))

    def set_options(self, **values: Any) -> None:
        """Change mitmproxy options, as `--set` or mitmweb's options editor would."""

        async def update() -> None:
            self.context.options.update(**values)

        self.call(update())

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        key: str | None = "",
        timeout: float = 30,
    ) -> http.Response:
        """Send one request through every stage, as from a new client connection; the
        response the client would get. `key`: the api-key header ("" is the stack's key, None
        sends none). Raises ClientGaveUp after `timeout` seconds, WentUpstream when no stage
        answered."""
        return self.call(self.send(self.make_request(method, path, json, content, headers, key), timeout), timeout + 15)

    def get(self, path: str, **kwargs: Any) -> http.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> http.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> http.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> http.Response:
        return self.request("DELETE", path, **kwargs)

    def many(self, requests: Iterable[tuple[str, str, dict[str, Any]]], timeout: float = 30) -> list[http.Response]:
        """Send (method, path, keyword arguments of `request`) requests at once, each on its
        own connection; their responses in the same order."""
        made = [self.make_request(method, path, **kwargs) for method, path, kwargs in requests]

        async def all_of() -> list[http.Response]:
            return list(await asyncio.gather(*(self.send(r, timeout) for r in made)))

        return self.call(all_of(), timeout + 15)

    def make_request(
        self,
        method: str,
        path: str,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        key: str | None = "",
    ) -> http.Request:
        """The request as mitmproxy's reverse mode hands it to the addons."""
        sent = http.Headers(host=f"{ADDRESS[0]}:{ADDRESS[1]}")
        if key is not None:
            sent["api-key"] = key or self.key
        body = b""
        if json is not None:
            sent["content-type"] = "application/json"
            body = jsonlib.dumps(json).encode()
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        named: set[str] = set()
        for name, value in pairs:
            if name.lower() not in named:  # a header given replaces the default one
                named.add(name.lower())
                sent.pop(name, None)
            sent.add(name, value)
        if body or method in ("POST", "PUT", "PATCH"):
            sent.setdefault("content-length", str(len(body)))
        scheme, host, port = self.upstream
        request = http.Request(
            host,
            port,
            method.encode(),
            scheme.encode(),
            b"",
            path.encode(),
            b"HTTP/1.1",
            sent,
            body,
            None,
            0.0,
            0.0,
        )
        return request

    async def send(self, request: http.Request, timeout: float = 30) -> http.Response:
        """Drive one request through the hooks (on the stack's loop)."""
        client = tflow.tclient_conn()
        client.proxy_mode = ProxyMode.parse(self.mode)
        client.tls = False
        client.peername = ("127.0.0.1", 50000)
        client.sockname = ADDRESS
        server = tflow.tserver_conn()
        server.address = (request.host, request.port)
        f = http.HTTPFlow(client, server)
        f.request = request
        request.timestamp_start = request.timestamp_end = _now()
        addons = self.context.master.addons
        await addons.handle_lifecycle(server_hooks.ClientConnectedHook(client))
        try:
            drive = asyncio.ensure_future(self._drive(f))
            try:
                return await asyncio.wait_for(asyncio.shield(drive), timeout)
            except TimeoutError:
                # The client leaves: what a hung stage watches for.
                client.state = connection.ConnectionState.CLOSED
                await addons.handle_lifecycle(server_hooks.ClientDisconnectedHook(client))
                try:
                    await asyncio.wait_for(drive, 10)
                except TimeoutError:
                    drive.cancel()
                raise ClientGaveUp(f"no answer to {request.method} {request.path} within {timeout} s") from None
        finally:
            if client.connected:
                client.state = connection.ConnectionState.CLOSED
                await addons.handle_lifecycle(server_hooks.ClientDisconnectedHook(client))

    async def _drive(self, f: http.HTTPFlow) -> http.Response:
        """The hooks in the order mitmproxy's HTTP layer calls them (layers/http, HttpStream)."""
        addons = self.context.master.addons
        await addons.handle_lifecycle(layers.http.HttpRequestHeadersHook(f))
        if _killed(f):
            return await self._fail(f)
        await addons.handle_lifecycle(layers.http.HttpRequestHook(f))
        if _killed(f):
            return await self._fail(f)
        if f.response is not None:
            f.response.timestamp_start = _now()
            await addons.handle_lifecycle(layers.http.HttpResponseHeadersHook(f))
        else:
            await self._forward(f)
        if _killed(f):
            return await self._fail(f)
        assert f.response is not None
        f.response.timestamp_end = _now()
        await addons.handle_lifecycle(layers.http.HttpResponseHook(f))
        if _killed(f):
            return await self._fail(f)
        return f.response

    async def _forward(self, f: http.HTTPFlow) -> None:
        """mitmproxy sends a request no stage answered to the server it names. Only the stages'
        own loopback servers (paced streams) are reached here; anything else fails the test."""
        request = f.request
        try:
            loopback = ipaddress.ip_address(request.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise WentUpstream(f"no stage answered {request.method} {request.path}: it would go to {request.url}")
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=CALL_TIMEOUT_S)
        sent = self._client.build_request(
            request.method, request.url, headers=list(request.headers.items(multi=True)), content=request.raw_content
        )
        answer = await self._client.send(sent, stream=True)
        try:
            headers = http.Headers([(k, v) for k, v in answer.headers.raw])
            f.response = http.Response(
                b"HTTP/1.1", answer.status_code, answer.reason_phrase.encode(), headers, None, None, _now(), None
            )
            await self.context.master.addons.handle_lifecycle(layers.http.HttpResponseHeadersHook(f))
            f.response.raw_content = b"".join([chunk async for chunk in answer.aiter_raw()])
        finally:
            await answer.aclose()

    async def _fail(self, f: http.HTTPFlow) -> http.Response:
        await self.context.master.addons.handle_lifecycle(layers.http.HttpErrorHook(f))
        raise ConnectionResetError(f"the simulator closed the connection: {f.error.msg if f.error else 'killed'}")


def _killed(f: http.HTTPFlow) -> bool:
    return f.error is not None and f.error.msg == flow.Error.KILLED_MESSAGE


def _now() -> float:
    return time.time()
