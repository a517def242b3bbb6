"""Realtime sessions recorded through a real mitmdump from a fake Azure realtime server on
loopback, then replayed offline to the openai SDK: the same events get the same answers, an
event that was not recorded gets the `error` event (the session goes on), and a deployment
with nothing recorded gets the replay miss answer to its handshake."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest
import websockets
import yaml
from fake_azure import UPSTREAM_KEY
from helpers import realtime_ga
from websockets.asyncio.server import serve

DEPLOYMENT = "gpt-realtime"
WORDS = ["Hello", " from", " Azure"]
GAP_S = 0.05


class FakeRealtime:
    """A scripted Azure realtime session: session.created, session.updated on session.update,
    and on response.create a text answer in three deltas."""

    def __init__(self) -> None:
        self.handshakes: list[dict[str, str]] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Future | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeRealtime:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *_) -> None:
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(5)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._session, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    async def _session(self, ws) -> None:
        self.handshakes.append({"path": ws.request.path, **dict(ws.request.headers.raw_items())})
        ids = iter(range(1, 1000))

        async def send(event: dict) -> None:
            await ws.send(orjson.dumps({**event, "event_id": f"event_{next(ids)}"}).decode())

        session = {"id": "sess_1", "type": "realtime", "model": DEPLOYMENT, "output_modalities": ["audio"]}
        await send({"type": "session.created", "session": session})
        async for message in ws:
            event = orjson.loads(message)
            if event["type"] == "session.update":
                await send({"type": "session.updated", "session": {**session, **event["session"]}})
            elif event["type"] == "response.create":
                response = {"id": "resp_1", "object": "realtime.response", "status": "in_progress", "output": []}
                await send({"type": "response.created", "response": response})
                for word in WORDS:
                    await asyncio.sleep(GAP_S)
                    await send({"type": "response.output_text.delta", "response_id": "resp_1", "delta": word})
                done = {**response, "status": "completed", "usage": {"total_tokens": 7, "output_tokens": 3}}
                await send({"type": "response.done", "response": done})


async def until(connection, kind: str, seen: list) -> object:
    async for event in connection:
        seen.append(event)
        if event.type == kind:
            return event
    raise AssertionError(f"the session ended before {kind}: {[e.type for e in seen]}")


async def a_text_turn(sim) -> list:
    seen: list = []
    async with realtime_ga(sim).realtime.connect(model=DEPLOYMENT) as conn:
        await until(conn, "session.created", seen)
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await until(conn, "session.updated", seen)
        await conn.response.create()
        await until(conn, "response.done", seen)
    return seen


@pytest.fixture
def recorded(simulator_factory, tmp_path):
    folder = tmp_path / "rec"
    with FakeRealtime() as azure:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": azure.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                "RECORDING_DIR": str(folder),
            }
        )
        live = asyncio.run(a_text_turn(sim))
        file = folder / f"{DEPLOYMENT}.realtime.yaml"
        deadline = time.monotonic() + 5
        while not file.exists() and time.monotonic() < deadline:  # written once the session ended
            time.sleep(0.05)
        sim.stop()
        assert azure.handshakes and azure.handshakes[0]["api-key"] == UPSTREAM_KEY
    return folder, live


def test_a_relayed_session_is_recorded_as_one_document(recorded):
    folder, live = recorded
    assert "".join(e.delta for e in live if e.type == "response.output_text.delta") == "".join(WORDS)
    text = (folder / f"{DEPLOYMENT}.realtime.yaml").read_text()
    assert UPSTREAM_KEY not in text and "test-key" not in text
    (doc,) = list(yaml.safe_load_all(text))
    head = doc["realtime"]
    assert head["deployment"] == DEPLOYMENT and head["flavour"] == "ga"
    assert head["path"] == "/openai/v1/realtime" and head["query"] == {"model": DEPLOYMENT}
    sides = [
        ("client" if "client" in e else "server", (e.get("client") or e.get("server"))["type"]) for e in doc["events"]
    ]
    assert sides == [
        ("server", "session.created"),
        ("client", "session.update"),
        ("server", "session.updated"),
        ("client", "response.create"),
        ("server", "response.created"),
        ("server", "response.output_text.delta"),
        ("server", "response.output_text.delta"),
        ("server", "response.output_text.delta"),
        ("server", "response.done"),
    ]
    offsets = [e["at_ms"] for e in doc["events"]]
    assert offsets == sorted(offsets)
    # The deltas came GAP_S apart, and their offsets say so.
    assert offsets[7] - offsets[5] >= 2 * GAP_S * 1000 * 0.8


def test_a_recorded_session_replays_to_the_same_events(recorded, simulator_factory):
    folder, live = recorded
    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    started = time.perf_counter()
    replayed = asyncio.run(a_text_turn(sim))
    took = time.perf_counter() - started
    assert [e.model_dump() for e in replayed] == [e.model_dump() for e in live]
    assert took >= 3 * GAP_S * 0.8  # at the recorded pace


def test_an_event_that_was_not_recorded_gets_the_error_event_and_the_session_goes_on(recorded, simulator_factory):
    folder, _ = recorded
    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})

    async def go():
        seen: list = []
        async with realtime_ga(sim).realtime.connect(model=DEPLOYMENT) as conn:
            await until(conn, "session.created", seen)
            await conn.response.create(event_id="mine_1")  # the recording expects session.update first
            error = await until(conn, "error", seen)
            assert error.error.code == "recording_not_found" and error.error.event_id == "mine_1"
            assert "session.update" in error.error.message
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await until(conn, "session.updated", seen)
            await conn.response.create()
            await until(conn, "response.done", seen)

    asyncio.run(go())


def test_a_deployment_with_nothing_recorded_gets_the_miss_answer(recorded, simulator_factory):
    folder, _ = recorded
    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    ws = sim.url.replace("http://", "ws://")

    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(
                f"{ws}/openai/v1/realtime?model=gpt-realtime-mini", additional_headers={"api-key": sim.key}
            ):
                pass
        response = refused.value.response
        assert response.status_code == 404
        assert orjson.loads(response.body)["error"]["code"] == "RecordingNotFound"

    asyncio.run(go())
