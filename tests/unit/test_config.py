import json
import random

import pytest

from aoai.openai import catalogue
from aoai.openai.catalogue import Normal
from aoai.runtime import config
from aoai.runtime.config import ConfigError


def error_of(spec, name="d", where="x: d"):
    with pytest.raises(ConfigError) as caught:
        config.parse_deployment(name, spec, where)
    return str(caught.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gpt-4o", 'x: d: expected an object with at least "model"'),
        ({}, 'x: d.model: required, the name of a model such as "gpt-4o"'),
        ({"model": 4}, 'x: d.model: required, the name of a model such as "gpt-4o"'),
        ({"model": "gpt-4o", "colour": "red"}, "x: d: unknown field 'colour'"),
        ({"model": "gpt-4o", "tokensPerMinute": -1}, "x: d.tokensPerMinute: must not be negative, got -1"),
        ({"model": "gpt-4o", "tokensPerMinute": 1.5}, "x: d.tokensPerMinute: expected a whole number, got 1.5"),
        ({"model": "gpt-4o", "tokensPerMinute": "10"}, 'x: d.tokensPerMinute: expected a number, got "10"'),
        ({"model": "gpt-4o", "tokensPerMinute": True}, "x: d.tokensPerMinute: expected a number, got true"),
        ({"model": "gpt-4o", "requestsPerMinute": -5}, "x: d.requestsPerMinute: must not be negative, got -5"),
        ({"model": "gpt-4o", "maxConcurrentRequests": -2}, "x: d.maxConcurrentRequests: must not be negative, got -2"),
        ({"model": "gpt-4o", "embeddingSize": 256}, "x: d.embeddingSize: gpt-4o is not an embedding model"),
        ({"model": "text-embedding-3-small", "embeddingSize": 0}, "x: d.embeddingSize: must be between 1 and 1536"),
        ({"model": "text-embedding-3-large", "embeddingSize": 3073}, "x: d.embeddingSize: must be between 1 and 3072"),
        ({"model": "gpt-4o", "latency": 5}, "x: d.latency: expected an object"),
        ({"model": "gpt-4o", "latency": {"ttft": {}}}, "x: d.latency: unknown field 'ttft'"),
        (
            {"model": "gpt-4o", "latency": {"interTokenMs": 5}},
            'x: d.latency.interTokenMs: expected {"mean": ms, "stdDev": ms}',
        ),
        (
            {"model": "gpt-4o", "latency": {"interTokenMs": {"mean": -1}}},
            "x: d.latency.interTokenMs.mean: must not be negative, got -1",
        ),
        (
            {"model": "gpt-4o", "latency": {"interTokenMs": {"mean": 1, "stdDev": -1}}},
            "x: d.latency.interTokenMs.stdDev: must not be negative, got -1",
        ),
        (
            {"model": "gpt-4o", "latency": {"requestMs": {"mean": 1, "p99": 3}}},
            "x: d.latency.requestMs: unknown field 'p99'",
        ),
    ],
)
def test_deployment_errors_name_the_field(spec, message):
    assert error_of(spec) == message


def test_an_unknown_model_is_named_with_the_known_ones():
    message = error_of({"model": "gpt-9"})
    assert message.startswith("x: d.model: unknown model 'gpt-9'; known: gpt-35-turbo, ")
    assert "text-embedding-3-large" in message


def test_a_full_deployment_parses():
    dep = config.parse_deployment(
        "emb",
        {
            "model": "text-embedding-3-large",
            "tokensPerMinute": 1000,
            "requestsPerMinute": 6,
            "embeddingSize": 256,
            "maxConcurrentRequests": 2,
        },
        "f: emb",
    )
    assert (
        dep.name,
        dep.model.name,
        dep.tokens_per_minute,
        dep.requests_per_minute,
        dep.embedding_size,
        dep.max_concurrent_requests,
        dep.defined,
    ) == ("emb", "text-embedding-3-large", 1000, 6, 256, 2, True)
    assert dep.to_json() == {
        "model": "text-embedding-3-large",
        "tokensPerMinute": 1000,
        "requestsPerMinute": 6,
        "embeddingSize": 256,
        "maxConcurrentRequests": 2,
    }


def test_openai_spellings_of_models_are_accepted():
    assert config.parse_deployment("d", {"model": "gpt-3.5-turbo"}, "x").model.name == "gpt-35-turbo"


def test_latency_merges_with_the_model_defaults():
    model = catalogue.MODELS["gpt-4o"]
    dep = config.parse_deployment("d", {"model": "gpt-4o", "latency": {"interTokenMs": {"mean": 30}}}, "x")
    base = config.model_latency(model)
    assert dep.latency.inter_token_ms == Normal(30.0, 0.0)
    assert dep.latency.time_to_first_token_ms == base.time_to_first_token_ms == Normal(350, 350 / 6)
    assert dep.latency.request_ms == base.request_ms
    assert dep.to_json()["latency"]["interTokenMs"] == {"mean": 30.0, "stdDev": 0.0}


def test_parse_deployments_prefixes_the_file_and_name():
    with pytest.raises(ConfigError) as caught:
        config.parse_deployments({"good": {"model": "gpt-4o"}, "bad": {"model": "nope"}}, "deps.json")
    assert str(caught.value).startswith("deps.json: bad.model: unknown model 'nope'")
    with pytest.raises(ConfigError, match=r"^deps.json: expected a JSON object"):
        config.parse_deployments([], "deps.json")


