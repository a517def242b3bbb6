import asyncio
import threading
from types import SimpleNamespace

import orjson
import pytest
from redis_server import redis_url  # noqa: F401
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


# Replicas sharing a Redis: the configuration state, written and taken.


def test_the_shared_state_sets_everything_patch_can_and_makes_another_config_the_same(managed):
    config, management, _ = managed
    management.starting = frozenset(config.deployments)
    body = {
        "seed": 9,
        "allowUndefinedDeployments": False,
        "latency": {"chatCompletions": {"mean": 20, "stdDev": 2}},
        "deployments": {
            "gpt-4o": None,
            "std": {"model": "gpt-4o", "tokensPerMinute": 1000, "faults": [{"kind": "503", "share": 0.5}]},
            "ptu": {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15, "spillover": "std"},
        },
        "contentFilter": {"std": {"blockAt": "medium", "prompt": {"hate": ["bad"]}}},
        "faults": [{"kind": "500", "share": 0.1}],
    }
    assert call(management, "PATCH", "/++/config", body).status_code == 200
    state = management_stage.state_of(config, management.starting)
    assert state["deployments"]["gpt-4o"] is None  # removed from the starting configuration
    assert set(state) == {"mode", "seed", "allowUndefinedDeployments", "latency", "deployments", "faults"}
    view = management_stage.config_view(config)
    # Another replica, as it started: the state makes it the same.
    other = make_config(deployments={**cfg.default_deployments(), "extra": config.deployments["std"]})
    kept = other.deployments["gpt-4o-mini"]
    plan = management_stage.state_plan(other, state)
    assert "gpt-4o-mini" not in plan.deployments  # the same already: left alone
    management_stage.apply_plan(other, plan)
    assert other.deployments["gpt-4o-mini"] is kept
    assert "extra" not in other.deployments and "gpt-4o" not in other.deployments
    assert management_stage.config_view(other)["deployments"] == view["deployments"]
    assert other.default_faults.to_json() == view["faults"]


def shared_management(config, url, tctx, settings):
    """A management stage of a replica sharing Redis at `url`, its settings running."""
    tctx.configure(settings, simulator_api_key=API_KEY, simulator_redis_url=url)
    start(settings)
    management = Management(config, make_services(config))
    return management


def other_replica(management, name="other"):
    """Another replica as Redis sees it: a ConfigSync of its own that applies nothing."""
    from aoai.runtime import config_sync as cs
    from aoai.runtime.shared import Shared

    shared = Shared(prefix=management.services.shared.prefix)
    shared.use(management.services.shared.url)
    taken = []
    sync = cs.ConfigSync(
        shared,
        lambda: name,
        cs.Hooks(state=dict, apply=lambda s: taken.append(s) or "", reset=lambda: None, cut=lambda *a: None),
    )
    return sync, taken


async def patch_async(management, body):
    flow = make_flow("PATCH", "/++/config", body)
    assert admit(flow, management.config) is None
    pending = management.request(flow)
    if pending is not None:
        await pending
    return flow.response


@pytest.fixture
def shared_replica(clean_env, redis_url):  # noqa: F811
    config = make_config()
    tctx, settings = settings_context(config)
    with tctx:
        management = shared_management(config, redis_url, tctx, settings)
        management.services.shared.prefix = f"t-mgmt-{id(management)}:"
        yield config, management


def test_a_change_is_shared_and_the_answer_says_which_replicas_have_it(shared_replica):
    config, management = shared_replica

    async def go():
        other, taken = other_replica(management)
        await other.start()
        await management.running()
        assert management.ready
        response = await patch_async(management, {"seed": 4, "deployments": {"x": {"model": "gpt-4o"}}})
        assert response.status_code == 200, response.content
        body = json_of(response)
        me = management.services.shared.replica
        assert body["replicas"] == {me: "applied", "other": "applied"} and "workers" not in body
        assert taken[-1]["seed"] == 4 and taken[-1]["deployments"]["x"] == {"model": "gpt-4o"}
        version, state = await other.read()
        assert version == 1 and state == management_stage.state_of(config, management.starting)
        await other.stop()
        await other.shared.close()
        await management.done()
        await management.services.shared.close()

    run(go())


