"""Provisioned (PTU) deployments without a proxy: the utilization bucket against a made-up
clock (in memory and, where redis-server exists, in Redis, which must behave the same), the
cost with output tokens weighted per model, the headers and texts, the deployments-file
fields and the setting, and the Limits stage on flows from mitmproxy's test kit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons, tflow
from redis_server import redis_url  # noqa: F401
from unit_support import admit

from aoai.openai import catalogue
from aoai.runtime import config as cfg
from aoai.runtime import limits
from aoai.runtime.config import ConfigError, Deployment, SimulatorConfig
from aoai.runtime.state import context_of
from aoai.stages import ratelimit
from aoai.stages.ratelimit import Limits

KEY = "unit-key"
VERSION = "2024-10-21"
# 1 PTU of 6,000 input tokens a minute: 100 a second, and 100 % is a bucket of 6,000.
SMALL = limits.ptu_capacity(1, 6000, 3.0)


# --- the bucket -----------------------------------------------------------------------------


class SyncRedis:
    """The Redis bucket driven from plain test code, on one event loop, with the test's clock."""

    shared = True

    def __init__(self, url: str):
        self.loop = asyncio.new_event_loop()
        self.windows = limits.RedisWindows.from_url(url, prefix="unit-test-ptu:", server_time=False)

    def fill(self, key, capacity, cost, now):
        return self.loop.run_until_complete(self.windows.fill(key, capacity, cost, now))

    def utilization(self, key, capacity, now):
        return self.loop.run_until_complete(self.windows.utilization(key, capacity, now))

    def reset(self):
        self.loop.run_until_complete(self.windows.reset())

    def close(self):
        self.reset()
        self.loop.run_until_complete(self.windows.close())
        self.loop.close()


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield limits.MemoryWindows()
        return
    windows = SyncRedis(request.getfixturevalue("redis_url"))
    yield windows
    windows.close()


def test_capacity_is_ptus_times_the_figure_per_ptu():
    c = limits.ptu_capacity(15, 2500, 3)
    assert (c.per_minute, c.per_second, c.bucket) == (37_500, 625, 37_500)
    assert c.cost(100, 200) == 100 + 600


def test_utilization_rises_with_each_request_and_drains_at_capacity(store):
    first = store.fill("d", SMALL, 1500, 0.0)
    assert first.allowed and first.utilization == pytest.approx(0.25)
    assert store.fill("d", SMALL, 1500, 0.0).utilization == pytest.approx(0.5)
    # 100 tokens a second drain: 10 s later 1,000 of the 3,000 have gone.
    assert store.utilization("d", SMALL, 10.0) == pytest.approx(2000 / 6000)
    assert store.utilization("d", SMALL, 30.0) == pytest.approx(0.0)
    assert store.utilization("d", SMALL, 300.0) == 0.0  # never below empty


def test_requests_are_refused_only_while_utilization_is_above_100_percent(store):
    assert store.fill("d", SMALL, 6000, 0.0).utilization == pytest.approx(1.0)
    at_100 = store.fill("d", SMALL, 600, 0.0)  # at 100 %, not above: in, and now above
    assert at_100.allowed and at_100.utilization == pytest.approx(1.1)
    refused = store.fill("d", SMALL, 1, 0.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0)  # 600 tokens above 100 % at 100 a second
    assert refused.utilization == pytest.approx(1.1)
    assert store.fill("d", SMALL, 1, 3.0).retry_after == pytest.approx(3.0)  # a refusal added nothing


def test_waiting_exactly_the_retry_time_gets_in_and_a_moment_less_does_not(store):
    store.fill("d", SMALL, 6000, 0.0)
    store.fill("d", SMALL, 1237, 0.0)
    refused = store.fill("d", SMALL, 500, 0.0)
    wait = limits.whole_ms(refused.retry_after) / 1000
    assert wait == 12.37
    assert not store.fill("d", SMALL, 500, wait - 0.002).allowed
    late = store.fill("d", SMALL, 500, wait)
    assert late.allowed and late.utilization == pytest.approx((6000 + 500) / 6000)


def test_sustained_overload_admits_exactly_the_capacity(store):
    """Clients that retry when told: over ten minutes the admitted cost is ten minutes of
    capacity plus the bucket that was free at the start, within one request."""
    now, admitted, cost = 0.0, 0, 700
    while now < 600:
        fill = store.fill("d", SMALL, cost, now)
        if fill.allowed:
            admitted += cost
        else:
            now += limits.whole_ms(fill.retry_after) / 1000
    assert abs(admitted - (600 * SMALL.per_second + SMALL.bucket)) <= cost


def test_deployments_have_their_own_buckets(store):
    store.fill("a", SMALL, 7000, 0.0)
    assert not store.fill("a", SMALL, 1, 0.0).allowed
    assert store.fill("b", SMALL, 1, 0.0).allowed


def test_reset_empties_the_buckets(store):
    store.fill("d", SMALL, 7000, 0.0)
    store.reset()
    assert store.fill("d", SMALL, 1, 0.0).utilization == pytest.approx(1 / 6000)


