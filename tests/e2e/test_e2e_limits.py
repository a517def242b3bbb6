"""Rate limits end to end: a real mitmdump, the real openai SDK, and for the shared quota two
simulators and a real redis-server.

Quotas are small and request windows 1 s, so throttling shows within a few requests and a
retry waits at most a couple of seconds. Timing bounds are generous.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest
import simulator_process
from conftest import API_KEY, API_VERSION, free_port, start_simulator
from fake_azure import UPSTREAM_KEY, FakeAzure
from helpers import scrape, value
from openai import AzureOpenAI, OpenAI, RateLimitError
from redis_server import redis_url  # noqa: F401
from workers import haproxy_path

ZERO = {"timeToFirstTokenMs": {"mean": 0}, "interTokenMs": {"mean": 0}, "requestMs": {"mean": 0}}
DEPLOYMENTS = {
    # tokens bind: 1,000 per minute, requests hardly (100 per second)
    "tight": {"model": "gpt-4o", "tokensPerMinute": 1000, "requestsPerMinute": 6000, "latency": ZERO},
    # requests bind: 30 per minute is one per 2 s with 1 s windows
    "paced": {"model": "gpt-4o", "tokensPerMinute": 1_000_000, "requestsPerMinute": 30, "latency": ZERO},
    "instruct": {"model": "gpt-35-turbo-instruct", "tokensPerMinute": 100, "requestsPerMinute": 6000, "latency": ZERO},
    "embed": {"model": "text-embedding-3-small", "tokensPerMinute": 20, "requestsPerMinute": 6000, "latency": ZERO},
}
MESSAGES = [{"role": "user", "content": "Count to three."}]
ENV = {"RATE_LIMIT_REQUEST_WINDOW_SECONDS": "1", "DOC_INTELLIGENCE_RPS": "2", "DOC_INTELLIGENCE_POLL_RPS": "3"}


def deployments_file(folder, deployments=DEPLOYMENTS) -> str:
    path = folder / "deployments.json"
    path.write_text(json.dumps(deployments))
    return str(path)


@pytest.fixture(
    scope="module",
    params=[
        "one process",
        pytest.param(
            "two workers",
            marks=pytest.mark.skipif(haproxy_path() is None, reason="haproxy is not installed (.ci/run installs it)"),
        ),
    ],
)
def sim(request, tmp_path_factory):
    """The simulator, and the same tests again against two workers behind HAProxy sharing one
    quota through Redis (scripts/workers.py)."""
    folder = tmp_path_factory.mktemp("limits")
    # Latency on, so streams are paced and written by the streaming stage.
    env = {"OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder), **ENV}
    if request.param == "one process":
        s = start_simulator(folder, env)
    else:
        s = simulator_process.start_workers(
            2, cwd=folder, env={"SIMULATOR_API_KEY": API_KEY, "SIMULATOR_SEED": "1", **env}
        )
        simulator_process.wait_ready(s, after_log=simulator_process.WORKERS_BANNER, timeout=90)
    yield s
    s.stop()


def headers(sim) -> dict[str, str]:
    return {"api-key": sim.key}


def reset(sim) -> None:
    assert httpx.post(f"{sim.url}/++/reset-limits", headers=headers(sim)).json()["reset"] is True


def view(sim) -> dict:
    return httpx.get(f"{sim.url}/++/limits", headers=headers(sim)).json()


@pytest.fixture(autouse=True)
def fresh(request):
    if "sim" in request.fixturenames:
        reset(request.getfixturevalue("sim"))


def counted(sim, name: str, **labels: str) -> float:
    """A counter from /++/metrics, summed over workers where there are several."""
    return value(scrape(sim), name, **labels)


def client(sim, retries: int = 0) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=retries)


def chat(sim, deployment: str, body: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{sim.url}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}",
        json=body or {"messages": MESSAGES, "max_tokens": 400},
        headers=headers(sim),
    )


def azure_text(operation: str, kind: str, seconds: int, version: str = API_VERSION) -> str:
    unit = "second" if seconds == 1 else "seconds"
    return (
        f"Requests to the {operation} Operation under Azure OpenAI API version {version} have exceeded {kind} "
        f"of your current OpenAI S0 pricing tier. Please retry after {seconds} {unit}. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )


def test_sdk_sees_azures_token_429(sim):
    c = client(sim)
    raw = c.chat.completions.with_raw_response.create(model="tight", messages=MESSAGES, max_tokens=400)
    cost = raw.parse().usage.prompt_tokens + 400
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - cost)
    assert (raw.headers["x-ratelimit-limit-requests"], raw.headers["x-ratelimit-remaining-requests"]) == ("100", "99")
    c.chat.completions.create(model="tight", messages=MESSAGES, max_tokens=400)
    with pytest.raises(RateLimitError) as caught:
        c.chat.completions.create(model="tight", messages=MESSAGES, max_tokens=400)
    r = caught.value.response
    ms = int(r.headers["retry-after-ms"])
    assert 50_000 < ms <= 60_000
    assert r.headers["retry-after"] == str(math.ceil(ms / 1000))
    assert r.headers["policy-id"] == "DeploymentRatelimit-Token"
    assert r.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * cost)
    assert int(r.headers["x-ratelimit-reset-tokens"]) == math.ceil(ms / 1000)
    assert r.json() == {
        "error": {
            "code": "429",
            "message": azure_text("ChatCompletions_Create", "token rate limit", int(r.headers["retry-after"])),
        }
    }
    assert counted(sim, "aoai_rate_limited_total", deployment="tight", reason="tokens") >= 1


def test_sdk_honouring_retry_after_ms_then_succeeds(sim):
    c = client(sim)
    c.chat.completions.create(model="paced", messages=MESSAGES, max_tokens=5)
    throttled = counted(sim, "aoai_rate_limited_total", deployment="paced", reason="requests")
    early = counted(sim, "aoai_early_retries_total", deployment="paced")
    started = time.monotonic()
    raw = client(sim, retries=3).chat.completions.with_raw_response.create(
        model="paced", messages=MESSAGES, max_tokens=5
    )
    took = time.monotonic() - started
    assert raw.retries_taken == 1  # one 429, then the retry after retry-after-ms fit
    assert 1.0 < took < 4.0
    assert counted(sim, "aoai_rate_limited_total", deployment="paced", reason="requests") == throttled + 1
    assert counted(sim, "aoai_early_retries_total", deployment="paced") == early


def test_a_retry_before_retry_after_is_counted_and_one_after_it_succeeds(sim):
    # One connection, as a client keeps it: with workers its retries come back to the worker
    # that refused it, which is where an early retry is recognised.
    with httpx.Client(headers=headers(sim), timeout=30) as http:
        url = f"{sim.url}/openai/deployments/paced/chat/completions?api-version={API_VERSION}"
        body = {"messages": MESSAGES, "max_tokens": 400}
        assert http.post(url, json=body).status_code == 200
        first = http.post(url, json=body)
        assert first.status_code == 429 and first.headers["policy-id"] == "DeploymentRatelimit-Call"
        assert first.json()["error"]["message"] == azure_text(
            "ChatCompletions_Create", "call rate limit", int(first.headers["retry-after"])
        )
        early_before = counted(sim, "aoai_early_retries_total", deployment="paced")
        again = http.post(url, json=body)  # the same request at once: too early
        assert again.status_code == 429
        assert counted(sim, "aoai_early_retries_total", deployment="paced") == early_before + 1
        time.sleep(int(again.headers["retry-after-ms"]) / 1000)
        assert http.post(url, json=body).status_code == 200
    assert counted(sim, "aoai_early_retries_total", deployment="paced") == early_before + 1
    assert counted(sim, "aoai_rate_limited_total", deployment="paced", reason="requests") >= 2


def test_completions_and_embeddings_429s_name_their_operation(sim):
    url = f"{sim.url}/openai/deployments"
    bodies = [
        ("instruct", "completions", {"prompt": "Say this is a test", "max_tokens": 60}, "Completions_Create"),
        (
            "embed",
            "embeddings",
            {"input": "one two three four five six seven eight nine ten eleven"},
            "Embeddings_Create",
        ),
    ]
    for deployment, operation, body, azure_name in bodies:
        ok = httpx.post(f"{url}/{deployment}/{operation}?api-version=2024-06-01", json=body, headers=headers(sim))
        assert ok.status_code == 200
        refused = httpx.post(f"{url}/{deployment}/{operation}?api-version=2024-06-01", json=body, headers=headers(sim))
        assert refused.status_code == 429
        assert refused.json()["error"]["message"] == azure_text(
            azure_name, "token rate limit", int(refused.headers["retry-after"]), "2024-06-01"
        )


def test_a_request_that_can_never_fit_is_not_retried(sim):
    started = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        client(sim, retries=3).chat.completions.create(model="tight", messages=MESSAGES, max_tokens=2000)
    assert time.monotonic() - started < 2  # the SDK gave up at once
    assert "can never be accepted" in caught.value.response.json()["error"]["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert chat(sim, "tight").status_code == 200  # it took nothing from the quota


def test_streamed_answers_carry_the_quota_headers(sim):
    body = {"messages": MESSAGES, "max_tokens": 5, "stream": True}
    with httpx.stream(
        "POST",
        f"{sim.url}/openai/deployments/tight/chat/completions?api-version={API_VERSION}",
        json=body,
        headers=headers(sim),
    ) as r:
        text = r.read().decode()
    assert r.status_code == 200 and text.endswith("data: [DONE]\n\n")
    assert r.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 1000 - 5


def test_patch_changes_a_quota_and_the_windows_can_be_cleared(sim):
    url = f"{sim.url}/++/config"
    bigger = {"deployments": {"tight": {**DEPLOYMENTS["tight"], "tokensPerMinute": 2000}}}
    try:
        assert httpx.patch(url, json=bigger, headers=headers(sim)).status_code == 200
        statuses = [chat(sim, "tight").status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        assert chat(sim, "tight").headers["x-ratelimit-limit-tokens"] == "2000"
        reset(sim)
        assert chat(sim, "tight").status_code == 200
        while chat(sim, "tight").status_code == 200:
            pass
        assert httpx.patch(url, json={"resetLimits": True}, headers=headers(sim)).status_code == 200
        assert chat(sim, "tight").status_code == 200
        assert httpx.patch(url, json={"resetLimits": "yes"}, headers=headers(sim)).status_code == 400
    finally:
        httpx.patch(url, json={"deployments": {"tight": DEPLOYMENTS["tight"]}}, headers=headers(sim))


def test_document_intelligence_is_limited_per_second(sim):
    analyze = f"{sim.url}/formrecognizer/documentModels/prebuilt-read:analyze?api-version=2023-07-31"
    statuses = [
        httpx.post(analyze, content=b"%PDF-1.4", headers={**headers(sim), "content-type": "application/pdf"})
        for _ in range(3)
    ]
    assert [r.status_code == 429 for r in statuses] == [False, False, True]
    assert statuses[2].headers["retry-after"] == "1"
    assert "Please retry after 1 second." in statuses[2].json()["error"]["message"]
    poll = f"{sim.url}/documentintelligence/documentModels/prebuilt-read/analyzeResults/r-1?api-version=2024-11-30"
    polls = [httpx.get(poll, headers=headers(sim)) for _ in range(4)]
    assert [r.status_code == 429 for r in polls] == [False, False, False, True]


@pytest.mark.parametrize(
    "variant",
    [
        "/documentintelligence/documentModels/prebuilt-read:analyze/",
        "/DocumentIntelligence/documentModels/prebuilt-read:analyze",
        "/documentintelligence/DocumentModels/prebuilt-read%3Aanalyze",
    ],
)
def test_document_intelligence_path_variants_are_limited_like_the_canonical_path(sim, variant):
    """Azure answers these spellings of the analyze path as the service does; they draw on
    the same DOC_INTELLIGENCE_RPS as the canonical one (2 per second here)."""
    time.sleep(1.1)  # a fresh second for this case
    canonical = f"{sim.url}/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30"
    pdf = {**headers(sim), "content-type": "application/pdf"}
    statuses = [
        httpx.post(canonical, content=b"%PDF-1.4", headers=pdf).status_code,
        httpx.post(f"{sim.url}{variant}?api-version=2024-11-30", content=b"%PDF-1.4", headers=pdf).status_code,
        httpx.post(f"{sim.url}{variant}?api-version=2024-11-30", content=b"%PDF-1.4", headers=pdf).status_code,
    ]
    assert statuses == [202, 202, 429]


def test_record_mode_never_forwards_a_throttled_request(tmp_path, simulator_factory):
    with FakeAzure() as upstream:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                **ENV,
                "OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(tmp_path),
            }
        )
        answers = [
            chat(sim, "tight", {"messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 400})
            for i in range(3)
        ]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert len(upstream.requests) == 2
        # Azure's own quota headers give way to the simulated quota's.
        assert answers[1].headers["x-ratelimit-limit-tokens"] == "1000"
        assert int(answers[1].headers["x-ratelimit-remaining-tokens"]) < 1000 - 2 * 400


# --- one quota across replicas (Redis) ------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(redis_url, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("replicas")
    env = {"OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder), "RATE_LIMIT_REDIS_URL": redis_url, **ENV}
    pair = [start_simulator(folder, env, wait=False) for _ in range(2)]  # both start at once
    for s in pair:
        simulator_process.wait_ready(s)
    yield pair
    for s in pair:
        s.stop()


def test_two_replicas_enforce_one_quota(replicas):
    a, b = replicas
    reset(a)
    assert view(a)["windows"] == "redis"
    assert [chat(s, "tight").status_code for s in (a, b, a, b)] == [200, 200, 429, 429]
    reset(b)  # clears the shared windows for both
    assert chat(a, "tight").status_code == 200


def test_a_client_told_to_wait_by_one_replica_gets_in_at_the_other(replicas):
    a, b = replicas
    reset(a)
    assert chat(a, "paced").status_code == 200
    refused = chat(b, "paced")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after-ms"]) <= 2000
    time.sleep(int(refused.headers["retry-after-ms"]) / 1000)
    assert chat(a, "paced").status_code == 200


def test_unreachable_redis_stops_start_up_with_one_clear_line(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    s = start_simulator(tmp_path, {"RATE_LIMIT_REDIS_URL": url}, wait=False)
    try:
        s.process.wait(30)
    finally:
        s.stop()
    assert s.process.returncode != 0
    line = next(li for li in s.log().splitlines() if "Cannot start the simulator" in li)
    assert "RATE_LIMIT_REDIS_URL: cannot reach Redis at " + url in line


def test_responses_draw_from_the_deployments_token_quota(sim):
    v1 = OpenAI(base_url=sim.url + "/openai/v1/", api_key=sim.key, max_retries=0)
    raw = v1.responses.with_raw_response.create(model="tight", input="Count to three.", max_output_tokens=400)
    cost = raw.parse().usage.input_tokens + 400  # max_output_tokens is the answer's share of the estimate
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - cost)
    with v1.responses.with_streaming_response.create(
        model="tight", input="Count to three.", max_output_tokens=400, stream=True
    ) as streamed:
        assert streamed.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * cost)
        assert any(
            line.startswith(("event: response.completed", "event: response.incomplete"))
            for line in streamed.iter_lines()
        )
    with pytest.raises(RateLimitError) as caught:
        v1.responses.create(model="tight", input="Count to three.", max_output_tokens=400)
    message = caught.value.response.json()["error"]["message"]
    assert message.startswith("Requests to the Responses_Create Operation under Azure OpenAI API ")
    assert "exceeded token rate limit" in message
    # Retrieving a stored response draws from no quota.
    assert v1.responses.retrieve(raw.parse().id).id == raw.parse().id
