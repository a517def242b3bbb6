"""The Realtime API end to end with the openai SDK, through a real mitmdump: a text turn on the
GA path (`OpenAI(base_url=…/openai/v1/).realtime`) and on the preview path
(`AsyncAzureOpenAI(...).beta.realtime`), an audio turn with server VAD from generated speech, a
function-call round trip; with latency on, a cancel mid-response; and a plain `websockets`
client sending garbage frames (not JSON, binary, an unknown type), each answered by an
`error` event with the session still usable."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
from helpers import realtime_ga, until_event
from openai import AsyncAzureOpenAI
from websockets.asyncio.client import connect

PREVIEW = "2025-04-01-preview"
DEPLOYMENT = "gpt-realtime"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from conftest import start_simulator

    sim = start_simulator(tmp_path_factory.mktemp("realtime"), {"SIMULATOR_LATENCY": "false"})
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def timed_sim(tmp_path_factory):
    """Latency on: answers wait for their first audio, then play in real time."""
    from conftest import start_simulator

    sim = start_simulator(tmp_path_factory.mktemp("realtime-timed"), {"SIMULATOR_LATENCY": "true"})
    yield sim
    sim.stop()


def preview(sim) -> AsyncAzureOpenAI:
    ws = sim.url.replace("http://", "ws://")
    return AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_key=sim.key, api_version=PREVIEW, websocket_base_url=ws + "/openai"
    )


def test_a_text_turn_on_the_ga_path(sim):
    async def go():
        async with realtime_ga(sim).realtime.connect(model=DEPLOYMENT) as conn:
            seen: list[str] = []
            await until_event(conn, "session.created", seen)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await until_event(conn, "session.updated", seen)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}
            )
            await conn.response.create()
            done = await until_event(conn, "response.done", seen)
            assert done.response.status == "completed"
            assert "response.output_text.delta" in seen and done.response.usage.output_tokens > 0

    asyncio.run(go())


def test_a_text_turn_on_the_preview_path_with_beta_events(sim):
    async def go():
        async with preview(sim).beta.realtime.connect(model=DEPLOYMENT) as conn:
            seen: list[str] = []
            await until_event(conn, "session.created", seen)
            await conn.session.update(session={"modalities": ["text"]})
            await until_event(conn, "session.updated", seen)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}
            )
            await conn.response.create()
            done = await until_event(conn, "response.done", seen)
            assert done.response.status == "completed" and "response.text.delta" in seen

    asyncio.run(go())


def speech(seconds_silence: float, seconds_voice: float) -> bytes:
    """PCM16 24 kHz mono: silence, a loud tone (the VAD hears speech), silence."""
    rate = 24_000
    quiet = np.zeros(int(rate * seconds_silence), dtype=np.int16)
    t = np.arange(int(rate * seconds_voice)) / rate
    voice = (np.sin(2 * np.pi * 220 * t) * 12_000).astype(np.int16)
    return np.concatenate([quiet, voice, quiet, quiet]).tobytes()


def test_an_audio_turn_with_server_vad(sim):
    async def go():
        async with realtime_ga(sim).realtime.connect(model=DEPLOYMENT) as conn:
            seen: list[str] = []
            await until_event(conn, "session.created", seen)
            audio = speech(0.5, 1.0)
            for start in range(0, len(audio), 9600):  # 200 ms pieces, as a microphone sends them
                await conn.input_audio_buffer.append(audio=base64.b64encode(audio[start : start + 9600]).decode())
            done = await until_event(conn, "response.done", seen)
            assert seen.index("input_audio_buffer.speech_started") < seen.index("input_audio_buffer.speech_stopped")
            assert "input_audio_buffer.committed" in seen and "response.output_audio.delta" in seen
            assert done.response.usage.input_token_details.audio_tokens > 0

    asyncio.run(go())


def test_a_function_call_round_trip_and_a_cancel(sim):
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }

    async def go():
        async with realtime_ga(sim).realtime.connect(model=DEPLOYMENT) as conn:
            seen: list[str] = []
            await until_event(conn, "session.created", seen)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [tool]})
            await until_event(conn, "session.updated", seen)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}
            )
            await conn.response.create()
            call = await until_event(conn, "response.function_call_arguments.done", seen)
            assert "city" in __import__("json").loads(call.arguments)
            await until_event(conn, "response.done", seen)
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 20}'}
            )
            await conn.response.create()
            done = await until_event(conn, "response.done", seen)
            assert done.response.status == "completed"
            assert any(item.type == "message" for item in done.response.output)

    asyncio.run(go())


def test_a_cancel_mid_response_with_latency_on(timed_sim):
    async def go():
        async with realtime_ga(timed_sim).realtime.connect(model=DEPLOYMENT) as conn:
            seen: list[str] = []
            await until_event(conn, "session.created", seen)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
            await until_event(conn, "session.updated", seen)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell a story."}]}
            )
            asked = time.monotonic()
            await conn.response.create()
            await until_event(conn, "response.output_audio.delta", seen)
            assert time.monotonic() - asked >= 0.3  # the deployment's time to first audio was waited
            await conn.response.cancel()
            before = len(seen)
            done = await until_event(conn, "response.done", seen)
            assert done.response.status == "cancelled"
            assert done.response.status_details.reason == "client_cancelled"
            # At most a delta already on its way when the cancel left; a whole answer is many seconds of them.
            assert seen[before:].count("response.output_audio.delta") <= 1
            assert done.response.output[0].status == "incomplete"
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await until_event(conn, "response.output_audio.delta", seen)

    asyncio.run(go())


def test_garbage_frames_get_error_events_and_the_session_goes_on(sim):
    url = sim.url.replace("http://", "ws://") + f"/openai/v1/realtime?model={DEPLOYMENT}"

    async def go():
        async with connect(url, additional_headers={"api-key": sim.key}) as ws:

            async def next_event() -> dict:
                async with asyncio.timeout(10):
                    return json.loads(await ws.recv())

            assert (await next_event())["type"] == "session.created"
            garbage = ["this is not json", b"\x00\x01binary", "[1, 2]", json.dumps({"event_id": "evt_none"})]
            codes = ["invalid_json", "invalid_json", "invalid_json", "missing_required_parameter"]
            for frame, code in zip(garbage, codes, strict=True):
                await ws.send(frame)
                event = await next_event()
                assert event["type"] == "error" and event["error"]["code"] == code, event
            await ws.send(json.dumps({"type": "no.such.event", "event_id": "evt_1"}))
            event = await next_event()
            assert event["type"] == "error"
            assert (event["error"]["code"], event["error"]["param"], event["error"]["event_id"]) == (
                "invalid_value",
                "type",
                "evt_1",
            )
            # Still usable: a text turn.
            update = {"type": "realtime", "output_modalities": ["text"]}
            await ws.send(json.dumps({"type": "session.update", "session": update}))
            assert (await next_event())["type"] == "session.updated"
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            while (event := await next_event())["type"] != "response.done":
                assert event["type"] != "error", event
            assert event["response"]["status"] == "completed"

    asyncio.run(go())
