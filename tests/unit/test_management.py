import asyncio
import threading
from types import SimpleNamespace

import orjson
import pytest
from unit_support import (
    API_KEY,
    admit,
    clear_settings_env,
    json_of,
    make_config,
    make_flow,
    make_services,
    run,
    settings_context,
    start,
)

from aoai.runtime import config as cfg
from aoai.runtime import peers
from aoai.stages import management as management_stage
from aoai.stages.management import Management
from aoai.stages.ratelimit import Limits


@pytest.fixture
def clean_env(monkeypatch):
    clear_settings_env(monkeypatch)
    return monkeypatch


@pytest.fixture
def managed(clean_env):
    """(config, management addon, taddons context) with Settings running, as in the proxy."""
    config = make_config()
    management = Management(config, make_services(config))
    tctx, settings = settings_context(config, management)
    with tctx:
        tctx.configure(settings, simulator_api_key=API_KEY)
        start(settings)
        management.running()
        yield config, management, tctx


@pytest.fixture
def limited(clean_env):
    """A running management addon that shows a Limits stage's views too."""
    config = make_config()
    management = Management(config, make_services(config), Limits(config))
    tctx, settings = settings_context(config, management)
    with tctx:
        tctx.configure(settings, simulator_api_key=API_KEY)
        start(settings)
        yield management


def call(management, method, path, body=None, raw=None):
    flow = make_flow(method, path, body, raw=raw)
    if admit(flow, management.config) is None:  # routing and checks come first, as in the proxy
        pending = management.request(flow)
        if pending is not None:  # answered once a worker thread or another worker has done its part
            run(pending)
    return flow.response


def test_health(managed):
    _, management, _ = managed
    response = call(management, "GET", "/++/health")
    assert response.status_code == 200
    assert json_of(response) == {"status": "healthy", "mode": "generate", "streams": {"active": 0, "pending": 0}}


def test_health_says_starting_until_the_stages_have_started(clean_env):
    management = Management(make_config())
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
    assert view["seed"] == 1  # make_config's
    assert view["allowUndefinedDeployments"] is True
    assert view["latency"] == {
        "enabled": False,
        "chatCompletions": None,
        "completions": None,
        "embeddings": None,
    }  # make_config's
    assert view["deployments"]["gpt-4o"] == {"model": "gpt-4o"}
    assert set(view["deployments"]) == set(cfg.default_deployments())
    assert view["recording"] == {"dir": "recordings", "autosave": True}


def test_patch_config_changes_options_and_deployments(managed):
    config, management, tctx = managed
    response = call(
        management,
        "PATCH",
        "/++/config",
        {
            "mode": "replay",
            "seed": 5,
            "allowUndefinedDeployments": False,
            "latency": {"enabled": False, "chatCompletions": {"mean": 20, "stdDev": 2}},
            "deployments": {"mine": {"model": "gpt-4o-mini", "tokensPerMinute": 1000}, "gpt-4o": None},
        },
    )
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
    assert tctx.options.simulator_seed == 5


def test_patch_can_clear_seed_and_latency(managed):
    config, management, _ = managed
    call(management, "PATCH", "/++/config", {"seed": 1, "latency": {"embeddings": {"mean": 5}}})
    view = json_of(call(management, "PATCH", "/++/config", {"seed": None, "latency": {"embeddings": None}}))
    assert view["seed"] is None and view["latency"]["embeddings"] is None
    assert config.seed is None and "embeddings" not in config.latency_defaults


@pytest.mark.parametrize(
    "body, message",
    [
        ({"mode": "bogus"}, "mode: expected one of generate, record, replay"),
        ({"seed": "x"}, "seed: expected a whole number from -9223372036854775808 to 9223372036854775807, or null"),
        ({"seed": True}, "seed: expected a whole number from -9223372036854775808 to 9223372036854775807, or null"),
        ({"allowUndefinedDeployments": "yes"}, "allowUndefinedDeployments: expected true or false"),
        ({"latency": 3}, "latency: expected an object"),
        ({"latency": {"enabled": 1}}, "latency.enabled: expected true or false"),
        (
            {"latency": {"chat": {"mean": 1}}},
            "latency.chat: unknown field; use enabled, chatCompletions, completions, embeddings",
        ),
        ({"latency": {"completions": {"mean": -1}}}, "latency.completions.mean: must not be negative, got -1"),
        ({"deployments": []}, "deployments: expected an object of deployment name to settings (null removes)"),
        (
            {"deployments": {"d": {"model": "gpt-4o", "embeddingSize": 8}}},
            "deployments.d.embeddingSize: gpt-4o is not an embedding model",
        ),
        (
            {"colour": "red"},
            "colour: unknown field; use mode, seed, allowUndefinedDeployments, latency, deployments, faults, "
            "contentFilter",
        ),
        ([1], "body: expected a JSON object"),
    ],
)
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


