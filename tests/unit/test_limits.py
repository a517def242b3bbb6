"""Rate limits without a proxy: windows against a made-up clock, cost estimates, headers and
texts, and the Limits stage on flows from mitmproxy's test kit.

The window tests run against the in-memory windows and, where redis-server exists, the Redis
ones, which must behave the same.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy.test import taddons, tflow
from redis_server import redis_url  # noqa: F401
from unit_support import admit

from aoai.openai import catalogue, tokens, validation
from aoai.runtime import limits
from aoai.runtime.config import Deployment, SimulatorConfig
from aoai.runtime.limits import Quota
from aoai.runtime.routes import TABLE
from aoai.runtime.state import context_of
from aoai.stages import routing
from aoai.stages.ratelimit import Limits

KEY = "unit-key"
VERSION = "2024-10-21"


# --- windows --------------------------------------------------------------------------------


class SyncRedis:
    """The Redis windows driven from plain test code, on one event loop."""

    def __init__(self, url: str):
        self.loop = asyncio.new_event_loop()
        self.windows = limits.RedisWindows.from_url(url, prefix="unit-test:", server_time=False)
        self.shared = True

    def check(self, key, quota, cost, now):
        return self.loop.run_until_complete(self.windows.check(key, quota, cost, now))

    def close(self):
        self.loop.run_until_complete(self.windows.reset())
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


def test_tokens_remaining_counts_down_exactly(store):
    quota = Quota(tokens=1000)
    assert [store.check("d", quota, 300, t).remaining_tokens for t in (0.0, 1.0, 2.0)] == [700, 400, 100]
    refused = store.check("d", quota, 300, 3.0)
    assert not refused.allowed and refused.reason == limits.TOKENS
    assert refused.remaining_tokens == 100  # a refused request costs nothing


def test_token_retry_time_is_when_enough_old_entries_leave(store):
    quota = Quota(tokens=1000)
    for t in (0.0, 10.0, 20.0):
        assert store.check("d", quota, 300, t).allowed
    # 100 left: 300 more needs the first entry gone (t=60); 500 more needs two (t=70).
    assert store.check("d", quota, 300, 30.0).retry_after == pytest.approx(30.0)
    assert store.check("d", quota, 500, 30.0).retry_after == pytest.approx(40.0)


def test_waiting_exactly_the_retry_time_fits_and_a_moment_less_does_not(store):
    quota = Quota(tokens=1000)
    for t in (0.1, 10.3, 20.7):
        store.check("d", quota, 300, t)
    now = 30.2
    wait = limits.whole_ms(store.check("d", quota, 300, now).retry_after) / 1000
    assert wait == pytest.approx(29.9)
    assert not store.check("d", quota, 300, now + wait - 0.001).allowed
    assert store.check("d", quota, 300, now + wait).allowed


def test_the_token_window_slides(store):
    quota = Quota(tokens=1000)
    store.check("d", quota, 1000, 0.0)
    assert not store.check("d", quota, 1, 59.99).allowed
    assert store.check("d", quota, 1000, 60.0).allowed  # the first entry left at 60 s exactly


def test_request_window_counts_and_retry_time(store):
    quota = Quota(requests=2, request_window=10.0)
    assert store.check("d", quota, 0, 0.0).remaining_requests == 1
    assert store.check("d", quota, 0, 0.5).remaining_requests == 0
    refused = store.check("d", quota, 0, 1.0)
    assert refused.reason == limits.REQUESTS and refused.retry_after == pytest.approx(9.0)
    assert store.check("d", quota, 0, 10.0).allowed
    assert not store.check("d", quota, 0, 10.4).allowed
    assert store.check("d", quota, 0, 10.5).allowed


def test_the_longer_wait_names_the_reason_and_sets_the_retry_time(store):
    quota = Quota(tokens=1000, requests=1, request_window=10.0)
    store.check("d", quota, 900, 0.0)
    v = store.check("d", quota, 200, 5.0)  # requests: 5 s more; tokens: 55 s more
    assert (v.reason, v.retry_after, v.request_wait) == (limits.TOKENS, pytest.approx(55.0), pytest.approx(5.0))
    v = store.check("d", quota, 50, 5.0)  # tokens fit; only the request window is in the way
    assert (v.reason, v.retry_after, v.token_wait) == (limits.REQUESTS, pytest.approx(5.0), 0.0)


def test_deployments_are_limited_independently(store):
    quota = Quota(tokens=100, requests=1, request_window=10.0)
    assert store.check("a", quota, 100, 0.0).allowed
    assert store.check("b", quota, 100, 0.0).allowed
    assert not store.check("a", quota, 1, 0.1).allowed


def test_a_smaller_quota_at_run_time_counts_what_is_already_in_the_window(store):
    store.check("d", Quota(requests=5, request_window=10.0), 0, 0.0)
    store.check("d", Quota(requests=5, request_window=10.0), 0, 1.0)
    store.check("d", Quota(requests=5, request_window=10.0), 0, 2.0)
    v = store.check("d", Quota(requests=2, request_window=10.0), 0, 3.0)
    assert not v.allowed and v.retry_after == pytest.approx(8.0)  # two must leave: t=1 leaves at 11


def test_shared_windows_use_redis_time(redis_url):  # noqa: F811
    import time

    async def check():
        windows = limits.RedisWindows.from_url(redis_url, prefix="unit-test-time:")
        try:
            first = await windows.check("d", Quota(requests=1, request_window=10.0), 0, -1.0)  # `now` unused
            second = await windows.check("d", Quota(requests=1, request_window=10.0), 0, -1.0)
            return first, second
        finally:
            await windows.reset()
            await windows.close()

    first, second = asyncio.run(check())
    assert first.allowed and abs(first.at - time.time()) < 5
    assert not second.allowed and 9.5 < second.retry_after <= 10.0


def test_a_cost_above_the_whole_quota_is_refused_for_good():
    limiter = limits.Limiter(limits.MemoryWindows(), clock=lambda: 0.0)
    v = limiter.check("d", Quota(tokens=1000), 1001)
    assert v.reason == limits.TOO_LARGE and v.retry_after == limits.NEVER_SECONDS
    assert limiter.check("d", Quota(tokens=1000), 1000).allowed  # it took nothing


def test_memory_windows_cost_little_with_100_deployments():
    import time

    store, quota = limits.MemoryWindows(), Quota(tokens=60000, requests=60, request_window=10.0)
    now, n = 0.0, 50_000
    started = time.perf_counter()
    for i in range(n):
        now += 0.001
        store.check(f"d{i % 100}", quota, 200, now)
    per_call = (time.perf_counter() - started) / n
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per check"


# --- quotas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "per_minute, window, expected",
    [
        (600, 1.0, (10, 1.0)),  # Azure's example: 600 RPM is 10 per second
        (360, 10.0, (60, 10.0)),
        (100, 10.0, (16, 10.0)),  # rounded down: never above the rate
        (6, 1.0, (1, 10.0)),  # below one per window: the window stretches to hold one
        (0.6, 10.0, (1, 100.0)),
        (0, 10.0, (0, 10.0)),
    ],
)
def test_request_limit(per_minute, window, expected):
    assert limits.request_limit(per_minute, window) == expected


def test_deployment_quota_defaults_to_6_rpm_per_1000_tpm():
    assert limits.deployment_quota(60_000, None, 10.0) == Quota(60_000, 60, 10.0)
    assert limits.deployment_quota(60_000, None, 1.0) == Quota(60_000, 6, 1.0)
    assert limits.deployment_quota(60_000, 30, 10.0) == Quota(60_000, 5, 10.0)
    assert limits.deployment_quota(0, None, 10.0).unlimited
    assert limits.deployment_quota(0, 120, 10.0) == Quota(0, 20, 10.0)


# --- cost -----------------------------------------------------------------------------------

GPT4O = catalogue.MODELS["gpt-4o"]
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
        },
    }
]


CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS = (TABLE.first(name) for name in ("chat", "completions", "embeddings"))


def prompt(operation, body, model=GPT4O) -> int:
    return operation.prompt_tokens(body, tokens.encoding(model.encoding))


def cost(operation, body, model=GPT4O, reservation=limits.DEFAULT_RESERVATION) -> int:
    return limits.estimate_tokens(
        operation.name,
        body,
        prompt(operation, body, model),
        default_reservation=reservation,
        max_output_tokens=model.max_output_tokens,
    )


def test_chat_cost_is_the_prompt_plus_max_tokens_for_every_choice():
    assert prompt(CHAT_COMPLETIONS, {"messages": MESSAGES}) == 19
    assert cost(CHAT_COMPLETIONS, {"messages": MESSAGES, "max_tokens": 100}) == 119
    assert cost(CHAT_COMPLETIONS, {"messages": MESSAGES, "max_tokens": 100, "n": 3}) == 319
    assert cost(CHAT_COMPLETIONS, {"messages": MESSAGES, "max_completion_tokens": 50, "max_tokens": 100}) == 69


def test_chat_tools_are_part_of_the_prompt():
    with_tools = cost(CHAT_COMPLETIONS, {"messages": MESSAGES, "tools": TOOLS, "max_tokens": 10})
    assert with_tools == prompt(CHAT_COMPLETIONS, {"messages": MESSAGES, "tools": TOOLS}) + 10
    assert with_tools > 19 + 10 + 10


def test_chat_without_a_maximum_reserves_the_default_within_the_models_reach():
    assert cost(CHAT_COMPLETIONS, {"messages": MESSAGES}) == 19 + 4096
    assert cost(CHAT_COMPLETIONS, {"messages": MESSAGES}, reservation=1000) == 19 + 1000
    assert cost(CHAT_COMPLETIONS, {"messages": MESSAGES}, reservation=100_000) == 19 + GPT4O.max_output_tokens


def test_completions_cost_counts_best_of_each_prompt_and_the_apis_default_of_16():
    instruct = catalogue.MODELS["gpt-35-turbo-instruct"]
    one = prompt(COMPLETIONS, {"prompt": "Say this is a test"}, instruct)
    assert cost(COMPLETIONS, {"prompt": "Say this is a test"}, instruct) == one + 16
    assert (
        cost(COMPLETIONS, {"prompt": "Say this is a test", "max_tokens": 10, "n": 2, "best_of": 3}, instruct)
        == one + 30
    )
    assert cost(COMPLETIONS, {"prompt": ["Say this is a test"] * 2, "max_tokens": 10}, instruct) == 2 * one + 20
    assert cost(COMPLETIONS, {"prompt": [1, 2, 3], "max_tokens": 10}, instruct) == 3 + 10


def test_embeddings_cost_their_input():
    small = catalogue.MODELS["text-embedding-3-small"]
    assert cost(EMBEDDINGS, {"input": "hello world"}, small) == 2
    assert cost(EMBEDDINGS, {"input": ["hello world", "hello"], "dimensions": 256}, small) == 3


# --- headers and texts ----------------------------------------------------------------------


def test_success_headers():
    quota = Quota(tokens=60000, requests=60, request_window=10.0)
    v = limits.Verdict(True, remaining_tokens=59780, remaining_requests=59)
    assert limits.success_headers(quota, v) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-limit-tokens": "60000",
        "x-ratelimit-remaining-tokens": "59780",
    }
    assert limits.success_headers(Quota(requests=5), limits.Verdict(True, remaining_requests=4)) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
    }


def test_throttled_headers_round_up():
    quota = Quota(tokens=1000, requests=2, request_window=10.0)
    v = limits.Verdict(False, limits.TOKENS, 6.0004, 6.0004, 1.5, 120, 0)
    assert limits.throttled_headers(quota, v) == {
        "retry-after": "7",
        "retry-after-ms": "6001",
        "policy-id": "DeploymentRatelimit-Token",
        "x-ratelimit-reset-requests": "2",
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-tokens": "7",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "120",
    }
    calls = limits.throttled_headers(Quota(requests=2), limits.Verdict(False, limits.REQUESTS, 0.25, 0, 0.25))
    assert (calls["retry-after"], calls["retry-after-ms"], calls["policy-id"]) == (
        "1",
        "250",
        "DeploymentRatelimit-Call",
    )


def test_rounding_never_shortens_a_wait_beyond_float_noise():
    assert limits.whole_ms(29.900000000000002) == 29900
    assert limits.whole_ms(0.0001) == 1
    assert limits.whole_ms(1.0005) == 1001
    assert limits.retry_seconds(1.0005) == 2


def test_azure_429_texts():
    assert limits.throttled_message("ChatCompletions_Create", "2024-10-21", limits.TOKENS, 7) == (
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded "
        "token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 seconds. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )
    calls = limits.throttled_message("Embeddings_Create", "2024-06-01", limits.REQUESTS, 1)
    assert (
        "Embeddings_Create Operation under Azure OpenAI API version 2024-06-01 have exceeded call rate limit" in calls
    )
    assert "Please retry after 1 second. " in calls


# --- early retries --------------------------------------------------------------------------


def test_a_client_back_before_its_retry_time_is_counted_once():
    now = [100.0]
    limiter = limits.Limiter(limits.MemoryWindows(), clock=lambda: now[0])
    limiter.throttled("gpt-4o", limits.TOKENS, "client-a", 2.0)
    now[0] = 101.0
    assert limiter.early("gpt-4o", "client-a") == pytest.approx(1.0)
    assert limiter.early("gpt-4o", "client-a") == 0.0  # a hint is used once
    limiter.throttled("gpt-4o", limits.TOKENS, "client-b", 2.0)
    now[0] = 103.0
    assert limiter.early("gpt-4o", "client-b") == 0.0  # on time
    assert limiter.counters.to_json() == {"throttled": {"gpt-4o": {"tokens": 2}}, "earlyRetries": {"gpt-4o": 1}}


# --- the Limits stage on flows --------------------------------------------------------------

DEPLOYMENTS = {
    "tight": Deployment("tight", GPT4O, tokens_per_minute=1000, requests_per_minute=600),
    "calls": Deployment("calls", GPT4O, tokens_per_minute=100_000, requests_per_minute=12),
    "free": Deployment("free", GPT4O),
    "embed": Deployment("embed", catalogue.MODELS["text-embedding-3-small"], tokens_per_minute=10),
}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def stage():
    config = SimulatorConfig(
        api_key=KEY, deployments=dict(DEPLOYMENTS), doc_intelligence_rps=2, doc_intelligence_poll_rps=3
    )
    clock = Clock()
    addon = Limits(config, limits.Limiter(limits.MemoryWindows(), clock=clock))
    addon.clock = clock
    with taddons.context(addon):
        yield addon


def openai_flow(config, deployment="tight", body=None, operation="chat/completions", headers=None):
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.path = f"/openai/deployments/{deployment}/{operation}?api-version={VERSION}"
    f.request.headers.clear()
    f.request.headers["api-key"] = KEY
    f.request.headers["content-type"] = "application/json"
    for name, value in (headers or {}).items():
        f.request.headers[name] = value
    f.request.content = json.dumps(body or {"messages": MESSAGES, "max_tokens": 400}).encode()
    assert admit(f, config) is None
    return f


def test_admitted_requests_get_quota_headers_on_their_response(stage):
    f = openai_flow(stage.config)
    assert stage.request(f) is None and f.response is None
    f.response = tflow.tresp()
    stage.response(f)
    assert f.response.headers["x-ratelimit-remaining-tokens"] == str(1000 - 419)
    assert f.response.headers["x-ratelimit-limit-requests"] == "100"
    assert context_of(f).quota_headers is None


def test_streamed_responses_get_them_at_responseheaders(stage):
    f = openai_flow(stage.config)
    stage.request(f)
    f.response = tflow.tresp()
    stage.responseheaders(f)
    assert f.response.headers["x-ratelimit-limit-tokens"] == "1000"


def test_a_throttled_request_is_answered_with_azures_429(stage):
    for _ in range(2):
        stage.request(openai_flow(stage.config))
    f = openai_flow(stage.config)
    stage.request(f)
    r = f.response
    assert r.status_code == 429
    assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("60", "60000")
    assert r.headers["policy-id"] == "DeploymentRatelimit-Token"
    assert r.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * 419)
    assert json.loads(r.content) == {
        "error": {
            "code": "429",
            "message": limits.throttled_message("ChatCompletions_Create", VERSION, limits.TOKENS, 60),
        }
    }
    assert stage.limiter.counters.throttled[("tight", limits.TOKENS)] == 1


def test_waiting_the_retry_time_gets_through(stage):
    stage.request(openai_flow(stage.config, "calls"))
    stage.clock.now += 0.3
    stage.request(openai_flow(stage.config, "calls"))  # 12 RPM: 2 per 10 s
    f = openai_flow(stage.config, "calls")
    stage.request(f)
    assert f.response.headers["policy-id"] == "DeploymentRatelimit-Call"
    assert f.response.headers["retry-after-ms"] == "9700"
    stage.clock.now += 9.7
    again = openai_flow(stage.config, "calls")
    stage.request(again)
    assert again.response is None
    assert not stage.limiter.counters.early_retries


def test_retrying_too_soon_is_counted(stage):
    for _ in range(3):
        f = openai_flow(stage.config, "calls", headers={"x-ms-client-request-id": "req-1"})
        stage.request(f)
    assert f.response.status_code == 429
    stage.clock.now += 1
    stage.request(openai_flow(stage.config, "calls", headers={"x-ms-client-request-id": "req-1"}))
    assert stage.limiter.counters.early_retries["calls"] == 1


def test_unlimited_deployments_pass_untouched(stage):
    f = openai_flow(stage.config, "free")
    stage.request(f)
    assert f.response is None and context_of(f).quota_headers is None


def test_embeddings_name_their_operation(stage):
    body = {"input": "one two three four five six"}
    stage.request(openai_flow(stage.config, "embed", body, "embeddings"))
    f = openai_flow(stage.config, "embed", body, "embeddings")
    stage.request(f)
    assert "Embeddings_Create Operation" in json.loads(f.response.content)["error"]["message"]


def test_a_request_larger_than_the_quota_says_so_and_stops_sdk_retries(stage):
    f = openai_flow(stage.config, body={"messages": MESSAGES, "max_tokens": 2000})
    stage.request(f)
    assert f.response.status_code == 429
    assert f.response.headers["x-should-retry"] == "false"
    assert "can never be accepted" in json.loads(f.response.content)["error"]["message"]


def di_flow(method, path):
    f = tflow.tflow()
    f.request.method = method
    f.request.path = path
    f.request.content = b"%PDF-1.4"
    routing.resolve(f, None)
    return f


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("POST", "/formrecognizer/documentModels/prebuilt-read:analyze?api-version=2023-07-31", 2),
        ("POST", "/documentintelligence/documentModels/prebuilt-layout:analyze?api-version=2024-11-30", 2),
        ("GET", "/documentintelligence/documentModels/prebuilt-layout/analyzeResults/abc?api-version=2024-11-30", 3),
    ],
)
def test_document_intelligence_is_limited_per_second(stage, method, path, allowed):
    flows = [di_flow(method, path) for _ in range(allowed + 1)]
    for f in flows:
        stage.request(f)
    assert [f.response for f in flows[:-1]] == [None] * allowed
    r = flows[-1].response
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "Please retry after 1 second." in json.loads(r.content)["error"]["message"]
    stage.clock.now += 1
    late = di_flow(method, path)
    stage.request(late)
    assert late.response is None


def test_other_paths_are_not_limited(stage):
    stage.config.doc_intelligence_rps = 0.0001
    for path in ("/documentintelligence/documentModels/prebuilt-read", "/++/health", "/openai/v1/models"):
        f = di_flow("POST", path)
        stage.request(f)
        assert f.response is None


def test_reset_empties_the_windows(stage):
    for _ in range(3):
        f = openai_flow(stage.config)
        stage.request(f)
    assert f.response.status_code == 429
    asyncio.run(stage.reset())
    f = openai_flow(stage.config)
    stage.request(f)
    assert f.response is None
    assert stage.view()["deployments"]["tight"]["usedTokens"] == 419


def test_settings_check_the_new_values():
    from types import SimpleNamespace

    from aoai.runtime.config import ConfigError
    from aoai.runtime.options import environment_value
    from aoai.stages import ratelimit

    def apply(**changes):
        options = SimpleNamespace(**{o.name: o.default for o in ratelimit.OPTIONS})
        for name, value in changes.items():
            setattr(options, name, value)
        config = SimulatorConfig()
        ratelimit.apply(options, config, set(changes))
        return config

    config = apply()
    assert (
        config.rate_limit_request_window_s,
        config.rate_limit_default_reservation,
        config.doc_intelligence_poll_rps,
        config.rate_limit_redis_url,
    ) == (10.0, 4096, 50.0, "")
    config = apply(
        rate_limit_request_window_seconds="1",
        rate_limit_default_reservation=1000,
        doc_intelligence_poll_rps=20.0,
        rate_limit_redis_url="redis://127.0.0.1:6390/0",
    )
    assert (
        config.rate_limit_request_window_s,
        config.rate_limit_default_reservation,
        config.doc_intelligence_poll_rps,
        config.rate_limit_redis_url,
    ) == (1.0, 1000, 20.0, "redis://127.0.0.1:6390/0")
    for option, value, text in [
        ("rate_limit_request_window_seconds", "5", "RATE_LIMIT_REQUEST_WINDOW_SECONDS: expected 10 or 1, got '5'"),
        ("rate_limit_default_reservation", -1, "RATE_LIMIT_DEFAULT_RESERVATION: must not be below 0"),
        ("rate_limit_redis_url", "localhost:6379", "RATE_LIMIT_REDIS_URL"),
    ]:
        with pytest.raises(ConfigError, match=text):
            apply(**{option: value})
    # The environment takes Azure's two windows only, written as numbers.
    window = next(o for o in ratelimit.OPTIONS if o.env == "RATE_LIMIT_REQUEST_WINDOW_SECONDS")
    assert [environment_value(window, {window.env: t}) for t in ("10", "1.0", " 1", "")] == ["10", "1", "1", "10"]
    for text in ("0", "61", "5", "soon"):
        with pytest.raises(ConfigError, match=r"^RATE_LIMIT_REQUEST_WINDOW_SECONDS: "):
            environment_value(window, {window.env: text})


def test_the_estimate_reads_only_the_operations_own_limit_fields_and_whole_numbers():
    # A Responses body carrying chat's field (any type) is judged by max_output_tokens alone.
    stray = {"max_completion_tokens": {"type": "json_object"}, "n": {}, "max_output_tokens": 50}
    assert limits.estimate_output_tokens("responses", stray) == 50
    assert validation.answer_limit("responses", {"max_tokens": 7}) is None
    assert validation.answer_limit("chat", {"max_completion_tokens": True, "max_tokens": 9}) == 9
    assert limits.estimate_output_tokens("chat", {"max_tokens": 10, "n": "3"}) == 10
