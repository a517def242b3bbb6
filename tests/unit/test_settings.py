import json
import logging
from collections.abc import Sequence

import pytest
from mitmproxy import exceptions, hooks, optmanager
from mitmproxy.addons import proxyserver
from mitmproxy.test import taddons
from unit_support import API_KEY, clear_settings_env, make_config, proxy_options, settings_context, start

from aoai.runtime import config as cfg
from aoai.runtime.banner import DEFAULT_PORT, banner
from aoai.runtime.services import Services
from aoai.runtime.startup import Startup, preflight
from aoai.stack import build_addons, declared_options
from aoai.stages import settings
from aoai.stages.settings import Settings


@pytest.fixture
def clean_env(monkeypatch):
    clear_settings_env(monkeypatch)
    return monkeypatch


def configure_all(tctx, addon=None):
    """What mitmproxy does once the script is loaded: configure every stage with every option."""
    tctx.master.addons.trigger(hooks.ConfigureHook(set(tctx.options.keys())))


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
    tctx.configure(addon, simulator_seed=3)
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
        "SIMULATOR_PEERS": "http://127.0.0.1:8001/, http://127.0.0.1:8002",
        "SIMULATOR_PEER_SECRET": "s" * 16,
        "SIMULATOR_REDIS_URL": "redis://127.0.0.1:1/0",
        "SIMULATOR_ENTRA_TOKENS": "on",
        "RATE_LIMIT_REQUEST_WINDOW_SECONDS": "1.0",
        "OPENAI_DEPLOYMENT_CONFIG_PATH": str(deployments),
        "REPLAY_MISS_STATUS": "500",
    }.items():
        clean_env.setenv(name, value)
    config = cfg.SimulatorConfig()
    tctx, addon = settings_context(config)
    with tctx:
        assert tctx.options.simulator_mode == "replay"
        assert tctx.options.simulator_seed == 42
        assert tctx.options.recording_autosave is False
        assert tctx.options.simulator_latency is False
        assert tctx.options.doc_intelligence_rps == -1.0
        assert tctx.options.recording_ignore_fields == ["user", "seed"]
        assert tctx.options.simulator_peers == ["http://127.0.0.1:8001/", "http://127.0.0.1:8002"]
        assert tctx.options.simulator_entra_tokens == "claims"
        assert tctx.options.rate_limit_request_window_seconds == "1"
        assert tctx.options.replay_miss_status == 500
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
    assert config.peers == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert config.entra.mode == "claims" and config.rate_limit_request_window_s == 1.0


def test_a_bad_environment_value_stops_the_start_with_one_line(clean_env, caplog):
    clean_env.setenv("RECORDING_AUTOSAVE", "maybe")
    config = make_config()
    tctx, addon = settings_context(config)
    with tctx:
        assert tctx.options.recording_autosave is True  # the built-in default stands in
        with caplog.at_level(logging.ERROR):
            configure_all(tctx, addon)
    assert errors(caplog) == ["Cannot start the simulator: RECORDING_AUTOSAVE: expected true or false, got 'maybe'"]
    assert config.recording.autosave is True


