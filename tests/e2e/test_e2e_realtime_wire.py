"""Realtime handshakes and the WebSocket relay, end to end: a plain `websockets` client through a
real mitmdump, on Azure's two realtime paths. The session is a stand-in an extension plugs in
(`config.realtime_sessions`): it says session.created, then answers each frame with one event,
so what is tested here is the transport, not the protocol."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

PREVIEW = "2025-04-01-preview"

STAND_IN = """
import json

MESSAGES = []


class Echo:
    def __init__(self, ticket, emit):
        self.ticket, self.emit = ticket, emit

    async def start(self):
        t = self.ticket
        await self.emit({"type": "session.created", "flavour": t.flavour, "deployment": t.deployment.name,
                         "model": t.deployment.model.name, "api_version": t.api_version,
                         "ttft_ms": t.latency.time_to_first_token_ms.mean, "query": t.query,
                         "secret_headers": sorted(k for k in t.headers if k.lower() in ("api-key", "authorization"))})

    async def receive(self, message):
        kind = "binary" if isinstance(message, bytes) else "text"
        await self.emit({"type": "echo", "kind": kind, "size": len(message)})

    async def close(self):
        with open("closed.txt", "a") as f:
            f.write("closed\\n")


def initialize(config):
    config.realtime_sessions = Echo


def websocket_message(flow):
    with open("messages.txt", "a") as f:
        f.write(("client" if flow.websocket.messages[-1].from_client else "server") + "\\n")
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from conftest import start_simulator

    folder = tmp_path_factory.mktemp("realtime")
    (folder / "stand_in.py").write_text(STAND_IN)
    env = {
        "SIMULATOR_LATENCY": "false",
        "EXTENSION_PATH": str(folder / "stand_in.py"),
        "REALTIME_MAX_SESSION_SECONDS": "3",
    }
    running = start_simulator(folder, env)
    running.folder = folder
    yield running
    running.stop()


def ws_url(sim, path: str) -> str:
    return "ws" + sim.url.removeprefix("http") + path


async def talk(url: str, headers: dict[str, str] | None = None, frames: tuple = ("hello",)) -> list[dict]:
    async with connect(url, additional_headers=headers or {}, open_timeout=5) as ws:
        events = [json.loads(await asyncio.wait_for(ws.recv(), 5))]
        for frame in frames:
            await ws.send(frame)
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    return events


def run(coro):
    return asyncio.run(coro)


def test_v1_path_runs_a_ga_session_with_the_deployment_in_model(sim):
    events = run(talk(ws_url(sim, "/openai/v1/realtime?model=gpt-realtime"), {"api-key": sim.key}, ("hi", b"\x00" * 5)))
    created = events[0]
    assert created["type"] == "session.created" and created["flavour"] == "ga"
    assert created["deployment"] == "gpt-realtime" and created["model"] == "gpt-realtime"
    assert created["api_version"] is None and created["secret_headers"] == []
    assert created["ttft_ms"] == 450
    assert events[1:] == [{"type": "echo", "kind": "text", "size": 2}, {"type": "echo", "kind": "binary", "size": 5}]


def test_preview_path_runs_a_beta_session_with_the_key_in_the_query(sim):
    path = f"/openai/realtime?api-version={PREVIEW}&deployment=my-voice&api-key={sim.key}"
    created = run(talk(ws_url(sim, path)))[0]
    assert created["flavour"] == "beta" and created["api_version"] == PREVIEW
    # An undefined deployment runs the default realtime model; the key never reaches the session.
    assert created["deployment"] == "my-voice" and created["model"] == "gpt-realtime"
    assert "api-key" not in created["query"] and created["query"]["deployment"] == "my-voice"


def test_bearer_key_works_too(sim):
    created = run(
        talk(ws_url(sim, "/openai/v1/realtime?model=gpt-4o-realtime-preview"), {"authorization": f"Bearer {sim.key}"})
    )
    assert created[0]["model"] == "gpt-4o-realtime-preview"


def test_mitmproxy_sees_every_message_and_the_session_is_closed(sim):
    messages = sim.folder / "messages.txt"
    before = messages.read_text().count("\n") if messages.exists() else 0
    run(talk(ws_url(sim, "/openai/v1/realtime?model=gpt-realtime"), {"api-key": sim.key}, ("a", "b", "c")))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and messages.read_text().count("\n") < before + 7:
        time.sleep(0.05)
    seen = messages.read_text().splitlines()[before:]
    assert seen.count("client") == 3 and seen.count("server") == 4
    assert (sim.folder / "closed.txt").exists()


@dataclass
class Refusal:
    status_code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


async def refusal(url: str, headers: dict[str, str] | None = None) -> Refusal:
    """The HTTP answer to a handshake that did not become a WebSocket."""
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers or {}, open_timeout=5):
            pass
    response = caught.value.response
    return Refusal(response.status_code, {k.lower(): v for k, v in response.headers.raw_items()}, response.body or b"")


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/openai/v1/realtime?model=gpt-realtime", {"api-key": "wrong"}, 401, "401"),
        ("/openai/v1/realtime?model=gpt-realtime", {}, 401, "401"),
        ("/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-realtime&api-key=wrong", {}, 401, "401"),
        ("/openai/v1/realtime?model=gpt-4o", "key", 400, "OperationNotSupported"),
        ("/openai/realtime?api-version=2025-04-01-preview&deployment=gpt-4o", "key", 400, "OperationNotSupported"),
        ("/openai/realtime?deployment=gpt-realtime", "key", 404, "404"),
        ("/openai/realtime?api-version=2024-10-21&deployment=gpt-realtime", "key", 400, "BadRequest"),
        ("/openai/realtime?api-version=2024-08-01-preview&deployment=gpt-realtime", "key", 400, "BadRequest"),
        ("/openai/v1/realtime?model=gpt-realtime&api-version=2025-04-01-preview", "key", 401, "401"),
        ("/openai/v1/realtime", "key", 400, "missing_required_parameter"),
    ],
)
def test_failed_handshakes_are_azure_json_errors(sim, path, headers, status, code):
    if headers == "key":
        headers = {"api-key": sim.key}
    r = run(refusal(ws_url(sim, path), headers))
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
    assert r.headers.get("apim-request-id")


def test_unknown_deployment_is_404_when_undefined_ones_are_refused(simulator_factory, tmp_path):
    (tmp_path / "deployments.json").write_text(json.dumps({"voice": {"model": "gpt-realtime-mini"}}))
    sim = simulator_factory(
        {"DEPLOYMENTS_FILE": str(tmp_path / "deployments.json"), "ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS": "false"}
    )
    r = run(refusal(ws_url(sim, "/openai/v1/realtime?model=nope"), {"api-key": sim.key}))
    assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"


def test_a_plain_get_is_not_a_websocket(sim):
    r = httpx.get(f"{sim.url}/openai/v1/realtime?model=gpt-realtime", headers={"api-key": sim.key})
    assert r.status_code == 400 and "WebSocket" in r.json()["error"]["message"]
    assert r.headers.get("apim-request-id")


def test_a_session_ends_after_its_longest_duration(sim):
    async def wait_out() -> tuple[dict, int]:
        async with connect(
            ws_url(sim, "/openai/v1/realtime?model=gpt-realtime"), additional_headers={"api-key": sim.key}
        ) as ws:
            await ws.recv()  # session.created
            last = json.loads(await asyncio.wait_for(ws.recv(), 6))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 6)
            return last, ws.close_code

    last, code = run(wait_out())
    assert last["type"] == "error" and last["error"]["code"] == "session_expired"
    assert code == 1000