def saved_by(management) -> tuple[int, dict]:
    flow = make_flow("POST", "/++/save-recordings")
    assert admit(flow, management.config) is None
    run(management.request(flow))  # the writing is done in a worker thread
    return flow.response.status_code, json_of(flow.response)


def test_save_recordings(managed):
    _config, management, _ = managed
    assert saved_by(management) == (200, {"saved": 0})
    management.recordings = SimpleNamespace(save=lambda: 3)
    assert saved_by(management) == (200, {"saved": 3})


def test_save_recordings_writes_off_the_event_loop(managed):
    _, management, _ = managed
    loops = []

    def save():
        try:
            loops.append(asyncio.get_running_loop())
        except RuntimeError:
            loops.append(None)
        return 1

    management.recordings = SimpleNamespace(save=save)
    assert saved_by(management) == (200, {"saved": 1}) and loops == [None]


@pytest.mark.parametrize(
    "method, path", [("DELETE", "/++/config"), ("POST", "/++/health"), ("GET", "/++/save-recordings")]
)
def test_wrong_methods_are_405(managed, method, path):
    _, management, _ = managed
    response = call(management, method, path)
    assert response.status_code == 405
    assert json_of(response)["error"]["message"].startswith(f"Method {method} is not allowed on {path}; use ")


def test_other_paths_are_left_for_later_stages(managed):
    _, management, _ = managed
    assert call(management, "GET", "/++/nothing") is None
    assert call(management, "GET", "/openai/v1/models") is None


def test_health_in_replay_mode():
    management = Management(make_config(mode="replay"))
    management.running()
    flow = make_flow("GET", "/++/health/")
    management.request(flow)
    assert json_of(flow.response) == {"status": "healthy", "mode": "replay", "streams": {"active": 0, "pending": 0}}


# Numbers out of range, and odd types: every one a 400 naming the field, nothing applied, and
# every view still answers afterwards.


def _tight(**fields):
    return {"deployments": {"tight": {"model": "gpt-4o", **fields}}}


def _ptu(**fields):
    return {"deployments": {"ptu": {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15, **fields}}}


def _fault(**fields):
    return {"faults": [fields]}


