import json
import logging

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons
from unit_support import API_KEY, clear_settings_env, make_config, settings_context, start

from aoai.runtime import config as cfg
from aoai.stages import settings
from aoai.stages.settings import Settings


@pytest.fixture
def clean_env(monkeypatch):
    clear_settings_env(monkeypatch)
    return monkeypatch


def configure_all(tctx, addon):
    """What mitmproxy does once the script is loaded: configure with every option."""
    tctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(tctx.options.keys())))


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def fresh(clean_env):
    """A blank configuration (no key yet) and its Settings context, not yet running."""
    config = cfg.SimulatorConfig()
    tctx, addon = settings_context(config)
    with tctx:
        yield config, addon, tctx


def test_defaults_without_environment(fresh):
    config, addon, tctx = fresh
    configure_all(tctx, addon)
    assert tctx.options.simulator_mode == "generate"
    assert config.mode == "generate"
    assert len(config.api_key) == 32  # generated: 24 random bytes, URL-safe base64
    assert config.seed is None
    assert set(config.deployments) == set(cfg.default_deployments())
    assert config.allow_undefined_deployments is True
    assert config.doc_intelligence_rps == 15.0
    assert config.completion_tokens == cfg.Normal(150.0, 50.0)
    assert config.tool_call_share == 1.0
    assert config.latency_enabled is True and config.latency_defaults == {}
    assert (config.recording.dir, config.recording.autosave) == ("recordings", True)
    assert (config.recording.replay_timing, config.recording.miss_status) == ("recorded", 404)
    assert addon.env_error is None


def test_the_generated_key_is_kept_across_changes(fresh):
    config, addon, tctx = fresh
    configure_all(tctx, addon)
    key = config.api_key
    tctx.configure(addon, simulator_seed="3")
    assert config.api_key == key and config.seed == 3


def test_environment_variables_are_the_option_defaults(clean_env, tmp_path):
    deployments = tmp_path / "deployments.json"
    deployments.write_text(json.dumps({"only": {"model": "gpt-4o-mini"}}))
    for name, value in {
        "SIMULATOR_MODE": "Replay",
        "SIMULATOR_API_KEY": "k",
        "SIMULATOR_SEED": "42",
        "RECORDING_AUTOSAVE": "no",
        "ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS": "false",
        "SIMULATOR_LATENCY": "0",
        "DOC_INTELLIGENCE_RPS": "-1",
        "LATENCY_OPENAI_EMBEDDINGS_MEAN": "40",
        "LATENCY_OPENAI_EMBEDDINGS_STD_DEV": "4",
        "SIMULATOR_COMPLETION_TOKENS_MEAN": "10",
        "RECORDING_IGNORE_FIELDS": "user, seed,,",
        "OPENAI_DEPLOYMENT_CONFIG_PATH": str(deployments),
        "REPLAY_MISS_STATUS": "500",
    }.items():
        clean_env.setenv(name, value)
    config = cfg.SimulatorConfig()
    tctx, addon = settings_context(config)
    with tctx:
        assert tctx.options.simulator_mode == "Replay"
        assert tctx.options.recording_autosave is False
        assert tctx.options.simulator_latency is False
        configure_all(tctx, addon)
    assert (config.mode, config.api_key, config.seed) == ("replay", "k", 42)
    assert config.recording.autosave is False
    assert config.allow_undefined_deployments is False
    assert config.latency_enabled is False
    assert config.doc_intelligence_rps == -1.0
    assert config.latency_defaults == {"embeddings": cfg.Normal(40.0, 4.0)}
    assert config.completion_tokens == cfg.Normal(10.0, 50.0)
    assert config.recording.ignore_fields == ("user", "seed")
    assert config.recording.miss_status == 500
    assert list(config.deployments) == ["only"]


def test_a_bad_environment_value_stops_the_start_with_one_line(clean_env, caplog):
    clean_env.setenv("RECORDING_AUTOSAVE", "maybe")
    config = make_config()
    tctx, addon = settings_context(config)
    with tctx:
        assert tctx.options.recording_autosave is True  # the built-in default stands in
        with caplog.at_level(logging.ERROR):
            configure_all(tctx, addon)
    assert errors(caplog) == ["Cannot start the simulator: RECORDING_AUTOSAVE: expected true or false, got 'maybe'"]


def test_a_bad_value_at_start_up_logs_one_error_and_changes_nothing(fresh, caplog):
    config, addon, tctx = fresh
    with caplog.at_level(logging.ERROR):
        tctx.configure(addon, simulator_mode="bogus")
    assert errors(caplog) == [
        "Cannot start the simulator: SIMULATOR_MODE: unknown mode 'bogus'; use generate, record or replay"
    ]
    assert config.mode == "generate"
    assert config.api_key == ""  # nothing was applied


