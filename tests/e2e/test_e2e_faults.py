"""Declared faults end to end: a real mitmdump with a deployments file that gives each
deployment one fault at share 1, the real openai SDK and httpx. Each kind is provoked with
its status, body, headers and timing; the SDK's own retries honour a 503's retry-after; a
seeded run, GET /++/faults, PATCH and the metrics counter: tests/stack/test_stack_faults.py.

Timing bounds are generous (two shared cores): delays are a second or more and checked
against a floor, with a ceiling several times the delay.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time

import httpx
import openai
import pytest
from conftest import API_VERSION, start_simulator
from fake_azure import UPSTREAM_KEY, FakeAzure
from helpers import FAST, HELLO, assert_azure_error, only, scrape, value
from openai import AzureOpenAI

PACED = {"timeToFirstTokenMs": {"mean": 50}, "interTokenMs": {"mean": 30}, "requestMs": {"mean": 10}}


DEPLOYMENTS = {
    "*": {"faults": only(kind="503", retryAfter=1)},
    "err500": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="500")},
    "err503": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="503", retryAfter=2)},
    "late408": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="timeout", afterMs=1200)},
    "late504": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="timeout", status=504, afterMs=1200)},
    "hung": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="hang")},
    "hung-briefly": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="hang", maxS=1.5)},
    "cut": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="streamCut", afterTokens=5)},
    "cut-in-time": {"model": "gpt-4o", "latency": PACED, "faults": only(kind="streamCut", afterMs=600)},
    "slow-start": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="slowFirstByte", ms=1500)},
    "trickle": {"model": "gpt-4o", "latency": PACED, "faults": only(kind="trickle", factor=5)},
    "steady": {"model": "gpt-4o", "latency": PACED, "faults": []},
    "squeezed": {
        "model": "gpt-4o",
        "latency": FAST,
        "tokensPerMinute": 100000,
        "faults": [{"kind": "quotaCut", "everyS": 3600, "tokensPerMinute": 1000, "forS": 4}],
    },
    "too-long": {"model": "gpt-4o", "latency": FAST, "faults": only(kind="contextLength")},
    "patched": {"model": "gpt-4o", "latency": FAST},
}


def deployments_file(folder, deployments) -> str:
    path = folder / "deployments.json"
    path.write_text(json.dumps(deployments))
    return str(path)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    s = start_simulator(folder, {"OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder, DEPLOYMENTS)})
    yield s
    s.stop()


def client(sim, **kwargs) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, **{"max_retries": 0, **kwargs})


def chat(sim, deployment: str, timeout: float = 30, **body) -> httpx.Response:
    url = f"{sim.url}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}"
    return httpx.post(
        url, json={"messages": HELLO, "max_tokens": 20, **body}, headers={"api-key": sim.key}, timeout=timeout
    )


def test_500_is_azures_server_error_naming_its_request_id(sim):
    r = chat(sim, "err500")
    assert r.status_code == 500
    request_id = r.headers["apim-request-id"]
    assert r.json() == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that! You can retry your "
            "request, or contact us through an Azure support request at: "
            "https://go.microsoft.com/fwlink/?linkid=2213926 if the error persists. (Please include the "
            f"request ID {request_id} in your message.)",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert "retry-after" not in r.headers
    with pytest.raises(openai.InternalServerError) as e:
        client(sim).chat.completions.create(model="err500", messages=HELLO, max_tokens=5)
    assert e.value.status_code == 500


def test_the_sdks_own_retries_wait_the_retry_after(sim):
    before = value(scrape(sim), "aoai_requests_total", deployment="err503", status="503")
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        client(sim, max_retries=2).chat.completions.create(model="err503", messages=HELLO, max_tokens=5)
    took = time.monotonic() - started
    # Three tries, two waits of the 2 s the 503 asked for (the SDK's own backoff is under 1 s).
    assert value(scrape(sim), "aoai_requests_total", deployment="err503", status="503") - before == 3
    assert 3.9 <= took < 12, took


@pytest.mark.parametrize(
    "deployment, status, code, message",
    [
        ("late408", 408, "Timeout", "The operation was timeout."),
        (
            "late504",
            504,
            "GatewayTimeout",
            "The gateway did not receive a response from 'Microsoft.CognitiveServices' within the specified time period.",
        ),
    ],
)
def test_timeouts_answer_after_their_delay(sim, deployment, status, code, message):
    started = time.monotonic()
    r = chat(sim, deployment)
    took = time.monotonic() - started
    assert r.json() == {"error": {"code": code, "message": message}}
    assert r.status_code == status
    assert 1.15 <= took < 5, took


def patch(sim, body) -> httpx.Response:
    return httpx.patch(f"{sim.url}/++/config", json=body, headers={"api-key": sim.key})


def faults_view(sim) -> dict:
    r = httpx.get(f"{sim.url}/++/faults", headers={"api-key": sim.key})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_hang_lasts_until_the_client_gives_up_and_leaves_nothing_behind(sim):
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(sim, timeout=1.5).chat.completions.create(model="hung", messages=HELLO, max_tokens=5)
    assert 1.4 <= time.monotonic() - started < 5
    # The simulator notices the client has gone and forgets the request.
    deadline = time.monotonic() + 5
    while faults_view(sim)["hanging"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert faults_view(sim)["hanging"] == 0
    assert chat(sim, "steady").status_code == 200


def test_a_hang_answers_408_after_its_longest_wait(sim):
    started = time.monotonic()
    r = chat(sim, "hung-briefly")
    took = time.monotonic() - started
    assert_azure_error(r, 408, "Timeout", "The operation was timeout.")
    assert 1.45 <= took < 5, took


def test_a_stream_cut_after_tokens_breaks_the_sdks_stream(sim):
    contents = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for chunk in client(sim).chat.completions.create(model="cut", messages=HELLO, max_tokens=40, stream=True):
            contents += [c.delta.content for c in chunk.choices if c.delta.content]
    assert len(contents) == 5


def test_a_stream_cut_after_a_time_drops_then(sim):
    contents = []
    started = time.monotonic()
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for chunk in client(sim).chat.completions.create(
            model="cut-in-time", messages=HELLO, max_tokens=200, stream=True
        ):
            contents += [c.delta.content for c in chunk.choices if c.delta.content]
    took = time.monotonic() - started
    assert 0.55 <= took < 3, took
    assert 1 <= len(contents) < 60  # 50 ms to the first token, then one each 30 ms until 600 ms


def test_a_slow_first_byte_delays_streams_and_whole_answers(sim):
    started = time.monotonic()
    stream = client(sim).chat.completions.create(model="slow-start", messages=HELLO, max_tokens=5, stream=True)
    headers_at = time.monotonic() - started  # create() returns once the head has come
    first = next(c for c in stream if c.choices and c.choices[0].delta.content)
    first_at = time.monotonic() - started
    assert first.choices[0].delta.content
    list(stream)
    assert headers_at >= 1.45, headers_at
    assert 1.5 <= first_at < 5, first_at
    started = time.monotonic()
    answer = client(sim).chat.completions.create(model="slow-start", messages=HELLO, max_tokens=5)
    assert answer.usage.completion_tokens == 5
    assert 1.5 <= time.monotonic() - started < 5


def token_gaps(sim, deployment: str) -> list[float]:
    seen = []
    for chunk in client(sim).chat.completions.create(model=deployment, messages=HELLO, max_tokens=12, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(time.monotonic())
    assert len(seen) == 12
    return [b - a for a, b in itertools.pairwise(seen)]


def test_a_trickle_slows_the_tokens(sim):
    steady = statistics.median(token_gaps(sim, "steady"))
    slow = statistics.median(token_gaps(sim, "trickle"))
    assert steady < 0.08, steady  # 30 ms configured
    assert slow >= 0.11, slow  # five times that: 150 ms
    assert slow > 2.5 * steady


def test_a_quota_cut_lowers_the_quota_for_its_period(sim):
    # A periodic cut counts from when it was declared: declare it again now.
    cut = DEPLOYMENTS["squeezed"]["faults"]
    assert patch(sim, {"deployments": {"squeezed": {"faults": cut}}}).status_code == 200
    first = chat(sim, "squeezed", max_tokens=300)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    # 300 + 19 are spent; another 700 does not fit the cut quota: a 429 long before 100,000.
    second = chat(sim, "squeezed", max_tokens=700)
    assert second.status_code == 429
    assert second.headers["x-ratelimit-limit-tokens"] == "1000"
    assert faults_view(sim)["deployments"]["squeezed"]["tokensPerMinuteNow"] == 1000
    time.sleep(4.2)  # the cut's forS
    third = chat(sim, "squeezed", max_tokens=700)
    assert third.status_code == 200, third.text
    assert third.headers["x-ratelimit-limit-tokens"] == "100000"
    assert "tokensPerMinuteNow" not in faults_view(sim)["deployments"]["squeezed"]


def test_context_length_exceeded(sim):
    r = chat(sim, "too-long")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert error["message"] == (
        "This model's maximum context length is 128000 tokens. However, you requested "
        "128039 tokens (128019 in the messages, 20 in the completion). Please reduce the "
        "length of the messages or completion."
    )
    with pytest.raises(openai.BadRequestError) as e:
        client(sim).chat.completions.create(model="too-long", messages=HELLO, max_tokens=5)
    assert e.value.code == "context_length_exceeded"


def test_a_refused_deployments_file_names_the_field(tmp_path):
    bad = {"gpt-4o": {"model": "gpt-4o", "faults": [{"kind": "503", "share": 0.1}, {"kind": "hang", "share": -1}]}}
    path = deployments_file(tmp_path, bad)
    s = start_simulator(tmp_path, {"OPENAI_DEPLOYMENT_CONFIG_PATH": path}, wait=False)
    try:
        s.process.wait(timeout=30)
        assert f"{path}: gpt-4o.faults[1].share: expected a number from 0 to 1, got -1" in s.log()
    finally:
        s.stop()


def test_record_mode_leaves_faults_to_azure_and_replay_injects_them(simulator_factory, tmp_path):
    folder = tmp_path / "rec"
    failing = {"gpt-4o": {"model": "gpt-4o", "faults": only(kind="500")}}
    with FakeAzure() as upstream:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                "RECORDING_DIR": str(folder),
                "OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(tmp_path, failing),
            }
        )
        plain = client(sim).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
        streamed = [
            c.choices[0].delta.content
            for c in client(sim).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5, stream=True)
            if c.choices and c.choices[0].delta.content
        ]
        assert len(upstream.requests) == 2  # no fault of ours: Azure answered both
        sim.stop()
    assert plain.choices[0].message.content.startswith("Upstream says") and len(streamed) == 3

    cutting = {"gpt-4o": {"model": "gpt-4o", "faults": only(kind="streamCut", afterTokens=2)}}
    sim = simulator_factory(
        {
            "SIMULATOR_MODE": "replay",
            "RECORDING_DIR": str(folder),
            "OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(tmp_path, cutting),
        }
    )
    replayed = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        for chunk in client(sim).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5, stream=True):
            replayed += [c.delta.content for c in chunk.choices if c.delta.content]
    assert replayed == streamed[:2]
    assert patch(sim, {"deployments": {"gpt-4o": {"faults": only(kind="503")}}}).status_code == 200
    assert_azure_error(chat(sim, "gpt-4o", max_tokens=5), 503, "ServiceUnavailable")