@pytest.mark.parametrize(
    "body, field",
    [
        (_tight(tokensPerMinute=1e300), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute=-1), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute=2**63), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute=2**64 + 1), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute="NaN"), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute="1e300"), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute=[1]), "deployments.tight.tokensPerMinute"),
        (_tight(tokensPerMinute={"value": 1}), "deployments.tight.tokensPerMinute"),
        (_tight(requestsPerMinute=1e300), "deployments.tight.requestsPerMinute"),
        (_tight(maxConcurrentRequests=2**63), "deployments.tight.maxConcurrentRequests"),
        (_tight(latency={"requestMs": {"mean": 1e300}}), "deployments.tight.latency.requestMs.mean"),
        (
            _tight(latency={"interTokenMs": {"mean": 5, "stdDev": 1e12}}),
            "deployments.tight.latency.interTokenMs.stdDev",
        ),
        (_tight(latency={"requestMs": [5]}), "deployments.tight.latency.requestMs"),
        ({"deployments": {"w": {"model": "whisper", "audioPace": 1e300}}}, "deployments.w.audioPace"),
        (_ptu(ptu=10**9), "deployments.ptu.ptu"),
        (_ptu(inputTpmPerPtu=10**15), "deployments.ptu.inputTpmPerPtu"),
        (_ptu(spillover="nowhere"), "deployments: ptu.spillover"),
        ({"latency": {"chatCompletions": {"mean": 1e300}}}, "latency.chatCompletions.mean"),
        ({"seed": 2**63}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"seed": 1e300}, "seed"),
        (_fault(kind="timeout", share=0.1, afterMs=1e300), "faults[0].afterMs"),
        (_fault(kind="slowFirstByte", share=0.1, ms=1e300), "faults[0].ms"),
        (_fault(kind="hang", share=0.1, maxS=1e300), "faults[0].maxS"),
        (_fault(kind="trickle", share=0.1, factor=1e9), "faults[0].factor"),
        (_fault(kind="streamCut", share=0.1, afterTokens=2**63), "faults[0].afterTokens"),
        (_fault(kind="quotaCut", share=0.1, tokensPerMinute=2**63, forS=1), "faults[0].tokensPerMinute"),
        (_fault(kind="quotaCut", everyS=1e300, tokensPerMinute=10, forS=1), "faults[0].everyS"),
        (_fault(kind="quotaCut", share=0.1, tokensPerMinute=10, forS=1e300), "faults[0].forS"),
        (_fault(kind="500", share="0.5"), "faults[0].share"),
        ({"faults": [{"kind": "500", "share": 0.1}] * 101}, "faults"),
        ({"deployments": {"gpt-4o": {"faults": [{"kind": "503", "share": 2}]}}}, "deployments.gpt-4o.faults[0].share"),
        ({"contentFilter": {"gpt-4o": {"randomShare": {"prompt": 1e300}}}}, "contentFilter.gpt-4o.randomShare.prompt"),
        ({"contentFilter": {"gpt-4o": {"blockAt": {"x": [1]}}}}, "contentFilter.gpt-4o.blockAt"),
        ({"deployments": {"": {"model": "gpt-4o"}}}, "deployments"),
        ({"deployments": {"a/b": {"model": "gpt-4o"}}}, "deployments"),
        ({"deployments": {"x" * 300: {"model": "gpt-4o"}}}, "deployments"),
        ({"deployments": {f"d{i}": {"model": "gpt-4o"} for i in range(1001)}}, "deployments"),
        ({"resetLimits": "yes"}, "resetLimits"),
    ],
)
def test_patch_out_of_range_is_a_400_naming_the_field_and_every_view_still_answers(limited, body, field):
    management = limited
    before = json_of(call(management, "GET", "/++/config"))
    response = call(management, "PATCH", "/++/config", {"seed": 7, **body})
    assert response.status_code == 400, response.content
    message = json_of(response)["error"]["message"]
    assert message.startswith(field + ":"), message
    assert len(message) < 300  # what the client sent is quoted short
    assert json_of(call(management, "GET", "/++/config")) == before  # nothing applied, not even the seed
    for path in ("/++/config", "/++/limits", "/++/faults"):
        assert call(management, "GET", path).status_code == 200


def test_the_largest_whole_numbers_are_taken_and_shown(limited):
    management = limited
    top = 2**63 - 1
    response = call(
        management,
        "PATCH",
        "/++/config",
        {"seed": -(2**63), **_tight(tokensPerMinute=top, requestsPerMinute=top, maxConcurrentRequests=top)},
    )
    assert response.status_code == 200
    assert json_of(response)["deployments"]["tight"]["tokensPerMinute"] == top
    assert json_of(call(management, "GET", "/++/limits"))["deployments"]["tight"]["tokensPerMinute"] == top
    assert json_of(call(management, "GET", "/++/config"))["seed"] == -(2**63)


def test_views_never_fail_on_an_odd_value(managed):
    config, management, _ = managed
    # Set behind the checks' back, as an extension might: shown as text, not a 500.
    config.deployments["odd"] = cfg.Deployment("odd", config.deployments["gpt-4o"].model, tokens_per_minute=10**30)
    response = call(management, "GET", "/++/config")
    assert response.status_code == 200
    assert json_of(response)["deployments"]["odd"]["tokensPerMinute"] == str(10**30)
    limits = Limits(config)
    limits.capacity = lambda d: 1 / 0  # a view's arithmetic that fails
    config.deployments["ptu"] = cfg.parse_deployment(
        "ptu", {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15}, "ptu"
    )
    management.limits_stage = limits
    shown = call(management, "GET", "/++/limits")
    assert shown.status_code == 200 and "error" in json_of(shown)["deployments"]["ptu"]


def test_a_failed_option_change_leaves_deployments_alone(managed):
    config, management, tctx = managed
    # Record mode without an endpoint is refused before anything is applied.
    response = call(management, "PATCH", "/++/config", {"mode": "record", "deployments": {"x": {"model": "gpt-4o"}}})
    assert response.status_code == 400
    assert json_of(response)["error"]["message"].startswith("AZURE_OPENAI_ENDPOINT: record mode forwards")
    assert "x" not in config.deployments and tctx.options.simulator_mode == "generate"


