"""The simulator's shared configuration and the per-request context every stage reads.

`SimulatorConfig` is the object extensions receive in `initialize(config)`. It is built from
the mitmproxy options (which default to the environment) by the `Settings` addon and read by
every other stage; nothing here touches mitmproxy's hooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..openai import catalogue
from ..openai.catalogue import Model, Normal
from .entra import TokenPolicy
from .prompt_cache import PromptCache
from .stored import ResponseStore

MODES = ("generate", "record", "replay")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the value and the problem."""


@dataclass
class Latency:
    """Timing of one deployment: time to first token, gap between tokens, whole request."""

    time_to_first_token_ms: Normal
    inter_token_ms: Normal
    request_ms: Normal

    def to_json(self) -> dict:
        return {
            "timeToFirstTokenMs": self.time_to_first_token_ms.to_json(),
            "interTokenMs": self.inter_token_ms.to_json(),
            "requestMs": self.request_ms.to_json(),
        }


@dataclass
class Deployment:
    name: str
    model: Model
    tokens_per_minute: int = 0
    requests_per_minute: int | None = None
    embedding_size: int | None = None
    latency: Latency | None = None  # None: the model's defaults and the LATENCY_* settings
    max_concurrent_requests: int = 0
    audio_pace: float | None = None  # None: the model's; seconds of work per second of audio
    defined: bool = True  # False for a deployment made up for an undefined name

    def to_json(self) -> dict:
        out: dict[str, Any] = {"model": self.model.name}
        if self.tokens_per_minute:
            out["tokensPerMinute"] = self.tokens_per_minute
        if self.requests_per_minute is not None:
            out["requestsPerMinute"] = self.requests_per_minute
        if self.embedding_size:
            out["embeddingSize"] = self.embedding_size
        if self.latency:
            out["latency"] = self.latency.to_json()
        if self.max_concurrent_requests:
            out["maxConcurrentRequests"] = self.max_concurrent_requests
        if self.audio_pace is not None:
            out["audioPace"] = self.audio_pace
        return out

    @property
    def pace(self) -> float:
        """Seconds an audio answer takes per second of audio."""
        return self.model.audio_pace if self.audio_pace is None else self.audio_pace


def default_deployments() -> dict[str, Deployment]:
    """A chat, an instruct and an embedding deployment, named after their models."""
    names = ("gpt-4o", "gpt-4o-mini", "gpt-35-turbo-instruct", "text-embedding-3-small",
             "text-embedding-ada-002")
    return {n: Deployment(n, catalogue.MODELS[n]) for n in names}


def _number(where: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {json.dumps(value)}")
    if value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value}")
    if integer and int(value) != value:
        raise ConfigError(f"{where}: expected a whole number, got {value}")
    return int(value) if integer else float(value)


def _normal(where: str, value: Any) -> Normal:
    if not isinstance(value, dict) or "mean" not in value:
        raise ConfigError(f"{where}: expected {{\"mean\": ms, \"stdDev\": ms}}")
    unknown = set(value) - {"mean", "stdDev"}
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    return Normal(_number(f"{where}.mean", value["mean"]),
                  _number(f"{where}.stdDev", value.get("stdDev", 0)))


_DEPLOYMENT_FIELDS = {"model", "tokensPerMinute", "requestsPerMinute", "embeddingSize", "latency",
                      "maxConcurrentRequests", "audioPace"}
_LATENCY_FIELDS = {"timeToFirstTokenMs": "time_to_first_token_ms", "interTokenMs": "inter_token_ms",
                   "requestMs": "request_ms"}


def parse_deployment(name: str, spec: Any, where: str) -> Deployment:
    """One entry of the deployments file; `where` prefixes every error message."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected an object with at least \"model\"")
    unknown = set(spec) - _DEPLOYMENT_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    model_name = spec.get("model")
    if not isinstance(model_name, str):
        raise ConfigError(f"{where}.model: required, the name of a model such as \"gpt-4o\"")
    model = catalogue.find_model(model_name)
    if model is None:
        raise ConfigError(f"{where}.model: unknown model {model_name!r}; known: {', '.join(catalogue.MODELS)}")
    dep = Deployment(name, model)
    if "tokensPerMinute" in spec:
        dep.tokens_per_minute = _number(f"{where}.tokensPerMinute", spec["tokensPerMinute"], integer=True)
    if "requestsPerMinute" in spec:
        dep.requests_per_minute = _number(f"{where}.requestsPerMinute", spec["requestsPerMinute"], integer=True)
    elif model.requests_per_minute:
        dep.requests_per_minute = model.requests_per_minute  # audio and image models: Azure's default quota
    if "audioPace" in spec:
        if not model.audio_pace:
            raise ConfigError(f"{where}.audioPace: {model.name} is not an audio model")
        dep.audio_pace = _number(f"{where}.audioPace", spec["audioPace"])
    if "maxConcurrentRequests" in spec:
        dep.max_concurrent_requests = _number(f"{where}.maxConcurrentRequests", spec["maxConcurrentRequests"],
                                              integer=True)
    if "embeddingSize" in spec:
        size = _number(f"{where}.embeddingSize", spec["embeddingSize"], integer=True)
        if model.kind != catalogue.EMBEDDING:
            raise ConfigError(f"{where}.embeddingSize: {model.name} is not an embedding model")
        if not 1 <= size <= model.embedding_size:
            raise ConfigError(f"{where}.embeddingSize: must be between 1 and {model.embedding_size}")
        dep.embedding_size = size
    if "latency" in spec:
        lat = spec["latency"]
        if not isinstance(lat, dict):
            raise ConfigError(f"{where}.latency: expected an object")
        unknown = set(lat) - set(_LATENCY_FIELDS)
        if unknown:
            raise ConfigError(f"{where}.latency: unknown field {sorted(unknown)[0]!r}")
        base = model_latency(model)
        dep.latency = Latency(**{
            attr: _normal(f"{where}.latency.{key}", lat[key]) if key in lat else getattr(base, attr)
            for key, attr in _LATENCY_FIELDS.items()
        })
    return dep


def parse_deployments(data: Any, where: str) -> dict[str, Deployment]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object mapping deployment names to settings")
    return {name: parse_deployment(name, spec, f"{where}: {name}") for name, spec in data.items()}


def load_deployments_file(path: str) -> dict[str, Deployment]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the deployments file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return parse_deployments(data, path)


def model_latency(model: Model) -> Latency:
    """A model's catalogue latency, used where the deployment sets none."""
    return Latency(Normal(model.ttft_ms, model.ttft_ms / 6), Normal(model.itl_ms, model.itl_ms / 4),
                   Normal(model.request_ms, model.request_ms / 5))


