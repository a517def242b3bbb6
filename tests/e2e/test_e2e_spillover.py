"""Spillover end to end: a real mitmdump and the real openai SDK. A tiny provisioned deployment
(1 PTU of 6,000 input tokens a minute) is overloaded; with a spillover deployment named in the
deployments file or in the x-ms-spillover-deployment header the client sees 200s carrying
Azure's spillover headers instead of 429s, and the metrics count them."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import API_VERSION, start_simulator
from openai import AzureOpenAI, RateLimitError

ZERO = {"timeToFirstTokenMs": {"mean": 0}, "interTokenMs": {"mean": 0}, "requestMs": {"mean": 0}}
PTU = {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 1, "inputTpmPerPtu": 6000, "latency": ZERO}
DEPLOYMENTS = {
    "ptu": {**PTU},
    "ptu-spills": {**PTU, "spillover": "paygo"},
    "paygo": {"model": "gpt-4o", "tokensPerMinute": 1_000_000, "latency": ZERO},
}
MESSAGES = [{"role": "user", "content": "Count to three."}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spillover")
    path = folder / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    s = start_simulator(folder, {"OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)})
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def fresh(sim):
    r = httpx.post(f"{sim.url}/++/reset-limits", headers={"api-key": sim.key})
    assert r.json()["reset"] is True


def client(sim, **headers) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0, default_headers=headers
    )


def overload(c: AzureOpenAI, deployment: str, count: int = 8) -> list:
    """`count` requests of 300 output tokens (900 of the bucket's 6,000 each): the first few fit."""
    return [
        c.chat.completions.with_raw_response.create(model=deployment, messages=MESSAGES, max_tokens=300)
        for _ in range(count)
    ]


def test_without_spillover_the_overloaded_deployment_answers_429(sim):
    with pytest.raises(RateLimitError) as caught:
        overload(client(sim), "ptu")
    assert "x-ms-spillover-error" not in caught.value.response.headers


def test_the_header_turns_the_429s_into_spilled_200s(sim):
    answers = overload(client(sim, **{"x-ms-spillover-deployment": "paygo"}), "ptu")
    served = [r for r in answers if "x-ms-spillover-from-ptu" in r.headers]
    kept = [r for r in answers if "x-ms-spillover-from-ptu" not in r.headers]
    assert len(kept) >= 5 and len(served) >= 1  # 6,000 / 900: six fit, the rest spill
    assert all(r.http_response.status_code == 200 for r in answers)
    for r in served:
        assert r.headers["x-ms-spillover-from-ptu"] == "ptu"
        assert r.headers["x-ms-deployment-name"] == "paygo"
        assert r.headers["x-ratelimit-limit-tokens"] == "1000000"  # the standard deployment's quota
        assert "azure-openai-deployment-utilization" not in r.headers
        assert r.parse().choices[0].message.content  # a real answer the SDK parses
    for r in kept:
        assert "azure-openai-deployment-utilization" in r.headers
    metrics = httpx.get(f"{sim.url}/++/metrics").text
    assert f'aoai_spillover_requests_total{{deployment="ptu",to="paygo"}} {float(len(served))}' in metrics


def test_the_deployments_file_setting_spills_without_a_header(sim):
    answers = overload(client(sim), "ptu-spills")
    assert all(r.http_response.status_code == 200 for r in answers)
    assert any(r.headers.get("x-ms-deployment-name") == "paygo" for r in answers)
    view = httpx.get(f"{sim.url}/++/limits", headers={"api-key": sim.key}).json()
    assert view["spilledOver"]["ptu-spills"]["paygo"] >= 1