# A change coordinated between workers: the steps one worker asks of another.

PEER_SECRET = "peer-secret-0123456789abcdef"


def peer_call(management, body, step=None, secret=PEER_SECRET):
    headers = {"x-simulator-peer": secret}
    if step is not None:
        headers["x-simulator-change"] = step
    flow = make_flow("PATCH", "/++/config", body, headers=headers)
    if admit(flow, management.config) is None:
        pending = management.request(flow)
        if pending is not None:  # coordinated with the other workers
            run(pending)
    return flow.response


@pytest.fixture
def peer(clean_env):
    config = make_config()
    management = Management(config, make_services(config))
    tctx, settings = settings_context(config, management)
    with tctx:
        tctx.configure(
            settings,
            simulator_api_key=API_KEY,
            simulator_peers=["http://127.0.0.1:1"],
            simulator_peer_secret=PEER_SECRET,
        )
        start(settings)
        yield config, management, tctx


def test_a_check_step_changes_nothing(peer):
    config, management, _tctx = peer
    response = peer_call(management, {"seed": 9, "deployments": {"x": {"model": "gpt-4o"}}}, "check")
    assert response.status_code == 200 and json_of(response) == {"valid": True}
    assert config.seed is None and "x" not in config.deployments
    refused = peer_call(management, _tight(tokensPerMinute=1e300), "check")
    assert refused.status_code == 400


def test_an_applied_step_can_be_undone(peer):
    config, management, tctx = peer
    applied = peer_call(
        management,
        {
            "seed": 9,
            "deployments": {"x": {"model": "gpt-4o"}, "gpt-4o": None},
            "faults": [{"kind": "503", "share": 0.5}],
        },
        "apply c1",
    )
    assert applied.status_code == 200
    assert config.seed == 9 and "x" in config.deployments and "gpt-4o" not in config.deployments
    assert config.default_faults is not None
    undone = peer_call(management, None, "undo c1")
    assert undone.status_code == 200
    assert tctx.options.simulator_seed is None and config.seed is None
    assert "x" not in config.deployments and "gpt-4o" in config.deployments and config.default_faults is None
    assert peer_call(management, None, "undo c1").status_code == 404  # once only


def test_steps_without_the_secret_are_a_clients_request(peer):
    config, management, _tctx = peer
    # A client's "check" is no check: it is a change like any other, coordinated with the
    # other worker, which cannot be reached here, so nothing changes anywhere.
    for secret in ("wrong", ""):
        response = peer_call(management, {"seed": 9}, "check", secret=secret)
        assert response.status_code == 503
        error = json_of(response)["error"]
        assert error["message"].startswith("worker 127.0.0.1:1 could not check the change (unreachable: ")
        assert error["workers"]["127.0.0.1:1"].startswith("unreachable: ")
        assert config.seed is None
    # A client's "undo" is a PATCH whose body is read (and here is missing).
    assert peer_call(management, None, "undo c1", secret="wrong").status_code == 400


class FakeWorkers:
    """The other workers as `peers.ask_all` sees them: an outcome per step and worker."""

    def __init__(self, monkeypatch, outcomes):
        self.outcomes, self.asked = outcomes, []
        monkeypatch.setattr(peers, "ask_all", self.ask_all)

    async def ask_all(self, link, config, method, path, content, step="", targets=None):
        kind = step.partition(" ")[0]
        self.asked.append((kind, targets))
        return {
            peers.address(p): self.outcomes.get((kind, peers.address(p)), peers.Outcome(200))
            for p in (config.peers if targets is None else targets)
        }


@pytest.fixture
def coordinator(clean_env):
    config = make_config()
    management = Management(config, make_services(config))
    tctx, settings = settings_context(config, management)
    with tctx:
        tctx.configure(
            settings,
            simulator_api_key=API_KEY,
            simulator_peers=["http://w1:1", "http://w2:2"],
            simulator_peer_secret=PEER_SECRET,
            simulator_worker="w0:0",
        )
        start(settings)
        yield config, management, tctx


def client_patch(management, body):
    flow = make_flow("PATCH", "/++/config", body)
    if admit(flow, management.config) is None:
        run(management.request(flow))
    return flow.response


