"""Paced streaming and latency, end to end through a real mitmdump.

Timing bounds are generous: they separate "paced" from "sent at once", not milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from conftest import API_VERSION
from helpers import scrape, value
from openai import AsyncAzureOpenAI, AzureOpenAI

DEPLOYMENTS = {
    "paced": {
        "model": "gpt-4o",
        "latency": {
            "timeToFirstTokenMs": {"mean": 300, "stdDev": 0},
            "interTokenMs": {"mean": 20, "stdDev": 0},
            "requestMs": {"mean": 150, "stdDev": 0},
        },
    },
    "slow": {
        "model": "gpt-4o",
        "latency": {"timeToFirstTokenMs": {"mean": 100, "stdDev": 0}, "interTokenMs": {"mean": 200, "stdDev": 0}},
    },
    "instruct": {
        "model": "gpt-35-turbo-instruct",
        "latency": {"timeToFirstTokenMs": {"mean": 300, "stdDev": 0}, "interTokenMs": {"mean": 20, "stdDev": 0}},
    },
    "embed": {"model": "text-embedding-3-small", "latency": {"requestMs": {"mean": 400, "stdDev": 0}}},
    "queued": {
        "model": "gpt-4o",
        "maxConcurrentRequests": 1,
        "latency": {"timeToFirstTokenMs": {"mean": 300, "stdDev": 0}, "interTokenMs": {"mean": 10, "stdDev": 0}},
    },
}
MESSAGES = [{"role": "user", "content": "Count to twenty."}]


@pytest.fixture(scope="module")
def paced(tmp_path_factory):
    from conftest import start_simulator

    folder = tmp_path_factory.mktemp("paced")
    path = folder / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    # Natural answers far longer than any max_tokens here, so the limit sets every length.
    sim = start_simulator(
        folder,
        {
            "OPENAI_DEPLOYMENT_CONFIG_PATH": str(path),
            "SIMULATOR_COMPLETION_TOKENS_MEAN": "1000",
            "SIMULATOR_COMPLETION_TOKENS_STD_DEV": "0",
        },
    )
    yield sim
    sim.stop()


def client(sim) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)


def content_times(stream, started: float) -> tuple[list[float], str, list]:
    times, text, chunks = [], "", []
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter() - started)
            text += chunk.choices[0].delta.content
    return times, text, chunks


def test_first_token_arrives_after_ttft_and_last_after_the_gaps(paced):
    started = time.perf_counter()
    stream = client(paced).chat.completions.create(model="paced", messages=MESSAGES, max_tokens=20, stream=True)
    times, _, _ = content_times(stream, started)
    assert len(times) == 20
    # TTFT 300 ms; 19 gaps of 20 ms: the last frame is due at 680 ms.
    assert 0.25 < times[0] < 0.6
    assert times[-1] > 0.6
    assert times[-1] - times[0] > 0.3  # spread out, not sent at once


def test_client_holds_first_frame_long_before_the_last_is_produced(paced):
    started = time.perf_counter()
    stream = client(paced).chat.completions.create(model="slow", messages=MESSAGES, max_tokens=10, stream=True)
    first_at = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_at = time.perf_counter() - started
            break
    stream.close()
    # TTFT 100 ms, then 9 gaps of 200 ms: the last frame would come at 1.9 s.
    assert first_at is not None and first_at < 1.0


def test_stream_frames_parse_and_end_with_usage_and_done(paced):
    started = time.perf_counter()
    stream = client(paced).chat.completions.create(
        model="paced", messages=MESSAGES, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    times, text, chunks = content_times(stream, started)
    assert chunks[0].prompt_filter_results and not chunks[0].choices
    assert chunks[1].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices
    assert all(c.usage is None for c in chunks[:-1])
    assert len(times) == 8 and text


def test_raw_stream_headers_and_done(paced):
    body = {"messages": MESSAGES, "max_tokens": 5, "stream": True}
    with httpx.stream(
        "POST",
        f"{paced.url}/openai/deployments/paced/chat/completions",
        params={"api-version": API_VERSION},
        json=body,
        headers={"api-key": paced.key},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["apim-request-id"]
        raw = b"".join(r.iter_bytes())
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"data: ") == 1 + 1 + 5 + 1 + 1  # prompt filter, role, tokens, finish, DONE


def test_streamed_tool_call_is_paced_and_complete(paced):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    stream = client(paced).chat.completions.create(
        model="paced", messages=MESSAGES, tools=tools, tool_choice="required", stream=True
    )
    arguments: dict[int, str] = {}  # by the call's index: an answer may call several tools
    finish = None
    for chunk in stream:
        if chunk.choices:
            for call in chunk.choices[0].delta.tool_calls or []:
                arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert arguments and all("city" in json.loads(text) for text in arguments.values())


def test_async_client_streams_concurrently(paced):
    async def one(c: AsyncAzureOpenAI) -> list[float]:
        started = time.perf_counter()
        stream = await c.chat.completions.create(model="paced", messages=MESSAGES, max_tokens=20, stream=True)
        times = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.perf_counter() - started)
        return times

    async def main():
        c = AsyncAzureOpenAI(azure_endpoint=paced.url, api_key=paced.key, api_version=API_VERSION)
        started = time.perf_counter()
        results = await asyncio.gather(*(one(c) for _ in range(20)))
        return results, time.perf_counter() - started

    results, wall = asyncio.run(main())
    assert all(len(t) == 20 for t in results)
    assert all(t[0] > 0.25 for t in results)
    # 20 streams of ~0.7 s each run side by side, not one after another.
    assert wall < 3.0


def test_completions_stream_is_paced(paced):
    started = time.perf_counter()
    stream = client(paced).completions.create(model="instruct", prompt="Once", max_tokens=20, stream=True)
    times = [time.perf_counter() - started for c in stream if c.choices and c.choices[0].text]
    assert len(times) == 20
    assert times[0] > 0.25 and times[-1] > 0.6


def test_non_streamed_answer_takes_the_whole_generation_time(paced):
    c = client(paced)
    started = time.perf_counter()
    r = c.chat.completions.create(model="paced", messages=MESSAGES, max_tokens=20)
    took = time.perf_counter() - started
    assert r.usage.completion_tokens == 20
    assert 0.6 < took < 1.2  # 300 + 19 * 20 = 680 ms


def test_embeddings_wait_request_ms(paced):
    started = time.perf_counter()
    client(paced).embeddings.create(model="embed", input="hello")
    assert 0.35 < time.perf_counter() - started < 1.0


def test_errors_are_not_delayed(paced):
    started = time.perf_counter()
    r = httpx.post(
        f"{paced.url}/openai/deployments/paced/chat/completions",
        params={"api-version": API_VERSION},
        json={"messages": MESSAGES, "max_tokens": 20},
        headers={"api-key": "wrong"},
    )
    assert r.status_code == 401
    assert time.perf_counter() - started < 0.25


def test_max_concurrent_requests_queues_the_rest(paced):
    async def main():
        c = AsyncAzureOpenAI(azure_endpoint=paced.url, api_key=paced.key, api_version=API_VERSION)
        started = time.perf_counter()

        async def one():
            await c.chat.completions.create(model="queued", messages=MESSAGES, max_tokens=5)
            return time.perf_counter() - started

        return sorted(await asyncio.gather(*(one() for _ in range(3))))

    done = asyncio.run(main())
    # One at a time, ~340 ms each: the third finishes after about a second.
    assert done[0] < 0.7
    assert done[2] > 0.9


def test_client_disconnect_mid_stream_frees_the_stream(paced):
    request = (
        f"POST /openai/deployments/slow/chat/completions?api-version={API_VERSION} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\napi-key: {paced.key}\r\ncontent-type: application/json\r\n"
    )
    body = json.dumps({"messages": MESSAGES, "max_tokens": 50, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", paced.port)) as s:
        s.sendall(request.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        s.settimeout(5)
        received = b""
        while b"data: " not in received:
            received += s.recv(65536)
        health = httpx.get(f"{paced.url}/++/health").json()
        assert health["streams"]["active"] == 1
    # 50 tokens 200 ms apart would take 10 s; a closed client ends the stream within a gap or two.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        health = httpx.get(f"{paced.url}/++/health").json()
        if health["streams"] == {"active": 0, "pending": 0}:
            break
        time.sleep(0.05)
    assert health["streams"] == {"active": 0, "pending": 0}


def read_response(s: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One HTTP/1.1 response from a raw socket: (head, body, bytes read beyond it)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        data += s.recv(65536) or pytest.fail(f"closed after {data!r}")
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536) or pytest.fail("closed inside a chunk header")
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += s.recv(65536) or pytest.fail("closed inside a chunk")
            body, rest = body + rest[:size], rest[size + 2 :]
            if size == 0:
                return head, body, rest
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(rest) < length:
        rest += s.recv(65536) or pytest.fail("closed inside the body")
    return head, rest[:length], rest[length:]


def test_one_connection_carries_streamed_and_plain_answers_in_turn(paced):
    """Streams are written straight onto the client's socket; nothing else may follow them
    there (mitmproxy's own copy of the response is dropped), so the connection stays usable."""

    def request(body: dict) -> bytes:
        raw = json.dumps(body).encode()
        return (
            f"POST /openai/deployments/paced/chat/completions?api-version={API_VERSION} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\napi-key: {paced.key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(raw)}\r\n\r\n"
        ).encode() + raw

    with socket.create_connection(("127.0.0.1", paced.port)) as s:
        s.settimeout(5)
        left = b""
        for stream in (True, True, False, True):
            s.sendall(request({"messages": MESSAGES, "max_tokens": 3, "stream": stream}))
            head, body, left = read_response(s, left)
            assert head.startswith(b"HTTP/1.1 200 OK"), head
            if stream:
                assert body.endswith(b"data: [DONE]\n\n")
            else:
                assert json.loads(body)["usage"]["completion_tokens"] == 3
        assert left == b""
        s.settimeout(0.3)  # and nothing arrives after the last answer
        with pytest.raises(TimeoutError):
            s.recv(1)


def test_an_extension_watching_responseheaders_sees_streams(simulator_factory, tmp_path):
    # Such an extension sends streams through mitmproxy's layers, so its hook runs.
    extension = tmp_path / "stamp.py"
    extension.write_text(
        "def responseheaders(flow):\n"
        "    if flow.response.headers.get('content-type', '').startswith('text/event-stream'):\n"
        "        flow.response.headers['x-seen-by'] = 'stamp'\n"
    )
    sim = simulator_factory({"EXTENSION_PATH": str(extension), "LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN": "20"})
    started = time.perf_counter()
    with httpx.stream(
        "POST",
        f"{sim.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
        headers={"api-key": sim.key},
        json={"messages": MESSAGES, "max_tokens": 20, "stream": True},
    ) as r:
        assert r.headers["x-seen-by"] == "stamp"
        times = [
            time.perf_counter() - started
            for line in r.iter_lines()
            if '"content":"' in line and '"content":""' not in line
        ]
    assert len(times) == 20 and times[-1] - times[0] > 0.2  # still paced


def test_a_tls_client_gets_paced_streams_too(paced):
    # mitmproxy terminates TLS itself (with its own CA), so such streams take the loopback path.
    started = time.perf_counter()
    with (
        httpx.Client(verify=False) as c,
        c.stream(
            "POST",
            f"https://127.0.0.1:{paced.port}/openai/deployments/paced/chat/completions?api-version={API_VERSION}",
            headers={"api-key": paced.key},
            json={"messages": MESSAGES, "max_tokens": 20, "stream": True},
        ) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        times = [
            time.perf_counter() - started
            for line in r.iter_lines()
            if '"content":"' in line and '"content":""' not in line
        ]
    assert len(times) == 20
    assert times[0] < 0.6 < times[-1]  # TTFT 300 ms, then 19 gaps of 20 ms


def test_metrics_count_the_streams_played_each_way(paced):
    """Plain HTTP/1.1 streams are written straight to the client; TLS ones go through
    mitmproxy's layers. /++/metrics counts both, so a silent fallback would show."""
    before = scrape(paced)
    body = {"messages": MESSAGES, "max_tokens": 3, "stream": True}
    path = f"/openai/deployments/paced/chat/completions?api-version={API_VERSION}"
    with httpx.stream("POST", paced.url + path, headers={"api-key": paced.key}, json=body) as r:
        r.read()
    with (
        httpx.Client(verify=False) as c,
        c.stream("POST", f"https://127.0.0.1:{paced.port}{path}", headers={"api-key": paced.key}, json=body) as r,
    ):
        r.read()
    after = scrape(paced)
    assert value(after, "aoai_streams_total", path="direct") - value(before, "aoai_streams_total", path="direct") == 1
    assert (
        value(after, "aoai_streams_total", path="loopback") - value(before, "aoai_streams_total", path="loopback") == 1
    )


def test_patch_config_turns_latency_off(simulator_factory):
    sim = simulator_factory({"LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN": "50"})
    c = client(sim)
    started = time.perf_counter()
    c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
    assert time.perf_counter() - started > 0.9  # 20 tokens at 50 ms
    r = httpx.patch(f"{sim.url}/++/config", json={"latency": {"enabled": False}}, headers={"api-key": sim.key})
    assert r.status_code == 200 and r.json()["latency"]["enabled"] is False
    started = time.perf_counter()
    c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
    assert time.perf_counter() - started < 0.3
