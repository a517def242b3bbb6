"""Record through the simulator from a fake Azure on loopback, then replay offline: streams,
the SDK, concurrency and kills. (Matching, misses, edits and saving: tests/stack/test_stack_record_replay.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import API_KEY, API_VERSION
from fake_azure import CHUNK_GAP, UPSTREAM_KEY, FakeAzure
from openai import AsyncAzureOpenAI, AzureOpenAI, NotFoundError

MESSAGES = [{"role": "user", "content": "hello there"}]


def client(sim, retries: int = 0) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=retries)


def record_env(upstream: FakeAzure, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "SIMULATOR_MODE": "record",
        "AZURE_OPENAI_ENDPOINT": upstream.url,
        "AZURE_OPENAI_KEY": UPSTREAM_KEY,
        "RECORDING_DIR": str(folder),
        **extra,
    }


def recorded_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


def test_record_then_replay_offline(simulator_factory, tmp_path):
    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        sim = simulator_factory(record_env(upstream, folder))
        c = client(sim)
        recorded = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
        embedded = c.embeddings.create(model="embed", input=["a", "b"], encoding_format="float")
        started = time.perf_counter()
        stream = c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "stream me"}], stream=True
        )
        live = [
            (time.perf_counter() - started, ch.choices[0].delta.content)
            for ch in stream
            if ch.choices and ch.choices[0].delta.content
        ]
        assert len(upstream.requests) == 3
        # The client's simulator key never reaches Azure; Azure's key does.
        assert all(r["headers"].get("api-key") == UPSTREAM_KEY for r in upstream.requests)
        # A request already recorded is answered from the recording, not forwarded.
        again = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
        assert again.choices[0].message.content == recorded.choices[0].message.content
        assert len(upstream.requests) == 3
        sim.stop()
    # Live streaming: the client saw chunks spread over time, not all at once.
    assert live[-1][0] - live[0][0] > CHUNK_GAP

    files = recorded_files(folder)
    assert [f.name for f in files] == ["embed.embeddings.yaml", "gpt-4o.chat-completions.yaml"]
    for f in files:
        text = f.read_text()
        assert API_KEY not in text and UPSTREAM_KEY not in text and "upstream-cookie" not in text
        docs = list(yaml.safe_load_all(text))
        assert all(isinstance(d["request"]["body"], dict) for d in docs)  # JSON as YAML, editable
        assert "x-ratelimit-remaining-tokens" not in str(docs)
    chat_docs = list(yaml.safe_load_all((folder / "gpt-4o.chat-completions.yaml").read_text()))
    streamed = next(d for d in chat_docs if "events" in d["response"])
    offsets = [e["at_ms"] for e in streamed["response"]["events"]]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] > 100
    assert streamed["response"]["events"][-1]["data"] == "[DONE]"

    # Replay: the upstream is gone; the answers are the same.
    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    c = client(sim)
    replayed = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    assert replayed.choices[0].message.content == recorded.choices[0].message.content
    assert replayed.id == recorded.id
    assert (
        c.embeddings.create(model="embed", input=["a", "b"], encoding_format="float").data[1].embedding
        == embedded.data[1].embedding
    )
    started = time.perf_counter()
    stream = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "stream me"}], stream=True)
    again = [
        (time.perf_counter() - started, ch.choices[0].delta.content)
        for ch in stream
        if ch.choices and ch.choices[0].delta.content
    ]
    assert [t for _, t in again] == [t for _, t in live]
    # Paced as recorded: the spread between first and last token within 10 % (plus a little slack).
    live_spread, replay_spread = live[-1][0] - live[0][0], again[-1][0] - again[0][0]
    assert abs(replay_spread - live_spread) <= 0.1 * live_spread + 0.03


def test_concurrent_recording_loses_nothing(simulator_factory, tmp_path):
    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        sim = simulator_factory(record_env(upstream, folder))

        async def main():
            c = AsyncAzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)
            await asyncio.gather(
                *(
                    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"question {i}"}])
                    for i in range(200)
                )
            )

        asyncio.run(main())
        sim.stop()
    docs = list(yaml.safe_load_all((folder / "gpt-4o.chat-completions.yaml").read_text()))
    assert len(docs) == 200
    assert {d["request"]["body"]["messages"][0]["content"] for d in docs} == {f"question {i}" for i in range(200)}


def test_kill_during_recording_leaves_loadable_files(simulator_factory, tmp_path):
    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        sim = simulator_factory(record_env(upstream, folder))

        async def main():
            c = AsyncAzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)
            tasks = [
                asyncio.create_task(
                    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}])
                )
                for i in range(60)
            ]
            # Kill it once some interactions are written and others are still in flight.
            recording = folder / "gpt-4o.chat-completions.yaml"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (recording.exists() and recording.stat().st_size):
                await asyncio.sleep(0.02)
            os.kill(sim.process.pid, signal.SIGKILL)
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())
        sim.process.wait(5)
    text = (folder / "gpt-4o.chat-completions.yaml").read_text()
    docs = list(yaml.safe_load_all(text))
    assert docs and all(d["response"]["status"] == 200 for d in docs)
    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    content = (
        client(sim)
        .chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": docs[0]["request"]["body"]["messages"][0]["content"]}]
        )
        .choices[0]
        .message.content
    )
    assert content.startswith("Upstream says")


def test_a_transcription_and_an_image_generation_record_and_replay(simulator_factory, tmp_path):
    from media import tone

    folder, wav = tmp_path / "rec", tone("wav", 1.0)
    with FakeAzure() as upstream:
        sim = simulator_factory(record_env(upstream, folder))
        c = client(sim)
        heard = c.audio.transcriptions.create(model="whisper", file=("a.wav", wav), language="en")
        drawn = c.images.generate(model="dall-e-3", prompt="a kite", response_format="b64_json")
        assert heard.text == f"Upstream heard {upstream.requests[0]['body']['upload_bytes']} bytes."
        assert len(upstream.requests) == 2
        sim.stop()
    docs = list(yaml.safe_load_all((folder / "whisper.audio-transcriptions.yaml").read_text()))
    assert "body_base64" in docs[0]["request"]  # the binary upload, stored safely

    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    c = client(sim)
    # Another boundary and another part order: the same fields and file are the same request.
    again = c.audio.transcriptions.create(language="en", file=("a.wav", wav), model="whisper")
    assert again.text == heard.text
    assert (
        c.images.generate(model="dall-e-3", prompt="a kite", response_format="b64_json").data[0].b64_json
        == drawn.data[0].b64_json
    )
    with pytest.raises(NotFoundError):  # another file is another request
        c.audio.transcriptions.create(model="whisper", file=("a.wav", tone("wav", 1.5)), language="en")


def test_a_responses_stream_is_recorded_and_replayed_with_its_events_and_timing(simulator_factory, tmp_path):
    from openai import OpenAI

    folder = tmp_path / "rec"
    ask = {"model": "gpt-4o", "input": "stream a response please", "stream": True}
    with FakeAzure() as upstream:
        sim = simulator_factory(record_env(upstream, folder))
        live = list(OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0).responses.create(**ask))
        plain = OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0).responses.create(
            model="gpt-4o", input="not streamed"
        )
        # A response stored at Azure is Azure's to find: the request goes upstream, not to a 400.
        followed = OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0).responses.create(
            model="gpt-4o", input="and then?", previous_response_id=plain.id
        )
        assert followed.output_text == "Upstream responds: and then?"
        assert [r["path"] for r in upstream.requests] == ["/openai/v1/responses"] * 3
        sim.stop()
    assert live[-1].type == "response.completed" and plain.output_text == "Upstream responds: not streamed"
    docs = list(yaml.safe_load_all((folder / "v1.responses.yaml").read_text()))
    events = next(d for d in docs if "events" in d["response"])["response"]["events"]
    assert [e["data"]["type"] for e in events] == [e.type for e in live]  # no [DONE] on this API

    sim = simulator_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    client = OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0)
    started = time.perf_counter()
    with client.responses.stream(model="gpt-4o", input="stream a response please") as stream:
        seen = [(time.perf_counter() - started, e) for e in stream]
        final = stream.get_final_response()
    assert [e.sequence_number for _, e in seen] == [e.sequence_number for e in live]
    assert final.output_text == "Upstream responds: stream a response please"
    # Paced as recorded: the events arrive spread over time, not at once.
    assert seen[-1][0] - seen[0][0] > CHUNK_GAP * 4
    raw = httpx.post(f"{sim.url}/openai/v1/responses", headers={"api-key": sim.key}, json=ask)
    assert raw.text.startswith("event: response.created\ndata: {") and "[DONE]" not in raw.text
    assert client.responses.create(model="gpt-4o", input="not streamed").output_text == plain.output_text


def test_azure_gets_its_key_and_none_of_the_clients_or_the_simulators_headers(simulator_factory, tmp_path):
    with FakeAzure() as upstream:
        sim = simulator_factory(record_env(upstream, tmp_path / "rec"))
        r = httpx.post(
            f"{sim.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json={"messages": MESSAGES},
            headers={"api-key": API_KEY, "x-ms-simulator-content-filter": "prompt=violence:high"},
        )
        # In record mode Azure filters for itself: the forcing header is neither obeyed nor sent on.
        assert r.status_code == 200
        sent = {k.lower(): v for k, v in upstream.requests[0]["headers"].items()}
        assert sent["api-key"] == UPSTREAM_KEY
        assert "x-ms-simulator-content-filter" not in sent