def test_every_worker_takes_a_change(coordinator, monkeypatch):
    config, management, _ = coordinator
    workers = FakeWorkers(monkeypatch, {})
    response = client_patch(management, {"seed": 4})
    assert response.status_code == 200
    assert json_of(response)["workers"] == {"w0:0": "applied", "w1:1": "applied", "w2:2": "applied"}
    assert config.seed == 4 and [k for k, _ in workers.asked] == ["check", "apply"]


def test_a_change_one_worker_refuses_is_taken_by_none(coordinator, monkeypatch):
    config, management, _ = coordinator
    FakeWorkers(monkeypatch, {("check", "w2:2"): peers.Outcome(400, "deployments.x: no such thing")})
    response = client_patch(management, {"seed": 4})
    assert response.status_code == 400
    error = json_of(response)["error"]
    assert error["message"] == "worker w2:2: deployments.x: no such thing; no worker changed"
    assert error["workers"] == {
        "w0:0": "not applied",
        "w1:1": "not applied",
        "w2:2": "400: deployments.x: no such thing",
    }
    assert config.seed is None


def test_a_worker_that_fails_while_applying_has_the_others_undo_it(coordinator, monkeypatch):
    config, management, tctx = coordinator
    workers = FakeWorkers(monkeypatch, {("apply", "w2:2"): peers.Outcome(None, "ReadTimeout")})
    response = client_patch(management, {"seed": 4, "deployments": {"x": {"model": "gpt-4o"}}})
    assert response.status_code == 503
    error = json_of(response)["error"]
    assert error["workers"] == {"w0:0": "rolled back", "w1:1": "rolled back", "w2:2": "unreachable: ReadTimeout"}
    assert "did not take the change" in error["message"]
    assert config.seed is None and "x" not in config.deployments and tctx.options.simulator_seed is None
    assert workers.asked[-1] == ("undo", ("http://w1:1",))  # only the worker that took it


def test_a_worker_that_cannot_undo_is_named(coordinator, monkeypatch):
    _, management, _ = coordinator
    FakeWorkers(
        monkeypatch,
        {("apply", "w2:2"): peers.Outcome(400, "bad"), ("undo", "w1:1"): peers.Outcome(None, "ConnectError")},
    )
    error = json_of(client_patch(management, {"seed": 4}))["error"]
    assert error["workers"]["w1:1"] == "applied; could not be rolled back: unreachable: ConnectError"
    assert error["workers"]["w2:2"] == "400: bad"


def test_an_undo_that_cannot_restore_an_option_says_so(peer, monkeypatch):
    config, management, _tctx = peer
    assert peer_call(management, {"seed": 9, "deployments": {"x": {"model": "gpt-4o"}}}, "apply c2").status_code == 200
    snapshot = management.undo["c2"]
    snapshot.options["simulator_mode"] = "bogus"  # a value the settings refuse
    response = peer_call(management, None, "undo c2")
    assert response.status_code == 409 and "SIMULATOR_MODE" in json_of(response)["error"]["message"]
    assert "x" not in config.deployments  # the rest is back


def test_a_large_patch_is_read_in_a_worker_thread_and_applied(managed, monkeypatch):
    config, management, _ = managed
    threads = []
    real = management_stage.read_patch
    monkeypatch.setattr(
        management_stage, "read_patch", lambda *a: threads.append(threading.current_thread()) or real(*a)
    )
    terms = [f"word{i}" for i in range(150)]  # over 64 KiB of body with the padding below
    body = {"contentFilter": {"gpt-4o": {"prompt": {"hate": terms}}}, "seed": 3, "_": None}
    raw = orjson.dumps(body).replace(b'"_":null', b'"_":null' + b" " * 70_000)
    flow = make_flow("PATCH", "/++/config", raw=raw)
    assert admit(flow, management.config) is None
    run(management.request(flow))
    assert flow.response.status_code == 400  # "_" is no field: the whole body was read and refused
    raw = raw.replace(b',"_":null', b"")
    flow = make_flow("PATCH", "/++/config", raw=raw)
    assert admit(flow, management.config) is None
    run(management.request(flow))
    assert flow.response.status_code == 200, flow.response.content
    assert config.seed == 3 and len(config.deployments["gpt-4o"].content_filter.prompt) == 150
    assert threads and all(t is not threading.main_thread() for t in threads)
