"""Settings: every configuration value as a mitmproxy option that defaults to its environment
variable, checked and turned into the shared `SimulatorConfig`.

Also makes a bare `mitmdump -s addons/simulator.py` a simulator: reverse mode on port 8000
toward AZURE_OPENAI_ENDPOINT, upstream connections only when a request is forwarded.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import secrets
import shlex
from dataclasses import dataclass
from types import SimpleNamespace

from mitmproxy import ctx, exceptions

from ..openai import text, tokens
from ..runtime import config as cfg
from ..runtime import internals
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.startup import Startup

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8000
PLACEHOLDER_ENDPOINT = "https://azure-openai-endpoint.invalid"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Setting:
    env: str
    type: type
    default: object
    help: str

    @property
    def option(self) -> str:
        return self.env.lower()


def _latency(op: str, what: str, unit: str) -> Setting:
    return Setting(f"LATENCY_OPENAI_{op}_{what}", str, "",
                   f"{'Mean' if what == 'MEAN' else 'Standard deviation'} of the simulated latency of "
                   f"{op.lower().replace('_', ' ')}, milliseconds {unit}. Empty: the model's default.")


SETTINGS = [
    Setting("SIMULATOR_MODE", str, "generate", "How requests are answered: generate, record or replay."),
    Setting("SIMULATOR_API_KEY", str, "", "The key clients must send; generated and printed when empty."),
    Setting("SIMULATOR_SEED", str, "", "A whole number that makes generated answers reproducible."),
    Setting("RECORDING_DIR", str, "recordings", "Folder of the recording files."),
    Setting("RECORDING_AUTOSAVE", bool, True, "Save each recorded interaction as it completes."),
    Setting("RECORDING_IGNORE_FIELDS", str, "", "Body fields, comma-separated, that do not tell recordings apart."),
    Setting("RECORDING_MATCH_API_VERSION", bool, False, "Tell recordings apart by api-version too."),
    Setting("REPLAY_TIMING", str, "recorded",
            "Replay pace: recorded (as recorded), model (the latency model) or none."),
    Setting("REPLAY_MISS_STATUS", str, "404", "HTTP status of the answer to a request with no recording."),
    Setting("EXTENSION_PATH", str, "", "Extension files or packages to load, separated by commas."),
    Setting("AZURE_OPENAI_ENDPOINT", str, "", "The Azure OpenAI endpoint to record from."),
    Setting("AZURE_OPENAI_KEY", str, "", "The Azure OpenAI key used when recording."),
    Setting("OPENAI_DEPLOYMENT_CONFIG_PATH", str, "", "JSON file describing the deployments."),
    Setting("ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS", bool, True,
            "Answer for deployment names the deployments file does not define."),
    Setting("DOC_INTELLIGENCE_RPS", str, "15", "Document Intelligence analyze requests per second; <= 0: no limit."),
    Setting("LOG_LEVEL", str, "INFO", "Log level of the simulator's own messages."),
    Setting("SIMULATOR_LATENCY", bool, True, "Simulate latency; off answers as fast as possible."),
    Setting("SIMULATOR_COMPLETION_TOKENS_MEAN", str, "150",
            "Mean length in tokens of an answer whose request sets no limit."),
    Setting("SIMULATOR_COMPLETION_TOKENS_STD_DEV", str, "50", "Standard deviation of that length."),
    Setting("SIMULATOR_TOOL_CALL_SHARE", str, "1",
            "Share (0 to 1) of tool_choice=auto requests that get a tool call instead of text."),
    _latency("CHAT_COMPLETIONS", "MEAN", "per completion token"),
    _latency("CHAT_COMPLETIONS", "STD_DEV", "per completion token"),
    _latency("COMPLETIONS", "MEAN", "per completion token"),
    _latency("COMPLETIONS", "STD_DEV", "per completion token"),
    _latency("EMBEDDINGS", "MEAN", "per request"),
    _latency("EMBEDDINGS", "STD_DEV", "per request"),
    Setting("RATE_LIMIT_REDIS_URL", str, "",
            "Redis URL (redis://host:port/db) where replicas keep one shared quota; empty: each process alone."),
    Setting("RATE_LIMIT_DEFAULT_RESERVATION", str, "4096",
            "Tokens a chat request without max_tokens reserves against the tokens-per-minute quota."),
    Setting("RATE_LIMIT_REQUEST_WINDOW_SECONDS", str, "10",
            "Window of the request limit: 10 (RPM/6 per 10 s) or 1 (RPM/60 per second)."),
    Setting("DOC_INTELLIGENCE_POLL_RPS", str, "50",
            "Document Intelligence result polls per second; <= 0: no limit."),
    Setting("RESPONSES_STORED", str, "1000",
            "Responses API: how many stored responses are kept (the newest) for retrieve and previous_response_id."),
    Setting("PROMPT_CACHE_IDLE_SECONDS", str, "300",
            "Seconds after which an unused prompt prefix leaves the prompt cache (cached_tokens)."),
]
BY_OPTION = {s.option: s for s in SETTINGS}


def env_default(setting: Setting) -> object:
    """The option's default from the environment; raises ConfigError naming the variable."""
    raw = os.environ.get(setting.env)
    if raw is None:
        return setting.default
    if setting.type is bool:
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise ConfigError(f"{setting.env}: expected true or false, got {raw!r}")
        return value in _TRUE
    return raw


