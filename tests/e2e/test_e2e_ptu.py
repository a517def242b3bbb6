"""Provisioned (PTU) deployments end to end: a real mitmdump, the real openai SDK, and for the
shared bucket two simulators and a real redis-server.

The deployment is tiny (1 PTU of 6,000 input tokens a minute: 100 a second drain, 6,000 is
100 %), so a few requests fill it and a retry waits a second or two. Timing bounds are generous.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest
import simulator_process
from conftest import API_VERSION, start_simulator
from openai import AzureOpenAI, RateLimitError
from redis_server import redis_url  # noqa: F401

ZERO = {"timeToFirstTokenMs": {"mean": 0}, "interTokenMs": {"mean": 0}, "requestMs": {"mean": 0}}
DEPLOYMENTS = {
    "ptu": {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 1, "inputTpmPerPtu": 6000, "latency": ZERO},
    "ptu-41": {"model": "gpt-4.1", "sku": "GlobalProvisionedManaged", "ptu": 15, "latency": ZERO},
}
MESSAGES = [{"role": "user", "content": "Count to three."}]
HEADER = "azure-openai-deployment-utilization"


def deployments_file(folder) -> str:
    path = folder / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    return str(path)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ptu")
    s = start_simulator(folder, {"OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder)})
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


def client(sim, retries: int = 0) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=retries)


def chat(sim, max_tokens: int, deployment: str = "ptu") -> httpx.Response:
    return httpx.post(
        f"{sim.url}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}",
        json={"messages": MESSAGES, "max_tokens": max_tokens},
        headers=headers(sim),
    )


def percent(text: str) -> float:
    assert text.endswith("%") and len(text.split(".")[-1]) == 2, text  # one decimal: "12.3%"
    return float(text[:-1])


def test_answers_carry_the_utilization_and_no_pay_as_you_go_headers(sim):
    c = client(sim)
    raw = c.chat.completions.with_raw_response.create(model="ptu", messages=MESSAGES, max_tokens=300)
    prompt = raw.parse().usage.prompt_tokens
    first = percent(raw.headers[HEADER])
    assert first == pytest.approx((prompt + 300 * 3) / 6000 * 100, abs=0.2)  # gpt-4o: output counts 3 times
    assert not [h for h in raw.headers if h.startswith("x-ratelimit")]
    with c.chat.completions.with_streaming_response.create(
        model="ptu", messages=MESSAGES, max_tokens=300, stream=True
    ) as streamed:
        assert percent(streamed.headers[HEADER]) > first  # a stream carries it too, and it rose
        assert any("[DONE]" in line for line in streamed.iter_lines())


def test_over_100_percent_the_sdk_sees_a_429_with_retry_times(sim):
    assert chat(sim, 1990).status_code == 200  # just under 100 %
    assert chat(sim, 300).status_code == 200  # at most 100 % before it: admitted, now above
    with pytest.raises(RateLimitError) as caught:
        client(sim).chat.completions.create(model="ptu", messages=MESSAGES, max_tokens=5)
    r = caught.value.response
    ms = int(r.headers["retry-after-ms"])
    assert 5_000 < ms <= 10_000  # roughly 900 tokens above 100 %, drained at 100 a second
    assert r.headers["retry-after"] == str(math.ceil(ms / 1000))
    assert percent(r.headers[HEADER]) > 100
    assert not [h for h in r.headers if h.startswith("x-ratelimit") or h == "policy-id"]
    message = r.json()["error"]["message"]
    assert message.startswith(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        f"{API_VERSION} have exceeded the provisioned throughput"
    )
    assert view(sim)["throttled"]["ptu"]["utilization"] >= 1
    metrics = httpx.get(f"{sim.url}/++/metrics", headers=headers(sim)).text
    assert 'aoai_rate_limited_total{deployment="ptu",reason="utilization"}' in metrics


def test_the_sdk_waits_retry_after_ms_and_gets_in(sim):
    assert chat(sim, 1990).status_code == 200
    assert chat(sim, 100).status_code == 200  # about 300 tokens above 100 %: 3 s to wait
    started = time.monotonic()
    raw = client(sim, retries=2).chat.completions.with_raw_response.create(model="ptu", messages=MESSAGES, max_tokens=5)
    took = time.monotonic() - started
    assert raw.retries_taken == 1
    assert 1.0 < took < 7.0
    assert percent(raw.headers[HEADER]) == pytest.approx(100, abs=1)  # back at 100 %, plus this small one


def test_limits_view_shows_utilization_and_reset_clears_it(sim):
    chat(sim, 1000)
    entry = view(sim)["deployments"]["ptu"]
    assert (entry["sku"], entry["ptu"], entry["inputTpmPerPtu"], entry["capacityPerMinute"]) == (
        "ProvisionedManaged",
        1,
        6000,
        6000,
    )
    assert percent(entry["utilization"]) > 45
    big = view(sim)["deployments"]["ptu-41"]
    assert (big["inputTpmPerPtu"], big["outputTokenWeight"], big["capacityPerMinute"]) == (3000, 4, 45_000)
    reset(sim)
    assert view(sim)["deployments"]["ptu"]["utilization"] == "0.0%"
    assert chat(sim, 1990).status_code == 200


def test_config_shows_the_sku_and_a_patch_can_add_a_provisioned_deployment(sim):
    config = httpx.get(f"{sim.url}/++/config", headers=headers(sim)).json()
    assert config["deployments"]["ptu"]["sku"] == "ProvisionedManaged"
    patched = httpx.patch(
        f"{sim.url}/++/config",
        headers=headers(sim),
        json={
            "deployments": {
                "added": {
                    "model": "gpt-4o",
                    "sku": "DataZoneProvisionedManaged",
                    "ptu": 1,
                    "inputTpmPerPtu": 600,
                    # answered at once, so the bucket barely drains between the requests below
                    "latency": {
                        "timeToFirstTokenMs": {"mean": 0},
                        "interTokenMs": {"mean": 0},
                        "requestMs": {"mean": 0},
                    },
                }
            }
        },
    )
    assert patched.status_code == 200
    assert chat(sim, 200, "added").status_code == 200  # admitted below 100 %, it takes the bucket past 100 %
    assert chat(sim, 5, "added").status_code == 429
    bad = httpx.patch(
        f"{sim.url}/++/config",
        headers=headers(sim),
        json={"deployments": {"broken": {"model": "gpt-4o", "sku": "ProvisionedManaged"}}},
    )
    assert bad.status_code == 400 and "ptu: required for a provisioned SKU" in bad.json()["error"]["message"]


def test_a_bad_provisioned_deployment_stops_start_up_with_one_line(tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps({"p": {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 0}}))
    s = start_simulator(tmp_path, {"OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)}, wait=False)
    try:
        s.process.wait(30)
    finally:
        s.stop()
    assert s.process.returncode != 0
    line = next(li for li in s.log().splitlines() if "Cannot start the simulator" in li)
    assert f"{path}: p.ptu: must be at least 1, got 0" in line


# --- one bucket across replicas (Redis) -----------------------------------------------------


@pytest.fixture(scope="module")
def replicas(redis_url, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("ptu-replicas")
    env = {"OPENAI_DEPLOYMENT_CONFIG_PATH": deployments_file(folder), "RATE_LIMIT_REDIS_URL": redis_url}
    pair = [start_simulator(folder, env, wait=False) for _ in range(2)]
    for s in pair:
        simulator_process.wait_ready(s)
    yield pair
    for s in pair:
        s.stop()


def test_two_replicas_share_one_bucket(replicas):
    a, b = replicas
    reset(a)
    first = chat(a, 600)  # about 1,810 tokens each: 30 %
    second = chat(b, 600)
    assert (first.status_code, second.status_code) == (200, 200)
    assert percent(second.headers[HEADER]) > percent(first.headers[HEADER]) + 25  # b saw a's request
    assert [chat(s, 600).status_code for s in (a, b)] == [200, 200]  # at 90 %: in, and now 120 %
    refused = chat(a, 5)
    assert refused.status_code == 429 and int(refused.headers["retry-after-ms"]) > 500
    assert percent(view(b)["deployments"]["ptu"]["utilization"]) > 100  # read from Redis
    reset(b)  # clears the shared bucket for both
    assert chat(a, 5).status_code == 200