@dataclass
class RecordingConfig:
    dir: str = "recordings"
    autosave: bool = True
    # Functions tried in order to forward a request in record mode (extension contract).
    forwarders: list[Callable] = field(default_factory=list)
    ignore_fields: tuple[str, ...] = ()  # body fields that do not tell requests apart
    match_api_version: bool = False  # whether api-version tells requests apart
    file_suffix: str = ""  # in file names, so replicas sharing a folder write files of their own
    skip_broken: bool = False  # recordings that do not parse: skipped with a warning, else start-up stops
    replay_timing: str = "recorded"  # recorded, model (the latency model) or none
    miss_status: int = 404


@dataclass
class SimulatorConfig:
    mode: str = "generate"
    api_key: str = ""
    deployments: dict[str, Deployment] = field(default_factory=default_deployments)
    allow_undefined_deployments: bool = True
    azure_openai_endpoint: str = ""
    azure_openai_key: str = ""
    azure_openai_timeout_s: float = 300.0  # record mode: wait at most this for Azure to connect, or for each read
    doc_intelligence_rps: float = 15
    seed: int | None = None
    # Answer length when the request sets no limit (tokens).
    completion_tokens: Normal = field(default_factory=lambda: Normal(150, 50))
    # Share of `tool_choice: auto` requests that get a tool call rather than text.
    tool_call_share: float = 1.0
    latency_enabled: bool = True
    # Per-token (chat, completions) and per-request (embeddings) defaults, milliseconds.
    latency_defaults: dict[str, Normal] = field(default_factory=dict)
    max_body_bytes: int = 10 * 1024 * 1024
    region: str = "eastus"
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    # Generators tried in order in generate mode: f(RequestContext) -> Response | None.
    generators: list[Callable] = field(default_factory=list)
    bearer_tokens: set[str] = field(default_factory=set)
    # How bearer JWTs (Entra ID tokens) are judged: SIMULATOR_ENTRA_* settings.
    entra: TokenPolicy = field(default_factory=TokenPolicy)
    # Rate limits: windows shared through Redis when a URL is set, else in this process.
    rate_limit_redis_url: str = ""
    # Tokens a chat request without max_tokens / max_completion_tokens reserves (limits.py).
    rate_limit_default_reservation: int = 4096
    # Length of the request-limit window: 10 s (RPM/6 each) or 1 s (RPM/60 each).
    rate_limit_request_window_s: float = 10.0
    doc_intelligence_poll_rps: float = 50.0
    # Other workers of the same simulator (scripts/workers.py): management changes reach them too.
    peers: tuple[str, ...] = ()
    worker: str = ""  # this worker's name, when there are several
    # Responses kept for retrieve, input_items and previous_response_id (the newest N).
    stored_responses: ResponseStore = field(default_factory=ResponseStore)
    # Prompts seen recently, per deployment: what cached_tokens reports.
    prompt_cache: PromptCache = field(default_factory=PromptCache)

    def auth_bearer_token(self, token: str) -> None:
        """Accept `Authorization: Bearer <token>` as well as the API key (extension contract)."""
        self.bearer_tokens.add(token)

    def replace_generator(self, name: str, generator: Callable) -> None:
        """Put `generator` where the generator called `name` was (e.g. "openai_chat")."""
        for i, existing in enumerate(self.generators):
            if getattr(existing, "__name__", None) == name:
                self.generators[i] = generator
                return
        raise KeyError(f"no generator called {name!r}; there are {[g.__name__ for g in self.generators]}")

    def remove_generator(self, name: str) -> None:
        self.generators[:] = [g for g in self.generators if getattr(g, "__name__", None) != name]

    def deployment(self, name: str, kind: str) -> Deployment | None:
        """The deployment called `name`; for an undefined name, a stand-in of the right kind
        when undefined deployments are allowed, else None."""
        dep = self.deployments.get(name)
        if dep is not None or not self.allow_undefined_deployments:
            return dep
        model = catalogue.find_model(name)
        if model is None or model.kind != kind:
            model = catalogue.MODELS[catalogue.DEFAULT_MODEL_FOR_KIND[kind]]
        return Deployment(name, model, defined=False)