def _float(setting: str, raw: str, *, low: float | None = 0.0, high: float | None = None) -> float | None:
    if raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{setting.upper()}: expected a number, got {raw!r}")
    if low is not None and value < low:
        raise ConfigError(f"{setting.upper()}: must not be below {low:g}, got {raw}")
    if high is not None and value > high:
        raise ConfigError(f"{setting.upper()}: must not be above {high:g}, got {raw}")
    return value


def apply(options, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the options and copy them into `config`; raises ConfigError, changing nothing."""
    mode = options.simulator_mode.strip().lower()
    if mode not in cfg.MODES:
        raise ConfigError(f"SIMULATOR_MODE: unknown mode {options.simulator_mode!r}; use generate, record or replay")
    seed = options.simulator_seed.strip()
    if seed and not re.fullmatch(r"-?[0-9]+", seed):
        raise ConfigError(f"SIMULATOR_SEED: expected a whole number, got {seed!r}")
    level = options.log_level.strip().upper()
    if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
        raise ConfigError(f"LOG_LEVEL: unknown level {options.log_level!r}; use DEBUG, INFO, WARNING or ERROR")
    rps = _float("doc_intelligence_rps", options.doc_intelligence_rps, low=None)
    completion_mean = _float("simulator_completion_tokens_mean", options.simulator_completion_tokens_mean)
    completion_std = _float("simulator_completion_tokens_std_dev", options.simulator_completion_tokens_std_dev)
    share = _float("simulator_tool_call_share", options.simulator_tool_call_share, high=1.0)
    latency = {}
    for op in ("chat_completions", "completions", "embeddings"):
        mean = _float(f"latency_openai_{op}_mean", getattr(options, f"latency_openai_{op}_mean"))
        std = _float(f"latency_openai_{op}_std_dev", getattr(options, f"latency_openai_{op}_std_dev"))
        if mean is not None:
            latency[op] = cfg.Normal(mean, std or 0.0)
    timing = options.replay_timing.strip().lower()
    if timing not in ("recorded", "model", "none"):
        raise ConfigError(f"REPLAY_TIMING: unknown timing {options.replay_timing!r}; use recorded, model or none")
    miss = options.replay_miss_status.strip()
    if not re.fullmatch(r"[0-9]{3}", miss) or not 400 <= int(miss) <= 599:
        raise ConfigError(f"REPLAY_MISS_STATUS: expected an HTTP error status (400-599), got {miss!r}")
    reservation = _float("rate_limit_default_reservation", options.rate_limit_default_reservation)
    if reservation is not None and reservation != int(reservation):
        raise ConfigError(f"RATE_LIMIT_DEFAULT_RESERVATION: expected a whole number, got "
                          f"{options.rate_limit_default_reservation!r}")
    window = _float("rate_limit_request_window_seconds", options.rate_limit_request_window_seconds, high=60.0)
    if window is not None and window <= 0:
        raise ConfigError("RATE_LIMIT_REQUEST_WINDOW_SECONDS: must be above 0 (Azure uses 10 or 1)")
    poll_rps = _float("doc_intelligence_poll_rps", options.doc_intelligence_poll_rps, low=None)
    stored = _float("responses_stored", options.responses_stored)
    if stored is not None and stored != int(stored):
        raise ConfigError(f"RESPONSES_STORED: expected a whole number, got {options.responses_stored!r}")
    cache_idle = _float("prompt_cache_idle_seconds", options.prompt_cache_idle_seconds)
    redis_url = options.rate_limit_redis_url.strip()
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"RATE_LIMIT_REDIS_URL: expected redis://host:port/db, rediss://… or unix://…, "
                          f"got {redis_url!r}")
    deployments = config.deployments
    if "openai_deployment_config_path" in updated:
        path = options.openai_deployment_config_path.strip()
        deployments = cfg.load_deployments_file(path) if path else cfg.default_deployments()

    # Everything checked: now change the shared config.
    config.mode = mode
    config.api_key = options.simulator_api_key or config.api_key or secrets.token_urlsafe(24)
    config.seed = int(seed) if seed else None
    config.deployments = deployments
    config.allow_undefined_deployments = options.allow_undefined_openai_deployments
    config.azure_openai_endpoint = options.azure_openai_endpoint.strip()
    config.azure_openai_key = options.azure_openai_key
    config.doc_intelligence_rps = 15.0 if rps is None else rps
    config.completion_tokens = cfg.Normal(150.0 if completion_mean is None else completion_mean,
                                          50.0 if completion_std is None else completion_std)
    config.tool_call_share = 1.0 if share is None else share
    config.latency_enabled = options.simulator_latency
    config.latency_defaults = latency
    config.recording.dir = options.recording_dir
    config.recording.autosave = options.recording_autosave
    config.recording.ignore_fields = tuple(f.strip() for f in options.recording_ignore_fields.split(",") if f.strip())
    config.recording.match_api_version = options.recording_match_api_version
    config.recording.replay_timing = timing
    config.recording.miss_status = int(miss)
    config.rate_limit_redis_url = redis_url
    config.rate_limit_default_reservation = 4096 if reservation is None else int(reservation)
    config.rate_limit_request_window_s = 10.0 if window is None else window
    config.doc_intelligence_poll_rps = 50.0 if poll_rps is None else poll_rps
    config.stored_responses.capacity = 1000 if stored is None else int(stored)
    config.prompt_cache.idle_s = 300.0 if cache_idle is None else cache_idle
    logging.getLogger("aoai").setLevel(level)


def preflight(startup: Startup) -> None:
    """Check the settings as the environment gives them, before the rest of the simulator is
    even imported: mitmproxy has its listener up by the time a script loads, so the sooner a
    start that cannot succeed ends, the fewer clients meet a port that is about to close.
    (Values set with --set are checked when they are applied, as always.)"""
    try:
        values = {s.option: env_default(s) for s in SETTINGS}
        apply(SimpleNamespace(**values), SimulatorConfig(), set(BY_OPTION))
        for path in extensions_paths(values["extension_path"]):
            if not os.path.exists(os.path.expanduser(path)):
                raise ConfigError(f"EXTENSION_PATH: {path}: no such file or folder")
    except ConfigError as e:
        startup.refuse(str(e))


def extensions_paths(value: str) -> list[str]:
    """EXTENSION_PATH: paths separated by commas or the OS path separator."""
    return [p.strip() for p in re.split(rf"[,{re.escape(os.pathsep)}]", value) if p.strip()]


class Settings:
    def __init__(self, config: SimulatorConfig, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.replace_default_listener = False

    def load(self, loader):
        for s in SETTINGS:
            try:
                default = env_default(s)
            except ConfigError as e:
                self.env_error = self.env_error or str(e)
                default = s.default
            loader.add_option(s.option, s.type, default, f"{s.help} (env {s.env})")
        self._default_proxy_options()

    def _default_proxy_options(self) -> None:
        """Give a bare `mitmdump -s addons/simulator.py` the simulator's listener."""
        # Streamed bodies are kept so mitmweb shows them like any other.
        updates: dict = {"connection_strategy": "lazy", "keep_host_header": True, "store_streamed_bodies": True}
        if ctx.options.mode == ["regular"]:
            endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT", "").strip() or PLACEHOLDER_ENDPOINT
            updates["mode"] = [f"reverse:{endpoint}"]
        if ctx.options.listen_port is None:
            updates["listen_port"] = DEFAULT_PORT
        self.replace_default_listener = "mode" in updates or "listen_port" in updates
        if self.replace_default_listener:
            # mitmproxy starts its listener before scripts load; we replace it in running().
            for name in internals.LISTENER_LOGGERS:
                logging.getLogger(name).addFilter(internals.hide_listening_line)
        try:
            ctx.options.update(**updates)
        except exceptions.OptionsError as e:
            self.env_error = self.env_error or f"AZURE_OPENAI_ENDPOINT: {e}"

    def configure(self, updated: set[str]):
        if not updated & (set(BY_OPTION) | {"scripts"}):
            return
        try:
            if self.env_error:
                raise ConfigError(self.env_error)
            apply(ctx.options, self.config, updated)
        except ConfigError as e:
            self.startup.refuse(str(e))  # at start-up: one line, before the port opens

    async def running(self):
        self.startup.running = True
        gone = internals.missing()
        if gone:
            logger.warning("this mitmproxy lacks what the simulator's fast paths use (%s): streams go through "
                           "the slower loopback path", "; ".join(gone))
        # Encodings and filler text are made before the first request, so it is as fast as the
        # rest; not at load, so a start that fails on its settings says so at once (mitmproxy
        # exits before `running` when an error was logged).
        for name in tokens.ENCODINGS:
            text.corpus(name)
        # What exists now (mitmproxy, the encodings, the corpora) lives as long as the process;
        # frozen, the garbage collector stops walking it on every full collection.
        gc.freeze()
        proxyserver = ctx.master.addons.get("proxyserver")
        if self.replace_default_listener and proxyserver is not None:
            await proxyserver.setup_servers()
            for name in internals.LISTENER_LOGGERS:
                logging.getLogger(name).removeFilter(internals.hide_listening_line)
        addresses = proxyserver.listen_addrs() if proxyserver else []
        logger.info(banner(self.config, addresses))


def banner(config: SimulatorConfig, addresses: list) -> str:
    host, port = "localhost", DEFAULT_PORT
    if addresses:
        bound = addresses[0][0]
        port = addresses[0][1]
        host = bound if bound not in ("0.0.0.0", "::", "") else "localhost"
    base = f"http://{host}:{port}"
    chat = next((d for d in config.deployments.values() if d.model.kind == "chat"), None)
    name = chat.name if chat else "gpt-4o"
    deployments = ", ".join(f"{d.name} ({d.model.name})" for d in config.deployments.values()) or "none"
    body = '{"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'
    url = f"{base}/openai/deployments/{name}/chat/completions?api-version=2024-10-21"
    curl = (f"curl {shlex.quote(url)} "
            f"-H 'api-key: {config.api_key}' -H 'content-type: application/json' -d {shlex.quote(body)}")
    return "\n".join([
        f"Azure OpenAI simulator: mode {config.mode}, listening on {base}",
        f"  API key:     {config.api_key}",
        f"  Deployments: {deployments}"
        + (" (undefined names answered too)" if config.allow_undefined_deployments else ""),
        f"  Try:         {curl}",
    ])