def test_a_bad_value_at_start_up_logs_one_error_and_changes_nothing(fresh, caplog):
    config, addon, tctx = fresh
    with caplog.at_level(logging.ERROR):
        tctx.configure(addon, simulator_mode="bogus")
    assert errors(caplog) == [
        "Cannot start the simulator: SIMULATOR_MODE: expected generate, record or replay, got 'bogus'"
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
    ("simulator_mode", "bogus", "SIMULATOR_MODE: expected generate, record or replay, got 'bogus'"),
    ("log_level", "loud", "LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got 'loud'"),
    ("simulator_completion_tokens_mean", -1.0, "SIMULATOR_COMPLETION_TOKENS_MEAN: must not be below 0, got -1"),
    ("simulator_tool_call_share", 1.5, "SIMULATOR_TOOL_CALL_SHARE: must not be above 1, got 1.5"),
    ("simulator_tool_call_share", float("nan"), "SIMULATOR_TOOL_CALL_SHARE: expected a number, got nan"),
    ("latency_openai_chat_completions_mean", "-3", "LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN: must not be below 0, got -3"),
    ("latency_openai_completions_mean", "inf", "LATENCY_OPENAI_COMPLETIONS_MEAN: expected a number, got 'inf'"),
    ("latency_openai_embeddings_std_dev", -2.0, "LATENCY_OPENAI_EMBEDDINGS_STD_DEV: must not be below 0, got -2"),
    ("replay_timing", "later", "REPLAY_TIMING: expected recorded, model or none, got 'later'"),
    ("replay_miss_status", 200, "REPLAY_MISS_STATUS: expected an HTTP error status (400-599), got 200"),
    ("recording_file_suffix", "a/b", "RECORDING_FILE_SUFFIX: letters, digits, '.', '_' and '-' only, got 'a/b'"),
    ("rate_limit_request_window_seconds", "5", "RATE_LIMIT_REQUEST_WINDOW_SECONDS: expected 10 or 1, got '5'"),
    ("simulator_entra_tokens", "maybe", "SIMULATOR_ENTRA_TOKENS: expected off, claims or signature, got 'maybe'"),
    (
        "simulator_peers",
        ["127.0.0.1:8001"],
        "SIMULATOR_PEERS: expected base URLs such as http://127.0.0.1:8001, got '127.0.0.1:8001'",
    ),
    (
        "simulator_peers",
        ["http://127.0.0.1:8001"],
        "SIMULATOR_PEER_SECRET: workers (SIMULATOR_PEERS) need a secret "
        "of at least 16 characters for their calls to each other; "
        "scripts/workers.py makes one",
    ),
    (
        "simulator_seed",
        2**63,
        "SIMULATOR_SEED: expected a whole number from -9223372036854775808 to "
        "9223372036854775807, got 9223372036854775808",
    ),
    (
        "ptu_input_tpm_per_ptu",
        ["gpt-4o=99999999999"],
        "PTU_INPUT_TPM_PER_PTU: expected model=tokens with a whole "
        "number of tokens from 1 to 1000000000, got 'gpt-4o=99999999999'",
    ),
    ("responses_stored", -1, "RESPONSES_STORED: must not be below 0, got -1"),
    ("prompt_cache_idle_seconds", -5.0, "PROMPT_CACHE_IDLE_SECONDS: must not be below 0, got -5"),
    (
        "azure_openai_endpoint",
        "myres.openai.azure.com",
        "AZURE_OPENAI_ENDPOINT: expected an http(s) URL such as "
        "https://NAME.openai.azure.com, got 'myres.openai.azure.com'",
    ),
    ("azure_openai_timeout_seconds", 0.0, "AZURE_OPENAI_TIMEOUT_SECONDS: must be above 0"),
    ("simulator_max_body_bytes", 0, "SIMULATOR_MAX_BODY_BYTES: must not be below 1, got 0"),
]


@pytest.mark.parametrize("option, value, message", BAD_VALUES)
def test_a_bad_value_while_running_raises_and_changes_nothing(fresh, option, value, message):
    config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    before = (config.mode, config.seed, config.completion_tokens, config.latency_defaults, config.tool_call_share)
    default = tctx.options._options[option].default
    with pytest.raises(exceptions.OptionsError) as caught:
        tctx.configure(addon, **{option: value})
    assert str(caught.value) == message
    assert getattr(tctx.options, option) == default  # rolled back
    assert (
        config.mode,
        config.seed,
        config.completion_tokens,
        config.latency_defaults,
        config.tool_call_share,
    ) == before


def test_workers_without_redis_are_refused_in_one_line(fresh, caplog):
    _config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    with pytest.raises(exceptions.OptionsError) as caught:
        tctx.configure(addon, simulator_peers=["http://127.0.0.1:8001"], simulator_peer_secret="s" * 16)
    assert str(caught.value) == (
        "SIMULATOR_PEERS: workers share configuration changes through Redis; set SIMULATOR_REDIS_URL "
        "(scripts/workers.py starts one)"
    )
    for url in ("simulator_redis_url", "rate_limit_redis_url"):  # either spelling will do
        tctx.configure(
            addon, simulator_peers=["http://127.0.0.1:8001"], simulator_peer_secret="s" * 16, **{url: "redis://h:1/0"}
        )
        tctx.configure(addon, simulator_peers=[], **{url: None})