def test_shared_buckets_use_redis_time(redis_url):  # noqa: F811
    async def fill():
        windows = limits.RedisWindows.from_url(redis_url, prefix="unit-test-ptu-time:")
        try:
            return await windows.fill("d", SMALL, 10, 0.0)  # the caller's "0.0" is ignored
        finally:
            await windows.reset()
            await windows.close()

    fill = asyncio.run(fill())
    assert fill.allowed and abs(fill.at - time.time()) < 5


# --- headers and texts ----------------------------------------------------------------------


def test_answers_carry_the_utilization_with_one_decimal():
    assert limits.utilization_headers(limits.Fill(True, 0.42449)) == {"azure-openai-deployment-utilization": "42.4%"}
    assert limits.utilization_headers(limits.Fill(True, 1.0312))["azure-openai-deployment-utilization"] == "103.1%"


def test_a_429_says_when_to_retry_and_has_no_pay_as_you_go_headers():
    headers = limits.utilization_throttled_headers(limits.Fill(False, 1.05, 2.0004))
    assert headers == {"retry-after": "3", "retry-after-ms": "2001", "azure-openai-deployment-utilization": "105.0%"}
    text = limits.utilization_message("ChatCompletions_Create", VERSION, 3)
    assert text.startswith(
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        "2024-10-21 have exceeded the provisioned throughput"
    )
    assert text.endswith("Please retry after 3 seconds.")


# --- the catalogue, the deployments file and the setting ------------------------------------


@pytest.mark.parametrize(
    "model, per_ptu, weight",
    [
        ("gpt-4o", 2500, 3),
        ("gpt-4o-mini", 37000, 3),
        ("gpt-4.1", 3000, 4),
        ("gpt-4.1-nano", 59400, 4),
        ("o4-mini", 5400, 4),
        ("gpt-5", 4750, 8),
        ("gpt-5-mini", 23750, 8),
        ("gpt-35-turbo", 2500, 3),  # no published figure: the documented default
    ],
)
def test_catalogue_figures(model, per_ptu, weight):
    figures = catalogue.provisioned(catalogue.MODELS[model])
    assert (figures.input_tpm_per_ptu, figures.output_weight) == (per_ptu, weight)


def parse(spec: dict) -> Deployment:
    return cfg.parse_deployment("p", spec, "deps.json: p")


