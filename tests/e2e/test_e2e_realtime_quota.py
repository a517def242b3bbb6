"""Realtime sessions across the simulator, end to end with the openai SDK through a real
mitmdump: a new session over the deployment's request quota gets Azure's 429 before the
upgrade; a response the token window has no room for fails with rate_limit_exceeded; the
content filter ends a response on a blocked prompt, the session kept; a declared stream cut
drops the socket mid-response; a 503 fault answers the handshake; the aoai_realtime_*
metrics count what the sessions did."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
import websockets
from helpers import only, realtime_ga, scrape, until_event, value

FILTER = {"blockAt": "low", "prompt": {"hate": [{"term": "lighthouses", "severity": "low"}]}}
DEPLOYMENTS = {
    "rt-rpm": {"model": "gpt-realtime", "requestsPerMinute": 6},  # one session per 10 s window
    "rt-tpm": {"model": "gpt-realtime", "tokensPerMinute": 150},
    "rt-filter": {"model": "gpt-realtime", "contentFilter": FILTER},
    "rt-cut": {"model": "gpt-realtime", "faults": only(kind="streamCut", afterTokens=3)},
    "rt-503": {"model": "gpt-realtime", "faults": only(kind="503", retryAfter=2)},
}
SAY = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from conftest import start_simulator

    sim = start_simulator(tmp_path_factory.mktemp("realtime-quota"), {"SIMULATOR_LATENCY": "false"})
    r = httpx.patch(sim.url + "/++/config", headers={"api-key": sim.key}, json={"deployments": DEPLOYMENTS})
    assert r.status_code == 200, r.text
    yield sim
    sim.stop()


async def text_turn(conn, words: dict = SAY):
    seen: list[str] = []
    await conn.conversation.item.create(item=words)
    await conn.response.create(response={"output_modalities": ["text"]})
    return await until_event(conn, "response.done", seen), seen


def handshake(sim, deployment: str):
    url = sim.url.replace("http://", "ws://") + f"/openai/v1/realtime?model={deployment}"
    return websockets.connect(url, additional_headers={"api-key": sim.key})


def test_a_session_over_the_request_quota_gets_azures_429_before_the_upgrade(sim):
    async def go():
        async with handshake(sim, "rt-rpm") as first:
            assert '"session.created"' in await first.recv()
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with handshake(sim, "rt-rpm"):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert b'"code":"429"' in response.body.replace(b" ", b"")

    asyncio.run(go())


def test_a_full_token_window_fails_a_response_with_rate_limit_exceeded(sim):
    async def go():
        async with realtime_ga(sim).realtime.connect(model="rt-tpm") as conn:
            first, seen = await text_turn(conn)
            assert first.response.status == "completed"
            assert "rate_limits.updated" in seen
            for _ in range(10):  # each turn charges its tokens; the window fills within a few
                refused, _ = await text_turn(conn)
                if refused.response.status != "completed":
                    break
            assert refused.response.status == "failed"
            error = refused.response.status_details.error
            assert (error.type, error.code) == ("tokens", "rate_limit_exceeded")
            assert refused.response.output == []

    asyncio.run(go())


def test_rate_limits_updated_shows_the_deployments_remaining_figures(sim):
    async def go():
        async with realtime_ga(sim).realtime.connect(model="gpt-realtime") as conn:
            seen: list[str] = []
            await conn.conversation.item.create(item=SAY)
            await conn.response.create(response={"output_modalities": ["text"]})
            limits = await until_event(conn, "rate_limits.updated", seen)
            figures = {f.name: f for f in limits.rate_limits}
            # gpt-realtime: the catalogue's default tokens per minute; requests of the short window,
            # this session's handshake among them
            assert figures["tokens"].limit == 100_000 and figures["tokens"].remaining <= 100_000
            assert 0 < figures["requests"].remaining < figures["requests"].limit
            await until_event(conn, "response.done", seen)

    asyncio.run(go())


def test_a_filtered_prompt_ends_its_response_and_the_session_goes_on(sim):
    async def go():
        async with realtime_ga(sim).realtime.connect(model="rt-filter") as conn:
            bad = {**SAY, "content": [{"type": "input_text", "text": "I hate lighthouses."}]}
            done, seen = await text_turn(conn, bad)
            assert done.response.status == "incomplete"
            assert done.response.status_details.reason == "content_filter"
            assert "response.output_text.delta" not in seen
            again, _ = await text_turn(conn)
            assert again.response.status == "completed"

    asyncio.run(go())


def test_a_stream_cut_drops_the_socket_mid_response(sim):
    async def go():
        seen: list[str] = []
        with pytest.raises((openai.OpenAIError, websockets.ConnectionClosed, AssertionError)):
            async with realtime_ga(sim).realtime.connect(model="rt-cut") as conn:
                await conn.conversation.item.create(item=SAY)
                await conn.response.create(response={"output_modalities": ["text"]})
                await until_event(conn, "response.done", seen)
        assert seen.count("response.output_text.delta") == 3
        assert "response.done" not in seen

    asyncio.run(go())
    samples = scrape(sim)
    assert value(samples, "aoai_faults_injected_total", deployment="rt-cut", kind="streamCut") >= 1


def test_a_503_fault_answers_the_handshake(sim):
    async def go():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with handshake(sim, "rt-503"):
                pass
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["retry-after"] == "2"

    asyncio.run(go())


def test_metrics_count_sessions_events_audio_and_first_audio(sim):
    async def go():
        async with realtime_ga(sim).realtime.connect(model="gpt-realtime") as conn:
            await conn.conversation.item.create(item=SAY)
            await conn.response.create(response={"output_modalities": ["audio"]})
            await until_event(conn, "response.done", [])

    asyncio.run(go())
    samples = scrape(sim)
    assert value(samples, "aoai_realtime_sessions_total", deployment="gpt-realtime") >= 1
    assert value(samples, "aoai_realtime_sessions", deployment="gpt-realtime") == 0
    assert value(samples, "aoai_realtime_events_total", deployment="gpt-realtime", direction="in") >= 2
    assert value(samples, "aoai_realtime_events_total", deployment="gpt-realtime", direction="out") > 5
    assert value(samples, "aoai_realtime_audio_seconds_total", deployment="gpt-realtime", direction="out") > 0
    assert value(samples, "aoai_realtime_first_audio_seconds_count", deployment="gpt-realtime") >= 1
