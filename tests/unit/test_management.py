from types import SimpleNamespace

import pytest
from aoai.runtime import config as cfg
from aoai.runtime.streams import StreamServer
from aoai.stages.management import Management
from unit_support import API_KEY, admit, clear_settings_env, json_of, make_config, make_flow, settings_context, start


@pytest.fixture
def clean_env(monkeypatch):
    clear_settings_env(monkeypatch)
    return monkeypatch


@pytest.fixture
def managed(clean_env):
    """(config, management addon, taddons context) with Settings running, as in the proxy."""
    config = make_config()
    streams = StreamServer()
    management = Management(config, streams)
    tctx, settings = settings_context(config, management)
    with tctx:
        tctx.configure(settings, simulator_api_key=API_KEY)
        start(settings)
        management.running()
        yield config, management, tctx


def call(management, method, path, body=None, raw=None):
    flow = make_flow(method, path, body, raw=raw)
    if admit(flow, management.config) is None:  # routing and checks come first, as in the proxy
        management.request(flow)
    return flow.response


def test_health(managed):
    _, management, _ = managed
    response = call(management, "GET", "/++/health")
    assert response.status_code == 200
    assert json_of(response) == {"status": "healthy", "mode": "generate", "streams": {"active": 0, "pending": 0}}


def test_health_says_starting_until_the_stages_have_started(clean_env):
    management = Management(make_config(), StreamServer())
    response = call(management, "GET", "/++/health")
    assert response.status_code == 503 and json_of(response)["status"] == "starting"


def test_health_counts_pending_streams(managed):
    _, management, _ = managed
    management.streams.plans["1"] = object()
    assert json_of(call(management, "GET", "/++/health"))["streams"] == {"active": 0, "pending": 1}


def test_get_config(managed):
    _, management, _ = managed
    view = json_of(call(management, "GET", "/++/config"))
    assert view["mode"] == "generate"
    assert view["seed"] is None
    assert view["allowUndefinedDeployments"] is True
    assert view["latency"] == {"enabled": True, "chatCompletions": None, "completions": None, "embeddings": None}
    assert view["deployments"]["gpt-4o"] == {"model": "gpt-4o"}
    assert set(view["deployments"]) == set(cfg.default_deployments())
    assert view["recording"] == {"dir": "recordings", "autosave": True}


def test_patch_config_changes_options_and_deployments(managed):
    config, management, tctx = managed
    response = call(management, "PATCH", "/++/config", {
        "mode": "replay", "seed": 5, "allowUndefinedDeployments": False,
        "latency": {"enabled": False, "chatCompletions": {"mean": 20, "stdDev": 2}},
        "deployments": {"mine": {"model": "gpt-4o-mini", "tokensPerMinute": 1000}, "gpt-4o": None},
    })
    assert response.status_code == 200
    view = json_of(response)
    assert (view["mode"], view["seed"], view["allowUndefinedDeployments"]) == ("replay", 5, False)
    assert view["latency"]["enabled"] is False
    assert view["latency"]["chatCompletions"] == {"mean": 20.0, "stdDev": 2.0}
    assert view["deployments"]["mine"] == {"model": "gpt-4o-mini", "tokensPerMinute": 1000}
    assert "gpt-4o" not in view["deployments"]
    # The change went through the options, so Settings made it and the options show it.
    assert (config.mode, config.seed, config.latency_enabled) == ("replay", 5, False)
    assert config.latency_defaults["chat_completions"] == cfg.Normal(20.0, 2.0)
    assert tctx.options.simulator_mode == "replay"
    assert tctx.options.simulator_seed == "5"


def test_patch_can_clear_seed_and_latency(managed):
    config, management, _ = managed
    call(management, "PATCH", "/++/config", {"seed": 1, "latency": {"embeddings": {"mean": 5}}})
    view = json_of(call(management, "PATCH", "/++/config", {"seed": None, "latency": {"embeddings": None}}))
    assert view["seed"] is None and view["latency"]["embeddings"] is None
    assert config.seed is None and "embeddings" not in config.latency_defaults


@pytest.mark.parametrize("body, message", [
    ({"mode": "bogus"}, "mode: expected one of generate, record, replay"),
    ({"seed": "x"}, "seed: expected a whole number from -9223372036854775808 to 9223372036854775807, or null"),
    ({"seed": True}, "seed: expected a whole number from -9223372036854775808 to 9223372036854775807, or null"),
    ({"allowUndefinedDeployments": "yes"}, "allowUndefinedDeployments: expected true or false"),
    ({"latency": 3}, "latency: expected an object"),
    ({"latency": {"enabled": 1}}, "latency.enabled: expected true or false"),
    ({"latency": {"chat": {"mean": 1}}},
     "latency.chat: unknown field; use enabled, chatCompletions, completions, embeddings"),
    ({"latency": {"completions": {"mean": -1}}}, "latency.completions.mean: must not be negative, got -1"),
    ({"deployments": []}, "deployments: expected an object of deployment name to settings (null removes)"),
    ({"deployments": {"d": {"model": "gpt-4o", "embeddingSize": 8}}},
     "deployments.d.embeddingSize: gpt-4o is not an embedding model"),
    ({"colour": "red"},
     "colour: unknown field; use mode, seed, allowUndefinedDeployments, latency, deployments, faults, "
     "contentFilter"),
    ([1], "body: expected a JSON object"),
])
def test_patch_config_rejects_bad_values_and_changes_nothing(managed, body, message):
    config, management, tctx = managed
    # A valid change is listed first: nothing of an invalid request may take effect.
    if isinstance(body, dict) and not {"mode", "deployments"} & set(body):
        body = {"mode": "record", "deployments": {"extra": {"model": "gpt-4o"}}, **body}
    response = call(management, "PATCH", "/++/config", body)
    assert response.status_code == 400
    assert json_of(response) == {"error": {"code": "BadRequest", "message": message}}
    assert config.mode == "generate" and tctx.options.simulator_mode == "generate"
    assert set(config.deployments) == set(cfg.default_deployments())


def test_patch_config_with_a_body_that_is_not_json(managed):
    _, management, _ = managed
    response = call(management, "PATCH", "/++/config", raw=b"{mode")
    assert response.status_code == 400
    assert json_of(response)["error"] == {"code": "BadRequest", "message": "body: not valid JSON"}


def test_save_recordings(managed):
    config, management, _ = managed
    assert json_of(call(management, "POST", "/++/save-recordings")) == {"saved": 0}
    management.recordings = SimpleNamespace(save=lambda: 3)
    response = call(management, "POST", "/++/save-recordings")
    assert response.status_code == 200 and json_of(response) == {"saved": 3}


@pytest.mark.parametrize("method, path", [("DELETE", "/++/config"), ("POST", "/++/health"),
                                          ("GET", "/++/save-recordings")])
def test_wrong_methods_are_405(managed, method, path):
    _, management, _ = managed
    response = call(management, method, path)
    assert response.status_code == 405
    assert json_of(response)["error"]["message"].startswith(f"Method {method} is not allowed on {path}; use ")


def test_other_paths_are_left_for_later_stages(managed):
    _, management, _ = managed
    assert call(management, "GET", "/++/nothing") is None
    assert call(management, "GET", "/openai/v1/models") is None


def test_health_without_a_stream_server():
    management = Management(make_config(mode="replay"))
    management.running()
    flow = make_flow("GET", "/++/health/")
    management.request(flow)
    assert json_of(flow.response) == {"status": "healthy", "mode": "replay"}