BAD_ENVIRONMENT = [
    ("SIMULATOR_SEED", "1.5", "SIMULATOR_SEED: expected a whole number, got '1.5'"),
    ("SIMULATOR_SEED", "--5", "SIMULATOR_SEED: expected a whole number, got '--5'"),
    ("DOC_INTELLIGENCE_RPS", "fast", "DOC_INTELLIGENCE_RPS: expected a number, got 'fast'"),
    ("SIMULATOR_COMPLETION_TOKENS_STD_DEV", "x", "SIMULATOR_COMPLETION_TOKENS_STD_DEV: expected a number, got 'x'"),
    ("SIMULATOR_TOOL_CALL_SHARE", "nan", "SIMULATOR_TOOL_CALL_SHARE: expected a number, got 'nan'"),
    ("REPLAY_MISS_STATUS", "200", "REPLAY_MISS_STATUS: expected an HTTP error status (400-599), got 200"),
    ("RESPONSES_STORED", "2.5", "RESPONSES_STORED: expected a whole number, got '2.5'"),
    ("PROMPT_CACHE_IDLE_SECONDS", "soon", "PROMPT_CACHE_IDLE_SECONDS: expected a number, got 'soon'"),
    ("AZURE_OPENAI_TIMEOUT_SECONDS", "soon", "AZURE_OPENAI_TIMEOUT_SECONDS: expected a number, got 'soon'"),
    ("RATE_LIMIT_REQUEST_WINDOW_SECONDS", "60", "RATE_LIMIT_REQUEST_WINDOW_SECONDS: expected 10 or 1, got '60'"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got 'LOUD'"),
    ("SIMULATOR_WEB_MAX_FLOWS", "-1", "SIMULATOR_WEB_MAX_FLOWS: must not be below 0, got -1"),
]


@pytest.mark.parametrize("env, text, message", BAD_ENVIRONMENT)
def test_a_bad_environment_value_is_named_by_preflight(clean_env, env, text, message):
    refused = []
    clean_env.setenv(env, text)
    startup = Startup()
    startup.refuse = refused.append
    preflight(startup, declared_options())
    assert refused == [message]


def test_preflight_passes_a_good_environment(clean_env):
    refused = []
    startup = Startup()
    startup.refuse = refused.append
    clean_env.setenv("SIMULATOR_MODE", " Replay ")
    clean_env.setenv("EXTENSION_PATH", "")
    preflight(startup, declared_options())
    assert refused == []


def test_every_option_has_its_type_and_choices_for_the_options_editor(clean_env):
    """mitmweb's options editor shows each option's type (and a list for choices)."""
    config = make_config()
    stack = build_addons(config, Services.build(config))
    with taddons.context(proxyserver.Proxyserver(), *stack, options=proxy_options()) as tctx:
        o = tctx.options._options
        expected = {
            "simulator_mode": (str, ("generate", "record", "replay")),
            "replay_timing": (str, ("recorded", "model", "none")),
            "log_level": (str, ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
            "simulator_entra_tokens": (str, ("off", "claims", "signature")),
            "rate_limit_request_window_seconds": (str, ("10", "1")),
            "simulator_seed": (int | None, None),
            "simulator_api_key": (str | None, None),
            "simulator_peers": (Sequence[str], None),
            "recording_ignore_fields": (Sequence[str], None),
            "extension_path": (Sequence[str], None),
            "simulator_entra_audiences": (Sequence[str], None),
            "ptu_input_tpm_per_ptu": (Sequence[str], None),
            "recording_autosave": (bool, None),
            "replay_miss_status": (int, None),
            "responses_stored": (int, None),
            "rate_limit_default_reservation": (int, None),
            "simulator_max_body_bytes": (int, None),
            "simulator_header_timeout_seconds": (float, None),
            "simulator_tool_call_share": (float, None),
            "doc_intelligence_rps": (float, None),
            "azure_openai_timeout_seconds": (float, None),
            "simulator_web_max_flows": (int, None),
        }
        assert {name: (o[name].typespec, o[name].choices) for name in expected} == expected
        # Every setting is an option, and mitmweb can describe each (its editor reads this).
        assert {option.name for option in declared_options()} <= set(o)
        shown = optmanager.dump_dicts(tctx.options, [option.name for option in declared_options()])
        assert shown["simulator_seed"]["type"] == "optional int"
        assert shown["simulator_peers"]["type"] == "sequence of str"
        assert shown["doc_intelligence_rps"]["type"] == "float"
        assert shown["simulator_mode"]["choices"] == ("generate", "record", "replay")


def test_a_float_option_can_be_set_on_the_command_line(clean_env):
    """mitmproxy reads `--set` text for str, int, bool and sequence options only; float
    options take it as their environment variable would."""
    config = make_config()
    stack = build_addons(config, Services.build(config))
    opts = proxy_options()
    opts.set("simulator_tool_call_share=0.25", "doc_intelligence_rps=2.5", "simulator_seed=7", defer=True)
    with taddons.context(proxyserver.Proxyserver(), *stack, options=opts) as tctx:
        assert tctx.options.simulator_tool_call_share == 0.25
        assert tctx.options.doc_intelligence_rps == 2.5
        assert tctx.options.simulator_seed == 7
        configure_all(tctx)
    assert config.tool_call_share == 0.25 and config.doc_intelligence_rps == 2.5 and config.seed == 7


def test_a_wrong_float_on_the_command_line_stops_the_start(clean_env, caplog):
    config = make_config()
    stack = build_addons(config, Services.build(config))
    opts = proxy_options()
    opts.set("simulator_tool_call_share=lots", defer=True)
    with taddons.context(proxyserver.Proxyserver(), *stack, options=opts) as tctx, caplog.at_level(logging.ERROR):
        configure_all(tctx)
    assert errors(caplog) == ["Cannot start the simulator: SIMULATOR_TOOL_CALL_SHARE: expected a number, got 'lots'"]


def test_extensions_are_initialized_with_every_setting_applied(clean_env, tmp_path):
    """mitmproxy configures the stages in order; the extensions stage comes before replay and
    generate, whose settings an extension's initialize(config) still sees."""
    seen = tmp_path / "seen.txt"
    extension = tmp_path / "peek.py"
    extension.write_text(
        "def initialize(config):\n"
        f"    open({str(seen)!r}, 'w').write(repr((config.tool_call_share, config.recording.miss_status, "
        "config.azure_openai_timeout_s, config.mode)))\n"
    )
    for env, text in {
        "EXTENSION_PATH": str(extension),
        "SIMULATOR_TOOL_CALL_SHARE": "0.5",
        "REPLAY_MISS_STATUS": "503",
        "AZURE_OPENAI_TIMEOUT_SECONDS": "12",
    }.items():
        clean_env.setenv(env, text)
    config = make_config()
    stack = build_addons(config, Services.build(config))
    with taddons.context(proxyserver.Proxyserver(), *stack, options=proxy_options()) as tctx:
        configure_all(tctx)
    assert seen.read_text() == repr((0.5, 503, 12.0, "generate"))


def test_good_values_while_running_apply(fresh):
    config, addon, tctx = fresh
    tctx.configure(addon, simulator_api_key=API_KEY)
    start(addon)
    tctx.configure(
        addon,
        simulator_mode="record",
        azure_openai_endpoint="https://example.openai.azure.com",
        latency_openai_chat_completions_mean="20",
        simulator_tool_call_share=0.25,
        simulator_seed=-7,
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
    tctx.configure(addon, responses_stored=5, prompt_cache_idle_seconds=60.0)
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
    tctx.configure(addon, openai_deployment_config_path=None)
    assert set(config.deployments) == set(cfg.default_deployments())


def test_a_bare_mitmdump_gets_the_simulators_listener(clean_env):
    clean_env.setenv("AZURE_OPENAI_ENDPOINT", "https://my-resource.openai.azure.com")
    addon = Settings(make_config())
    with taddons.context(proxyserver.Proxyserver(), addon) as tctx:
        assert tctx.options.mode == ["reverse:https://my-resource.openai.azure.com"]
        assert tctx.options.listen_port == DEFAULT_PORT
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
    text = banner(make_config(allow_undefined_deployments=False), [("0.0.0.0", 9000)])
    assert text.splitlines()[0] == "Azure OpenAI simulator: mode generate, listening on http://localhost:9000"
    assert "answered too" not in text
    assert "http://127.0.0.1:9001" in banner(make_config(), [("127.0.0.1", 9001)])


def hello_offering(*offers: bytes):
    """What the tls_clienthello hook is given, reduced to what the settings stage reads."""
    from types import SimpleNamespace

    from mitmproxy.test import tflow

    client = tflow.tclient_conn()
    client.alpn = None
    return SimpleNamespace(
        client_hello=SimpleNamespace(alpn_protocols=list(offers)), context=SimpleNamespace(client=client)
    )


@pytest.mark.parametrize(
    ("preferred", "http2", "offers", "chosen"),
    [
        (True, True, (b"http/1.1", b"h2"), b"h2"),  # httpx's order: h2 wins all the same
        (True, True, (b"http/1.1",), None),  # not offered: mitmproxy's own choice stands
        (False, True, (b"http/1.1", b"h2"), None),  # off: the client's order decides
        (True, False, (b"http/1.1", b"h2"), None),  # mitmproxy's http2=false: never h2
    ],
)
def test_http2_preferred_when_offered(fresh, preferred, http2, offers, chosen):
    _, addon, tctx = fresh
    configure_all(tctx, addon)
    tctx.options.update(simulator_http2_preferred=preferred, http2=http2)
    hello = hello_offering(*offers)
    addon.tls_clienthello(hello)
    assert hello.context.client.alpn == chosen


def test_http2_preferred_from_the_environment(clean_env):
    clean_env.setenv("SIMULATOR_HTTP2_PREFERRED", "false")
    tctx, _ = settings_context(cfg.SimulatorConfig())
    with tctx:
        assert tctx.options.simulator_http2_preferred is False