def test_a_provisioned_deployment_in_the_file():
    dep = parse({"model": "gpt-4.1", "sku": "GlobalProvisionedManaged", "ptu": 50, "inputTpmPerPtu": 2800})
    assert (dep.provisioned, dep.sku, dep.ptu, dep.input_tpm_per_ptu) == (True, "GlobalProvisionedManaged", 50, 2800)
    assert dep.to_json() == {"model": "gpt-4.1", "sku": "GlobalProvisionedManaged", "ptu": 50, "inputTpmPerPtu": 2800}
    assert parse(dep.to_json()).to_json() == dep.to_json()
    standard = parse({"model": "gpt-4o", "sku": "GlobalStandard", "tokensPerMinute": 1000})
    assert not standard.provisioned and standard.tokens_per_minute == 1000
    assert standard.to_json() == {"model": "gpt-4o", "sku": "GlobalStandard", "tokensPerMinute": 1000}
    assert "sku" not in parse({"model": "gpt-4o"}).to_json()


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": "gpt-4o", "sku": "Provisioned", "ptu": 15}, r"^deps.json: p.sku: unknown SKU \"Provisioned\"; use"),
        ({"model": "gpt-4o", "sku": "ProvisionedManaged"}, r"^deps.json: p.ptu: required for a provisioned SKU"),
        ({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 0}, r"^deps.json: p.ptu: must be at least 1, got 0"),
        ({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15.5}, r"p.ptu: expected a whole number, got 15.5"),
        ({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": "15"}, r"p.ptu: expected a number, got \"15\""),
        (
            {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15, "inputTpmPerPtu": 0},
            r"p.inputTpmPerPtu: must be at least 1",
        ),
        ({"model": "gpt-4o", "ptu": 15}, r"^deps.json: p.ptu: only for a provisioned SKU"),
        ({"model": "gpt-4o", "inputTpmPerPtu": 3000}, r"p.inputTpmPerPtu: only for a provisioned SKU"),
        (
            {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15, "tokensPerMinute": 1000},
            r"p.tokensPerMinute: a provisioned deployment has no tokensPerMinute quota",
        ),
        (
            {"model": "text-embedding-3-small", "sku": "ProvisionedManaged", "ptu": 15},
            r"p.sku: text-embedding-3-small has no provisioned deployments",
        ),
    ],
)
def test_deployments_file_errors_name_the_field(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse(spec)


def test_sizes_azure_would_refuse_are_warned_about_and_used(caplog):
    with caplog.at_level(logging.WARNING, logger="aoai.runtime.config"):
        assert parse({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 2}).ptu == 2
    assert "at least 15 PTUs, in steps of 5; 2 is used as given" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aoai.runtime.config"):
        parse({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 20})
    assert not caplog.text


def apply_settings(**changes) -> SimulatorConfig:
    options = SimpleNamespace(**{o.name: o.default for o in ratelimit.OPTIONS})
    for name, value in changes.items():
        setattr(options, name, value)
    config = SimulatorConfig()
    ratelimit.apply(options, config, set(changes))
    return config


def test_the_setting_replaces_the_catalogue_and_a_deployment_replaces_both():
    config = apply_settings(ptu_input_tpm_per_ptu=["gpt-4o=3000", " gpt-3.5-turbo=9000"])
    assert config.ptu_input_tpm == {"gpt-4o": 3000, "gpt-35-turbo": 9000}
    plain = parse({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15})
    own = parse({"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15, "inputTpmPerPtu": 4000})
    other = parse({"model": "gpt-4.1", "sku": "ProvisionedManaged", "ptu": 15})
    assert [config.input_tpm_per_ptu(d) for d in (plain, own, other)] == [3000, 4000, 3000]
    assert apply_settings().ptu_input_tpm == {}


@pytest.mark.parametrize("value", ["gpt-4o", "gpt-4o=", "gpt-4o=0", "gpt-4o=2.5", "nope=3000"])
def test_the_setting_refuses_what_it_cannot_read(value):
    with pytest.raises(ConfigError, match=r"^PTU_INPUT_TPM_PER_PTU: "):
        apply_settings(ptu_input_tpm_per_ptu=[value])


# --- the Limits stage on flows --------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "Hello!"}]


def provisioned(name, model, ptu=1, per_ptu=6000) -> Deployment:
    return Deployment(name, catalogue.MODELS[model], sku="ProvisionedManaged", ptu=ptu, input_tpm_per_ptu=per_ptu)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def stage():
    deployments = {
        d.name: d
        for d in (provisioned("ptu-4o", "gpt-4o"), provisioned("ptu-41", "gpt-4.1"), provisioned("ptu-5", "gpt-5"))
    }
    config = SimulatorConfig(api_key=KEY, deployments=deployments)
    clock = Clock()
    addon = Limits(config, limits.Limiter(limits.MemoryWindows(), clock=clock))
    addon.clock = clock
    with taddons.context(addon):
        yield addon


def chat_flow(config, deployment="ptu-4o", body=None, operation="chat/completions"):
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = f"/openai/deployments/{deployment}/{operation}?api-version={VERSION}"
    f.request.headers.clear()
    f.request.headers["api-key"] = KEY
    f.request.headers["content-type"] = "application/json"
    key = "max_completion_tokens" if deployment == "ptu-5" else "max_tokens"
    f.request.content = json.dumps(body or {"messages": MESSAGES, key: 100}).encode()
    assert admit(f, config) is None
    return f


@pytest.mark.parametrize("deployment, weight", [("ptu-4o", 3), ("ptu-41", 4), ("ptu-5", 8)])
def test_output_tokens_weigh_as_the_model_says(stage, deployment, weight):
    f = chat_flow(stage.config, deployment)
    stage.request(f)
    context = context_of(f)
    assert context.estimated_tokens == context.prompt_tokens + 100 * weight
    assert f.response is None


def test_admitted_answers_carry_the_utilization_and_no_quota_headers(stage):
    f = chat_flow(stage.config)
    stage.request(f)
    f.response = tflow.tresp()
    stage.response(f)
    used = context_of(f).estimated_tokens
    assert f.response.headers["azure-openai-deployment-utilization"] == f"{used / 6000 * 100:.1f}%"
    assert not [h for h in f.response.headers if h.startswith("x-ratelimit")]


def test_over_100_percent_is_a_429_with_retry_times(stage):
    big = {"messages": MESSAGES, "max_tokens": 2000}  # 6,000+ tokens at 3 each: the whole bucket
    stage.request(chat_flow(stage.config, body=big))
    f = chat_flow(stage.config)
    stage.request(f)
    r = f.response
    assert r.status_code == 429
    over = context_of(f).prompt_tokens + 6000 - 6000  # what lies above 100 %, drained at 100 a second
    assert r.headers["retry-after-ms"] == str(limits.whole_ms(over / 100))
    assert r.headers["retry-after"] == str(limits.retry_seconds(over / 100))
    assert not [h for h in r.headers if h.startswith("x-ratelimit") or h == "policy-id"]
    assert json.loads(r.content)["error"]["code"] == "429"
    assert stage.limiter.counters.throttled[("ptu-4o", limits.UTILIZATION)] == 1
    stage.clock.now += int(r.headers["retry-after-ms"]) / 1000
    again = chat_flow(stage.config)
    stage.request(again)
    assert again.response is None


def test_the_view_shows_utilization_and_reset_clears_it(stage):
    stage.request(chat_flow(stage.config, body={"messages": MESSAGES, "max_tokens": 990}))
    entry = stage.view()["deployments"]["ptu-4o"]
    assert entry["sku"] == "ProvisionedManaged" and entry["capacityPerMinute"] == 6000
    assert entry["outputTokenWeight"] == 3 and entry["utilization"].endswith("%")
    assert float(entry["utilization"][:-1]) > 49
    asyncio.run(stage.reset())
    assert stage.view()["deployments"]["ptu-4o"]["utilization"] == "0.0%"