def test_a_missing_deployments_file_at_start_up_names_the_file(clean_env, tmp_path, caplog):
    missing = tmp_path / "nowhere.json"
    clean_env.setenv("OPENAI_DEPLOYMENT_CONFIG_PATH", str(missing))
    config = make_config()
    tctx, addon = settings_context(config)
    with tctx, caplog.at_level(logging.ERROR):
        configure_all(tctx, addon)
    assert errors(caplog) == [
        f"Cannot start the simulator: {missing}: cannot read the deployments file (No such file or directory)"
    ]


BAD_VALUES = [
    ("simulator_mode", "bogus", "SIMULATOR_MODE: unknown mode 'bogus'; use generate, record or replay"),
    ("simulator_seed", "1.5", "SIMULATOR_SEED: expected a whole number, got '1.5'"),
    ("simulator_seed", "--5", "SIMULATOR_SEED: expected a whole number, got '--5'"),
    ("log_level", "loud", "LOG_LEVEL: unknown level 'loud'; use DEBUG, INFO, WARNING or ERROR"),
    ("doc_intelligence_rps", "fast", "DOC_INTELLIGENCE_RPS: expected a number, got 'fast'"),
    ("simulator_completion_tokens_mean", "-1", "SIMULATOR_COMPLETION_TOKENS_MEAN: must not be below 0, got -1"),
    ("simulator_completion_tokens_std_dev", "x", "SIMULATOR_COMPLETION_TOKENS_STD_DEV: expected a number, got 'x'"),
    ("simulator_tool_call_share", "1.5", "SIMULATOR_TOOL_CALL_SHARE: must not be above 1, got 1.5"),
    ("latency_openai_chat_completions_mean", "-3", "LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN: must not be below 0, got -3"),
    ("latency_openai_completions_mean", "inf", "LATENCY_OPENAI_COMPLETIONS_MEAN: expected a number, got 'inf'"),
    ("simulator_tool_call_share", "nan", "SIMULATOR_TOOL_CALL_SHARE: expected a number, got 'nan'"),
    ("latency_openai_embeddings_std_dev", "slow", "LATENCY_OPENAI_EMBEDDINGS_STD_DEV: expected a number, got 'slow'"),
    ("replay_timing", "later", "REPLAY_TIMING: unknown timing 'later'; use recorded, model or none"),
    ("replay_miss_status", "200", "REPLAY_MISS_STATUS: expected an HTTP error status (400-599), got '200'"),
    ("recording_file_suffix", "a/b", "RECORDING_FILE_SUFFIX: letters, digits, '.', '_' and '-' only, got 'a/b'"),
    (
        "simulator_peers",
        "127.0.0.1:8001",
        "SIMULATOR_PEERS: expected base URLs such as http://127.0.0.1:8001, got '127.0.0.1:8001'",
    ),
    (
        "simulator_peers",
        "http://127.0.0.1:8001",
        "SIMULATOR_PEER_SECRET: workers (SIMULATOR_PEERS) need a secret "
        "of at least 16 characters for their calls to each other; "
        "scripts/workers.py makes one",
    ),
    (
        "simulator_seed",
        "9223372036854775808",
        "SIMULATOR_SEED: expected a whole number from -9223372036854775808 to "
        "9223372036854775807, got '9223372036854775808'",
    ),
    (
        "ptu_input_tpm_per_ptu",
        "gpt-4o=99999999999",
        "PTU_INPUT_TPM_PER_PTU: expected model=tokens with a whole "
        "number of tokens from 1 to 1000000000, got 'gpt-4o=99999999999'",
    ),
    ("responses_stored", "2.5", "RESPONSES_STORED: expected a whole number, got '2.5'"),
    ("responses_stored", "-1", "RESPONSES_STORED: must not be below 0, got -1"),
    ("prompt_cache_idle_seconds", "soon", "PROMPT_CACHE_IDLE_SECONDS: expected a number, got 'soon'"),
    (
        "azure_openai_endpoint",
        "myres.openai.azure.com",
        "AZURE_OPENAI_ENDPOINT: expected an http(s) URL such as "
        "https://NAME.openai.azure.com, got 'myres.openai.azure.com'",
    ),
    ("azure_openai_timeout_seconds", "0", "AZURE_OPENAI_TIMEOUT_SECONDS: must be above 0"),
    ("azure_openai_timeout_seconds", "soon", "AZURE_OPENAI_TIMEOUT_SECONDS: expected a number, got 'soon'"),
]


@pytest.mark.parametrize("option, value, message", BAD_VALUES)
def test_a_bad_value_while_running_raises_and_changes_nothing(fresh, option, value, message):
    config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    before = (config.mode, config.seed, config.completion_tokens, config.latency_defaults, config.tool_call_share)
    with pytest.raises(exceptions.OptionsError) as caught:
        tctx.configure(addon, **{option: value})
    assert str(caught.value) == message
    assert getattr(tctx.options, option) == settings.BY_OPTION[option].default  # rolled back
    assert (
        config.mode,
        config.seed,
        config.completion_tokens,
        config.latency_defaults,
        config.tool_call_share,
    ) == before