def test_load_deployments_file(tmp_path):
    path = tmp_path / "deployments.json"
    path.write_text(json.dumps({"chat": {"model": "gpt-4o-mini"}, "emb": {"model": "text-embedding-ada-002"}}))
    deployments = config.load_deployments_file(str(path))
    assert {n: d.model.name for n, d in deployments.items()} == {"chat": "gpt-4o-mini", "emb": "text-embedding-ada-002"}


def test_deployments_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError) as caught:
        config.load_deployments_file(str(missing))
    assert str(caught.value) == f"{missing}: cannot read the deployments file (No such file or directory)"
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": ')
    with pytest.raises(ConfigError) as caught:
        config.load_deployments_file(str(broken))
    assert str(caught.value).startswith(f"{broken}: not valid JSON (line 1, column 7")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"chat": {"model": "gpt-4o", "tokensPerMinute": -3}}')
    with pytest.raises(ConfigError) as caught:
        config.load_deployments_file(str(wrong))
    assert str(caught.value) == f"{wrong}: chat.tokensPerMinute: must not be negative, got -3"


def test_normal_draws_are_never_negative():
    assert Normal(-5).draw() == 0.0
    assert Normal(12.5).draw() == 12.5
    rng = random.Random(1)
    assert all(Normal(1, 100).draw(rng) >= 0 for _ in range(200))


def test_default_deployments():
    deployments = config.default_deployments()
    assert set(deployments) == {
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-35-turbo-instruct",
        "text-embedding-3-small",
        "text-embedding-ada-002",
    }
    assert all(d.model.name == n for n, d in deployments.items())


def test_undefined_deployments_get_a_stand_in_of_the_right_kind():
    cfg = config.SimulatorConfig()
    assert cfg.deployment("gpt-4o", catalogue.CHAT).defined is True
    made_up = cfg.deployment("my-chat", catalogue.CHAT)
    assert (made_up.name, made_up.model.name, made_up.defined) == ("my-chat", "gpt-4o", False)
    assert cfg.deployment("my-emb", catalogue.EMBEDDING).model.name == "text-embedding-3-small"
    # A name that is a model of the right kind runs that model.
    assert cfg.deployment("gpt-4.1-nano", catalogue.CHAT).model.name == "gpt-4.1-nano"
    # ...but not one of the wrong kind.
    assert cfg.deployment("gpt-4.1-nano", catalogue.COMPLETION).model.name == "gpt-35-turbo-instruct"
    cfg.allow_undefined_deployments = False
    assert cfg.deployment("my-chat", catalogue.CHAT) is None
    assert cfg.deployment("gpt-4o", catalogue.CHAT).name == "gpt-4o"


def test_bearer_tokens_are_added():
    cfg = config.SimulatorConfig()
    cfg.auth_bearer_token("tok")
    assert cfg.bearer_tokens == {"tok"}


def test_a_deployment_round_trips_through_its_json():
    # What replicas share is each deployment's to_json(): read again, it is the same deployment.
    specs = {
        "std": {
            "model": "gpt-4o",
            "tokensPerMinute": 1000,
            "requestsPerMinute": 10,
            "latency": {"requestMs": {"mean": 5, "stdDev": 1}},
            "maxConcurrentRequests": 3,
            "maxParallelToolCalls": 5,
            "contentFilter": {
                "blockAt": "medium",
                "randomShare": {"prompt": 0.1, "completion": 0.2},
                "prompt": {"hate": ["bad", {"regex": "x+y", "severity": "low"}]},
                "completion": {"violence": ["kill"]},
            },
            "faults": [
                {"kind": "503", "share": 0.5},
                {"kind": "quotaCut", "tokensPerMinute": 10, "forS": 5, "share": 0.1},
                {"kind": "quotaCut", "tokensPerMinute": 10, "forS": 5, "everyS": 60},
            ],
        },
        "ptu": {
            "model": "gpt-4o",
            "sku": "GlobalProvisionedManaged",
            "ptu": 15,
            "inputTpmPerPtu": 2500,
            "spillover": "std",
        },
        "emb": {"model": "text-embedding-3-small", "embeddingSize": 100},
        "audio": {"model": "whisper", "audioPace": 0.5},
        "image": {"model": "dall-e-3"},
    }
    for name, spec in specs.items():
        first = config.parse_deployment(name, spec, name)
        again = config.parse_deployment(name, first.to_json(), name)
        if first.faults is not None:  # profiles compare by identity (a new one draws afresh)
            assert again.faults.faults == first.faults.faults
            again.faults = first.faults
        assert again == first, name
        assert again.to_json() == first.to_json()


def test_a_global_batch_deployment_has_an_enqueued_token_quota():
    dep = config.parse_deployment("batch", {"model": "gpt-4o", "sku": "GlobalBatch"}, "d")
    assert dep.global_batch and dep.enqueued_limit == 200_000_000
    own = config.parse_deployment("batch", {"model": "gpt-4o-mini", "sku": "GlobalBatch", "enqueuedTokens": 5000}, "d")
    assert own.enqueued_limit == 5000 and own.to_json()["enqueuedTokens"] == 5000
    assert config.parse_deployment("batch", own.to_json(), "d").enqueued_tokens == 5000
    with pytest.raises(ConfigError, match="only for a batch SKU"):
        config.parse_deployment("x", {"model": "gpt-4o", "enqueuedTokens": 5}, "d")
