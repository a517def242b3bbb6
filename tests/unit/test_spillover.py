"""Spillover without a proxy: which standard deployment takes a throttled provisioned
deployment's request (the deployments-file field, the request header, the Responses API
that has none), the headers that say it spilled, and the Limits stage on flows from
mitmproxy's test kit: served by the standard deployment's own quota, or the provisioned
deployment's 429 with x-ms-spillover-error when that quota is used up too."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy.test import taddons, tflow
from redis_server import redis_url  # noqa: F401
from unit_support import admit

from aoai.openai import catalogue
from aoai.runtime import config as cfg
from aoai.runtime import limits, spillover
from aoai.runtime.config import ConfigError, Deployment, SimulatorConfig
from aoai.runtime.state import context_of
from aoai.stages.metrics import Spillover
from aoai.stages.ratelimit import Limits

KEY = "unit-key"
VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Hello!"}]
PTU = {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 1, "inputTpmPerPtu": 6000}


# --- the deployments file -------------------------------------------------------------------


def test_a_provisioned_deployment_names_its_spillover_deployment():
    deps = cfg.parse_deployments(
        {"ptu": {**PTU, "spillover": "paygo"}, "paygo": {"model": "gpt-4o", "tokensPerMinute": 1000}}, "deps.json"
    )
    assert deps["ptu"].spillover == "paygo"
    assert deps["ptu"].to_json()["spillover"] == "paygo"
    assert "spillover" not in deps["paygo"].to_json()


@pytest.mark.parametrize(
    "deployments, message",
    [
        ({"ptu": {**PTU, "spillover": "nope"}}, r"^deps.json: ptu.spillover: no deployment 'nope' is defined$"),
        (
            {"ptu": {**PTU, "spillover": "other"}, "other": {**PTU}},
            r"^deps.json: ptu.spillover: 'other' is a provisioned deployment; spillover goes to a standard one$",
        ),
        (
            {"ptu": {**PTU, "spillover": "mini"}, "mini": {"model": "gpt-4o-mini"}},
            r"^deps.json: ptu.spillover: 'mini' runs gpt-4o-mini, not gpt-4o$",
        ),
        (
            {"ptu": {**PTU, "spillover": "global"}, "global": {"model": "gpt-4o", "sku": "GlobalStandard"}},
            r"'global' is GlobalStandard; a ProvisionedManaged deployment spills to a Standard one$",
        ),
        ({"ptu": {**PTU, "spillover": 7}}, r"^deps.json: ptu.spillover: expected the name of a standard deployment"),
        (
            {"paygo": {"model": "gpt-4o", "spillover": "x"}},
            r'^deps.json: paygo.spillover: only for a provisioned SKU \("sku": "ProvisionedManaged"\)$',
        ),
    ],
)
def test_a_spillover_deployment_that_cannot_take_the_overflow_stops_start_up(deployments, message):
    with pytest.raises(ConfigError, match=message):
        cfg.parse_deployments(deployments, "deps.json")


def test_data_processing_levels_match():
    deps = cfg.parse_deployments(
        {
            "ptu": {**PTU, "sku": "GlobalProvisionedManaged", "spillover": "global"},
            "global": {"model": "gpt-4o", "sku": "GlobalStandard"},
            "zone-ptu": {**PTU, "sku": "DataZoneProvisionedManaged", "spillover": "zone"},
            "zone": {"model": "gpt-4o", "sku": "DataZoneStandard"},
        },
        "deps.json",
    )
    assert (deps["ptu"].spillover, deps["zone-ptu"].spillover) == ("global", "zone")


# --- the decision ---------------------------------------------------------------------------


def ptu(name="ptu", spill=None) -> Deployment:
    return Deployment(
        name, catalogue.MODELS["gpt-4o"], sku="ProvisionedManaged", ptu=1, input_tpm_per_ptu=6000, spillover=spill
    )


def standard(name, model="gpt-4o", tpm=100_000) -> Deployment:
    return Deployment(name, catalogue.MODELS[model], tokens_per_minute=tpm)


DEPLOYMENTS = {d.name: d for d in (standard("paygo"), standard("other"), standard("mini", "gpt-4o-mini"), ptu("p2"))}


def test_the_request_header_names_the_spillover_deployment():
    assert spillover.target(ptu(), "chat/completions", "paygo", DEPLOYMENTS) is DEPLOYMENTS["paygo"]
    assert spillover.target(ptu(), "chat/completions", " paygo ", DEPLOYMENTS) is DEPLOYMENTS["paygo"]


def test_the_deployment_setting_wins_over_the_header():
    assert spillover.target(ptu(spill="other"), "completions", "paygo", DEPLOYMENTS) is DEPLOYMENTS["other"]
    assert spillover.target(ptu(spill="other"), "completions", None, DEPLOYMENTS) is DEPLOYMENTS["other"]


@pytest.mark.parametrize("header", [None, "", "missing", "mini", "p2"])
def test_nothing_usable_named_is_no_spillover(header):
    assert spillover.target(ptu(), "chat/completions", header, DEPLOYMENTS) is None


def test_a_spillover_deployment_removed_since_start_up_is_no_spillover():
    assert spillover.target(ptu(spill="gone"), "chat/completions", "paygo", DEPLOYMENTS) is None


def test_the_responses_api_has_no_spillover():
    assert spillover.target(ptu(spill="paygo"), "responses", "paygo", DEPLOYMENTS) is None


def test_the_answer_names_both_deployments():
    assert spillover.served_headers("my-ptu", "my-paygo") == {
        "x-ms-deployment-name": "my-paygo",
        "x-ms-spillover-from-my-ptu": "my-ptu",
        "x-ms-my-paygo": "my-paygo",
    }
    # A name no header name can hold is only a header value.
    assert spillover.served_headers("a ptu", "b:c") == {"x-ms-deployment-name": "b:c"}


# --- the Limits stage on flows --------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def stage():
    deployments = {
        d.name: d
        for d in (
            ptu("ptu"),
            ptu("ptu-set", spill="small"),
            standard("paygo"),
            standard("small", tpm=1000),
        )
    }
    config = SimulatorConfig(api_key=KEY, deployments=deployments)
    clock = Clock()
    addon = Limits(config, limits.Limiter(limits.MemoryWindows(), clock=clock))
    with taddons.context(addon):
        yield addon


def flow(config, deployment="ptu", max_tokens=100, spill=None, path=None):
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = path or f"/openai/deployments/{deployment}/chat/completions?api-version={VERSION}"
    f.request.headers.clear()
    f.request.headers["api-key"] = KEY
    f.request.headers["content-type"] = "application/json"
    if spill:
        f.request.headers[spillover.REQUEST_HEADER] = spill
    body = {"messages": MESSAGES, "max_tokens": max_tokens}
    if path:
        body = {"model": deployment, "input": "Hello!", "max_output_tokens": max_tokens}
    f.request.content = json.dumps(body).encode()
    assert admit(f, config) is None
    return f


def fill_up(stage, deployment="ptu"):
    stage.request(flow(stage.config, deployment, max_tokens=2000))  # 6,000+ tokens: the whole bucket


def test_a_provisioned_deployment_with_room_ignores_the_header(stage):
    f = flow(stage.config, spill="paygo")
    stage.request(f)
    f.response = tflow.tresp()
    stage.response(f)
    assert context_of(f).deployment.name == "ptu"
    assert "azure-openai-deployment-utilization" in f.response.headers
    assert not [h for h in f.response.headers if "spillover" in h]
    assert not stage.limiter.counters.spilled


def test_a_full_provisioned_deployment_spills_to_the_header_s_deployment(stage):
    fill_up(stage)
    f = flow(stage.config, spill="paygo")
    stage.request(f)
    assert f.response is None  # admitted: the standard deployment answers
    context = context_of(f)
    assert context.deployment.name == "paygo"
    f.response = tflow.tresp()
    stage.response(f)
    h = f.response.headers
    assert h["x-ms-spillover-from-ptu"] == "ptu"
    assert h["x-ms-deployment-name"] == "paygo"
    assert h["x-ratelimit-limit-tokens"] == "100000"
    assert int(h["x-ratelimit-remaining-tokens"]) == 100_000 - context.estimated_tokens
    assert "azure-openai-deployment-utilization" not in h
    assert stage.limiter.counters.spilled[("ptu", "paygo")] == 1
    assert stage.limiter.counters.throttled[("ptu", limits.UTILIZATION)] == 1  # the PTU still counts its 429
    assert stage.limiter.counters.to_json()["spilledOver"] == {"ptu": {"paygo": 1}}


def test_without_a_spillover_deployment_the_429_stays(stage):
    fill_up(stage)
    f = flow(stage.config)
    stage.request(f)
    assert f.response.status_code == 429
    assert spillover.ERROR_HEADER not in f.response.headers
    assert "spilledOver" not in stage.limiter.counters.to_json()


def test_a_throttled_spillover_deployment_gives_the_provisioned_429_with_its_status(stage):
    fill_up(stage, "ptu-set")
    # "small" has 1,000 tokens a minute: the first spilled request takes most of it.
    first = flow(stage.config, "ptu-set", max_tokens=900)
    stage.request(first)
    assert first.response is None and context_of(first).deployment.name == "small"
    second = flow(stage.config, "ptu-set", max_tokens=900)
    stage.request(second)
    r = second.response
    assert r.status_code == 429
    assert r.headers[spillover.ERROR_HEADER] == "429"
    assert "azure-openai-deployment-utilization" in r.headers  # the provisioned deployment's answer
    assert "x-ms-spillover-from-ptu-set" not in r.headers
    assert context_of(second).deployment.name == "ptu-set"
    assert stage.limiter.counters.spilled[("ptu-set", "small")] == 1


def test_the_responses_api_keeps_its_429(stage):
    fill_up(stage)
    f = flow(stage.config, spill="paygo", path="/openai/v1/responses")
    stage.request(f)
    assert f.response.status_code == 429
    assert not stage.limiter.counters.spilled


def test_metrics_count_spilled_requests(stage):
    fill_up(stage)
    for _ in range(2):
        stage.request(flow(stage.config, spill="paygo"))
    (family,) = Spillover(stage.limiter).collect()
    assert family.name == "aoai_spillover_requests"
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("aoai_spillover_requests_total", {"deployment": "ptu", "to": "paygo"}, 2)
    ]


def test_shared_windows_spill_the_same(redis_url):  # noqa: F811
    """With RATE_LIMIT_REDIS_URL both the bucket and the standard deployment's windows are in
    Redis: the decision comes later, the same."""
    deployments = {d.name: d for d in (ptu("ptu"), standard("paygo"))}
    config = SimulatorConfig(api_key=KEY, deployments=deployments)
    windows = limits.RedisWindows.from_url(redis_url, prefix="unit-test-spillover:", server_time=False)
    addon = Limits(config, limits.Limiter(windows, clock=Clock()))

    async def run():
        await windows.reset()
        flows = [flow(config, max_tokens=2000), flow(config, spill="paygo")]
        for f in flows:
            pending = addon.request(f)
            assert pending is not None  # Redis answers later
            await pending
        await windows.reset()
        await windows.close()
        return flows[1]

    with taddons.context(addon):
        spilled = asyncio.run(run())
    assert spilled.response is None
    assert context_of(spilled).deployment.name == "paygo"
    assert context_of(spilled).quota_headers["x-ms-spillover-from-ptu"] == "ptu"
    assert addon.limiter.counters.spilled[("ptu", "paygo")] == 1