def test_a_change_meeting_a_newer_version_goes_on_top_of_it(shared_replica):
    config, management = shared_replica

    async def go():
        await management.running()
        other, _ = other_replica(management)
        state = management_stage.state_of(config, management.starting)
        state["seed"] = 7
        state["deployments"]["theirs"] = {"model": "gpt-4o-mini"}
        assert (await other.write(state)).written
        await management.sync.stop()  # not listening: the write itself meets version 1
        response = await patch_async(management, {"deployments": {"mine": {"model": "gpt-4o"}}})
        assert response.status_code == 200, response.content
        assert config.seed == 7 and {"theirs", "mine"} <= set(config.deployments)
        version, shared = await other.read()
        assert version == 2 and shared["seed"] == 7 and {"theirs", "mine"} <= set(shared["deployments"])
        await other.shared.close()
        await management.done()
        await management.services.shared.close()

    run(go())


def test_a_replica_starting_later_takes_the_shared_state_before_it_is_healthy(shared_replica):
    config, management = shared_replica

    async def go():
        other, _ = other_replica(management)
        state = management_stage.state_of(config)
        state["seed"] = 11
        del state["deployments"]["gpt-4o-mini"]  # not in the state: removed here too
        assert (await other.write(state)).written
        pending = management.running()
        assert not management.ready
        await pending
        assert management.ready and config.seed == 11 and "gpt-4o-mini" not in config.deployments
        assert management.sync.version == 1
        await other.shared.close()
        await management.done()
        await management.services.shared.close()

    run(go())


def test_with_redis_away_a_change_is_taken_here_and_shared_when_it_is_back(shared_replica):
    config, management = shared_replica

    async def go():
        await management.running()
        management.services.shared.up = False
        response = await patch_async(management, {"seed": 5})
        assert response.status_code == 200
        body = json_of(response)
        assert body["replicas"] == {management.services.shared.replica: "applied"}
        assert "not reached" in body["note"] and config.seed == 5 and management.sync.unpublished
        management.services.shared.up = True
        await management.sync.caught_up()
        other, _ = other_replica(management)
        version, state = await other.read()
        assert version == 1 and state["seed"] == 5 and not management.sync.unpublished
        await other.shared.close()
        await management.done()
        await management.services.shared.close()

    run(go())


def test_a_reset_of_the_limits_reaches_every_replica(shared_replica):
    _config, management = shared_replica

    async def go():
        from aoai.runtime.config_sync import ConfigSync, Hooks
        from aoai.runtime.shared import Shared

        resets = []
        shared = Shared(prefix=management.services.shared.prefix)
        shared.use(management.services.shared.url)
        other = ConfigSync(
            shared,
            lambda: "other",
            Hooks(state=dict, apply=lambda s: "", reset=lambda: resets.append(1), cut=lambda *a: None),
        )
        await other.start()
        await management.running()
        management.services.limiter.hints.due[b"x" * 16] = 1.0
        flow = make_flow("POST", "/++/reset-limits")
        assert admit(flow, management.config) is None
        await management.request(flow)
        body = json_of(flow.response)
        assert body["reset"] is True
        assert body["replicas"] == {management.services.shared.replica: "applied", "other": "applied"}
        assert resets == [1] and not management.services.limiter.hints
        await other.stop()
        await shared.close()
        await management.done()
        await management.services.shared.close()

    run(go())


def test_a_quota_cut_a_draw_starts_is_shared(shared_replica):
    _config, management = shared_replica

    async def go():
        from aoai.runtime.config_sync import ConfigSync, Hooks
        from aoai.runtime.shared import Shared

        cuts = []
        shared = Shared(prefix=management.services.shared.prefix)
        shared.use(management.services.shared.url)
        other = ConfigSync(
            shared,
            lambda: "other",
            Hooks(state=dict, apply=lambda s: "", reset=lambda: None, cut=lambda *a: cuts.append(a)),
        )
        await other.start()
        await management.running()
        assert management.services.faults.on_cut is not None
        management.services.faults.on_cut("gpt-4o", 2e9, 10)
        for _ in range(100):
            if cuts:
                break
            await asyncio.sleep(0.02)
        assert cuts == [("gpt-4o", 2e9, 10)]
        await other.stop()
        await shared.close()
        await management.done()
        await management.services.shared.close()

    run(go())


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