def test_good_values_while_running_apply(fresh):
    config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    tctx.configure(
        addon,
        simulator_mode=" RECORD ",
        latency_openai_chat_completions_mean="20",
        simulator_tool_call_share="0.25",
        simulator_seed="-7",
    )
    assert config.mode == "record"
    assert config.latency_defaults == {"chat_completions": cfg.Normal(20.0, 0.0)}
    assert config.tool_call_share == 0.25
    assert config.seed == -7


def test_the_responses_store_and_prompt_cache_settings_apply(fresh):
    config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    assert (config.responses_stored, config.prompt_cache_idle_s) == (1000, 300.0)
    tctx.configure(addon, responses_stored="5", prompt_cache_idle_seconds="60")
    assert (config.responses_stored, config.prompt_cache_idle_s) == (5, 60.0)


def test_deployments_file_errors_while_running_name_the_file(fresh, tmp_path):
    config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(exceptions.OptionsError, match=rf"^{broken}: not valid JSON \(line 1"):
        tctx.configure(addon, openai_deployment_config_path=str(broken))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"x": {"model": "gpt-9"}}))
    with pytest.raises(exceptions.OptionsError) as caught:
        tctx.configure(addon, openai_deployment_config_path=str(wrong))
    assert str(caught.value).startswith(f"{wrong}: x.model: unknown model 'gpt-9'")
    assert set(config.deployments) == set(cfg.default_deployments())
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": {"model": "gpt-4o"}, "b": {"model": "text-embedding-3-large"}}))
    tctx.configure(addon, openai_deployment_config_path=str(good))
    assert {n: d.model.name for n, d in config.deployments.items()} == {"a": "gpt-4o", "b": "text-embedding-3-large"}
    tctx.configure(addon, openai_deployment_config_path="")
    assert set(config.deployments) == set(cfg.default_deployments())


def test_a_bare_mitmdump_gets_the_simulators_listener(clean_env):
    clean_env.setenv("AZURE_OPENAI_ENDPOINT", "https://my-resource.openai.azure.com")
    addon = Settings(make_config())
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx:
        assert tctx.options.mode == ["reverse:https://my-resource.openai.azure.com"]
        assert tctx.options.listen_port == settings.DEFAULT_PORT
        assert tctx.options.connection_strategy == "lazy"
        assert tctx.options.keep_host_header is True
        assert tctx.options.store_streamed_bodies is True
    assert addon.replace_default_listener is True


def test_without_an_endpoint_the_placeholder_is_the_upstream(clean_env):
    with taddons.context(proxyserver.Proxyserver(), Settings(make_config())) as tctx:
        assert tctx.options.mode == [f"reverse:{settings.PLACEHOLDER_ENDPOINT}"]


def test_a_chosen_listener_is_kept(clean_env):
    tctx, addon = settings_context(make_config())
    with tctx:
        assert tctx.options.mode == ["reverse:http://upstream.invalid"]
        assert tctx.options.listen_port == 1
    assert addon.replace_default_listener is False


def test_a_bad_endpoint_is_reported_at_start_up(clean_env, caplog):
    clean_env.setenv("AZURE_OPENAI_ENDPOINT", "ftp://x")
    addon = Settings(make_config())
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx, caplog.at_level(logging.ERROR):
        configure_all(tctx, addon)
    (line,) = errors(caplog)
    assert line.startswith("Cannot start the simulator: AZURE_OPENAI_ENDPOINT: ")
    assert "ftp" in line


def test_the_banner_shows_how_to_call(fresh, caplog):
    _, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key="the-key")
    with caplog.at_level(logging.INFO, logger="aoai"):
        start(addon)
    banner = "\n".join(r.getMessage() for r in caplog.records if r.name == "aoai.stages.settings")
    assert banner.startswith("Azure OpenAI simulator: mode generate, listening on http://localhost:8000")
    assert "API key:     the-key" in banner
    assert "gpt-4o (gpt-4o)" in banner and "(undefined names answered too)" in banner
    # The URL is quoted: a shell would glob its "?".
    assert (
        "curl 'http://localhost:8000/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21' "
        "-H 'api-key: the-key'" in banner
    )


def test_banner_with_a_bound_address():
    text = settings.banner(make_config(allow_undefined_deployments=False), [("0.0.0.0", 9000)])
    assert text.splitlines()[0] == "Azure OpenAI simulator: mode generate, listening on http://localhost:9000"
    assert "answered too" not in text
    assert "http://127.0.0.1:9001" in settings.banner(make_config(), [("127.0.0.1", 9001)])
