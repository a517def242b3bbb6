"""The simulator's shared configuration and the per-request context every stage reads.

`SimulatorConfig` is the object extensions receive in `initialize(config)`. It is built from
the mitmproxy options (which default to the environment) by the `Settings` addon and read by
every other stage; nothing here touches mitmproxy's hooks. It holds values only: what the
simulator keeps while it runs (stores, counters, draws) is in runtime/services.py.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch.runner import Pace
from ..openai import catalogue
from ..openai.catalogue import Model, Normal
from ..openai.content_filter import FilterSpecError, Policy, parse_policy
from .bounds import Bounds
from .entra import TokenPolicy
from .faults import FaultError, FaultProfile, parse_profile
from .labels import MAX_LABEL_CHARS, DeploymentLabels, capped
from .limits.quota import DEFAULT_DOC_INTELLIGENCE_POLL_RPS, DEFAULT_REQUEST_WINDOW, DEFAULT_RESERVATION
from .prompt_cache import DEFAULT_IDLE_S
from .stored import DEFAULT_CAPACITY

MODES = ("generate", "record", "replay")
DATA_FOLDER_NAME = "simulator-data"  # the data folder's name beside the recordings, unless SIMULATOR_DATA_DIR says
# The files of the Files and Batch APIs together: fifty of Azure's largest (200 MB) files. Azure
# bounds the count, not the bytes; a simulator sharing a disk with its host needs both.
DEFAULT_DATA_MAX_BYTES = 10 * 1024**3
REQUEST_WINDOWS = ("10", "1")  # seconds of Azure's request-limit windows (RATE_LIMIT_REQUEST_WINDOW_SECONDS)
STANDARD_SKUS = ("Standard", "GlobalStandard", "DataZoneStandard")
PROVISIONED_SKUS = ("ProvisionedManaged", "GlobalProvisionedManaged", "DataZoneProvisionedManaged")
BATCH_SKUS = ("GlobalBatch", "DataZoneBatch")  # answer batch jobs, under an enqueued-token quota
# Enqueued tokens a batch deployment holds at most (Azure's Default tier, global-batch-limits);
# a model not listed gets the smallest of them.
ENQUEUED_TOKENS = {"gpt-4o": 200_000_000, "gpt-4o-mini": 1_000_000_000, "gpt-4.1": 200_000_000, "gpt-5": 200_000_000}
DEFAULT_ENQUEUED_TOKENS = 200_000_000
MAX_ENQUEUED_TOKENS = 10**15

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the value and the problem."""


def redis_url_check(variable: str, url: str | None) -> None:
    """Refuse a Redis URL in one line naming the variable; raises ConfigError."""
    if url and not url.strip().startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{variable}: expected redis://host:port/db, rediss://… or unix://…, got {url!r}")


@dataclass
class Latency:
    """Timing of one deployment: time to first token, gap between tokens, whole request."""

    time_to_first_token_ms: Normal
    inter_token_ms: Normal
    request_ms: Normal

    def to_json(self) -> dict[str, Any]:
        return {
            "timeToFirstTokenMs": self.time_to_first_token_ms.to_json(),
            "interTokenMs": self.inter_token_ms.to_json(),
            "requestMs": self.request_ms.to_json(),
        }


# A chat answer calls up to this many tools at once unless its deployment says otherwise.
DEFAULT_PARALLEL_TOOL_CALLS = 3
MAX_PARALLEL_TOOL_CALLS = 128  # Azure takes at most 128 tools in a request


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
    sku: str = "Standard"  # a provisioned SKU is limited by its utilization, not by TPM/RPM
    ptu: int = 0  # provisioned throughput units, for a provisioned SKU
    input_tpm_per_ptu: int | None = None  # None: PTU_INPUT_TPM_PER_PTU, else the catalogue's
    spillover: str | None = None  # a provisioned deployment: the standard deployment its overflow goes to
    enqueued_tokens: int | None = None  # a batch deployment's enqueued-token quota (None: the model's default)
    defined: bool = True  # False for a deployment made up for an undefined name
    content_filter: Policy | None = None  # None: Azure's default policy, no rules
    faults: FaultProfile | None = None  # None: the default profile (the file's "*" entry)
    # Most tool calls one chat answer makes when the request allows parallel calls.
    max_parallel_tool_calls: int = DEFAULT_PARALLEL_TOOL_CALLS
    # An undefined deployment's label, given by SimulatorConfig.deployment (see `label`).
    undefined_label: str | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """What metrics, counters and rate-limit windows know it by (runtime/labels.py): its
        name, at most 128 characters; for an undefined deployment, perhaps `(other)`."""
        if self.undefined_label is not None:
            return self.undefined_label
        name = self.name
        return name if len(name) <= MAX_LABEL_CHARS else capped(name)  # asked for every request

    def to_json(self) -> dict[str, Any]:
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
        if self.sku != "Standard":
            out["sku"] = self.sku
        if self.provisioned:
            out["ptu"] = self.ptu
            if self.input_tpm_per_ptu is not None:
                out["inputTpmPerPtu"] = self.input_tpm_per_ptu
            if self.spillover is not None:
                out["spillover"] = self.spillover
        if self.enqueued_tokens is not None:
            out["enqueuedTokens"] = self.enqueued_tokens
        if self.content_filter is not None:
            out["contentFilter"] = self.content_filter.to_json()
        if self.faults is not None:
            out["faults"] = self.faults.to_json()
        if self.max_parallel_tool_calls != DEFAULT_PARALLEL_TOOL_CALLS:
            out["maxParallelToolCalls"] = self.max_parallel_tool_calls
        return out

    @property
    def provisioned(self) -> bool:
        return self.sku in PROVISIONED_SKUS

    @property
    def global_batch(self) -> bool:
        return self.sku in BATCH_SKUS

    @property
    def enqueued_limit(self) -> int:
        """The tokens this batch deployment's unfinished jobs may hold together."""
        if self.enqueued_tokens is not None:
            return self.enqueued_tokens
        return ENQUEUED_TOKENS.get(self.model.name, DEFAULT_ENQUEUED_TOKENS)

    @property
    def pace(self) -> float:
        """Seconds an audio answer takes per second of audio."""
        return self.model.audio_pace if self.audio_pace is None else self.audio_pace


def default_deployments() -> dict[str, Deployment]:
    """A chat, an instruct and an embedding deployment, named after their models."""
    names = ("gpt-4o", "gpt-4o-mini", "gpt-35-turbo-instruct", "text-embedding-3-small", "text-embedding-ada-002")
    return {n: Deployment(n, catalogue.MODELS[n]) for n in names}


# What a configured number may be. Whole numbers fit a signed 64-bit integer (what every JSON
# reader, Redis and the views' serializer hold); the rest are far beyond any real deployment
# yet small enough that sums, products and sleeps made of them stay finite.
MAX_WHOLE = 2**63 - 1
MAX_MS = 3_600_000  # a latency: one hour, in milliseconds
MAX_AUDIO_PACE = 1000  # seconds of work per second of audio
MAX_PTU = 100_000
MAX_TPM_PER_PTU = 1_000_000_000


def ptu_input_tpm(pairs: Sequence[str]) -> dict[str, int]:
    """PTU_INPUT_TPM_PER_PTU: `model=tokens` pairs, by model; raises ConfigError."""
    figures: dict[str, int] = {}
    for pair in (p.strip() for p in pairs if p.strip()):
        name, sep, value = (part.strip() for part in pair.partition("="))
        model = catalogue.find_model(name)
        if not sep or not re.fullmatch(r"[0-9]{1,10}", value) or not 1 <= int(value) <= MAX_TPM_PER_PTU:
            raise ConfigError(
                f"PTU_INPUT_TPM_PER_PTU: expected model=tokens with a whole number of tokens "
                f"from 1 to {MAX_TPM_PER_PTU}, got {pair!r}"
            )
        if model is None:
            raise ConfigError(f"PTU_INPUT_TPM_PER_PTU: unknown model {name!r}")
        figures[model.name] = int(value)
    return figures


def _number(where: str, value: Any, *, integer: bool = False, high: float | None = None) -> Any:
    """A non-negative number (whole with `integer`) no larger than `high` (a 64-bit integer's
    largest, for whole numbers, when not given); raises ConfigError naming `where`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ConfigError(f"{where}: expected a number, got {_shown(value)}")
    if value < 0:
        raise ConfigError(f"{where}: must not be negative, got {_shown(value)}")
    if integer and int(value) != value:
        raise ConfigError(f"{where}: expected a whole number, got {_shown(value)}")
    top = high if high is not None else (MAX_WHOLE if integer else None)
    if top is not None and value > top:
        raise ConfigError(f"{where}: must not be above {top}, got {_shown(value)}")
    return int(value) if integer else float(value)


def _shown(value: Any) -> str:
    """A value as the error quotes it: JSON, cut short (a body may hold anything)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _normal(where: str, value: Any) -> Normal:
    if not isinstance(value, dict) or "mean" not in value:
        raise ConfigError(f'{where}: expected {{"mean": ms, "stdDev": ms}}')
    unknown = set(value) - {"mean", "stdDev"}
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    return Normal(
        _number(f"{where}.mean", value["mean"], high=MAX_MS),
        _number(f"{where}.stdDev", value.get("stdDev", 0), high=MAX_MS),
    )


_DEPLOYMENT_FIELDS = {
    "model",
    "tokensPerMinute",
    "requestsPerMinute",
    "embeddingSize",
    "latency",
    "maxConcurrentRequests",
    "audioPace",
    "sku",
    "ptu",
    "inputTpmPerPtu",
    "spillover",
    "enqueuedTokens",
    "contentFilter",
    "faults",
    "maxParallelToolCalls",
}
_LATENCY_FIELDS = {
    "timeToFirstTokenMs": "time_to_first_token_ms",
    "interTokenMs": "inter_token_ms",
    "requestMs": "request_ms",
}


def parse_deployment(name: str, spec: Any, where: str) -> Deployment:
    """One entry of the deployments file; `where` prefixes every error message."""
    if not isinstance(spec, dict):
        raise ConfigError(f'{where}: expected an object with at least "model"')
    unknown = set(spec) - _DEPLOYMENT_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    model_name = spec.get("model")
    if not isinstance(model_name, str):
        raise ConfigError(f'{where}.model: required, the name of a model such as "gpt-4o"')
    model = catalogue.find_model(model_name)
    if model is None:
        raise ConfigError(f"{where}.model: unknown model {model_name!r}; known: {', '.join(catalogue.MODELS)}")
    dep = Deployment(name, model)
    if "faults" in spec:
        dep.faults = faults_of(spec["faults"], f"{where}.faults")
    if "tokensPerMinute" in spec:
        dep.tokens_per_minute = _number(f"{where}.tokensPerMinute", spec["tokensPerMinute"], integer=True)
    if "requestsPerMinute" in spec:
        dep.requests_per_minute = _number(f"{where}.requestsPerMinute", spec["requestsPerMinute"], integer=True)
    elif model.requests_per_minute:
        dep.requests_per_minute = model.requests_per_minute  # audio and image models: Azure's default quota
    if "tokensPerMinute" not in spec and model.tokens_per_minute:
        dep.tokens_per_minute = model.tokens_per_minute  # realtime models: Azure's default token quota
    if "audioPace" in spec:
        if not model.audio_pace:
            raise ConfigError(f"{where}.audioPace: {model.name} is not an audio model")
        dep.audio_pace = _number(f"{where}.audioPace", spec["audioPace"], high=MAX_AUDIO_PACE)
    if "maxParallelToolCalls" in spec:
        most = _number(f"{where}.maxParallelToolCalls", spec["maxParallelToolCalls"], integer=True)
        if not 1 <= most <= MAX_PARALLEL_TOOL_CALLS:
            raise ConfigError(f"{where}.maxParallelToolCalls: must be between 1 and {MAX_PARALLEL_TOOL_CALLS}")
        dep.max_parallel_tool_calls = most
    if "maxConcurrentRequests" in spec:
        dep.max_concurrent_requests = _number(
            f"{where}.maxConcurrentRequests", spec["maxConcurrentRequests"], integer=True
        )
    if "embeddingSize" in spec:
        size = _number(f"{where}.embeddingSize", spec["embeddingSize"], integer=True)
        if model.kind != catalogue.EMBEDDING:
            raise ConfigError(f"{where}.embeddingSize: {model.name} is not an embedding model")
        if not 1 <= size <= model.embedding_size:
            raise ConfigError(f"{where}.embeddingSize: must be between 1 and {model.embedding_size}")
        dep.embedding_size = size
    _parse_sku(dep, spec, where)
    if "contentFilter" in spec:
        dep.content_filter = parse_content_filter(spec["contentFilter"], f"{where}.contentFilter")
    if "latency" in spec:
        lat = spec["latency"]
        if not isinstance(lat, dict):
            raise ConfigError(f"{where}.latency: expected an object")
        unknown = set(lat) - set(_LATENCY_FIELDS)
        if unknown:
            raise ConfigError(f"{where}.latency: unknown field {sorted(unknown)[0]!r}")
        base = model_latency(model)
        dep.latency = Latency(
            **{
                attr: _normal(f"{where}.latency.{key}", lat[key]) if key in lat else getattr(base, attr)
                for key, attr in _LATENCY_FIELDS.items()
            }
        )
    return dep


def _parse_sku(dep: Deployment, spec: dict[str, Any], where: str) -> None:
    """`sku`, `ptu` and `inputTpmPerPtu`: a provisioned deployment has PTUs instead of TPM/RPM."""
    sku = spec.get("sku", "Standard")
    skus = STANDARD_SKUS + PROVISIONED_SKUS + BATCH_SKUS
    if sku not in skus:
        raise ConfigError(f"{where}.sku: unknown SKU {json.dumps(sku)}; use one of {', '.join(skus)}")
    dep.sku = sku
    if "enqueuedTokens" in spec:
        if not dep.global_batch:
            raise ConfigError(f'{where}.enqueuedTokens: only for a batch SKU ("sku": "GlobalBatch")')
        tokens = _number(f"{where}.enqueuedTokens", spec["enqueuedTokens"], integer=True, high=MAX_ENQUEUED_TOKENS)
        if tokens < 1:
            raise ConfigError(f"{where}.enqueuedTokens: must be at least 1, got {tokens}")
        dep.enqueued_tokens = tokens
    if not dep.provisioned:
        for key in ("ptu", "inputTpmPerPtu", "spillover"):
            if key in spec:
                raise ConfigError(f'{where}.{key}: only for a provisioned SKU ("sku": "ProvisionedManaged")')
        return
    if dep.model.kind not in catalogue.PROVISIONED_KINDS:
        raise ConfigError(
            f"{where}.sku: {dep.model.name} has no provisioned deployments; they run chat and completions models"
        )
    for key in ("tokensPerMinute", "requestsPerMinute"):
        if key in spec:
            raise ConfigError(
                f'{where}.{key}: a provisioned deployment has no {key} quota; its throughput comes from "ptu"'
            )
    dep.tokens_per_minute, dep.requests_per_minute = 0, None
    if "ptu" not in spec:
        raise ConfigError(f"{where}.ptu: required for a provisioned SKU, the number of PTUs (e.g. 15)")
    ptu = _number(f"{where}.ptu", spec["ptu"], integer=True, high=MAX_PTU)
    if ptu < 1:
        raise ConfigError(f"{where}.ptu: must be at least 1, got {ptu}")
    dep.ptu = ptu
    if "inputTpmPerPtu" in spec:
        per_ptu = _number(f"{where}.inputTpmPerPtu", spec["inputTpmPerPtu"], integer=True, high=MAX_TPM_PER_PTU)
        if per_ptu < 1:
            raise ConfigError(f"{where}.inputTpmPerPtu: must be at least 1, got {per_ptu}")
        dep.input_tpm_per_ptu = per_ptu
    if "spillover" in spec:
        if not isinstance(spec["spillover"], str) or not spec["spillover"]:
            raise ConfigError(
                f"{where}.spillover: expected the name of a standard deployment, got {_shown(spec['spillover'])}"
            )
        dep.spillover = spec["spillover"]
    sizes = catalogue.provisioned(dep.model)
    if ptu < sizes.minimum_ptu or ptu % sizes.ptu_increment:
        # Azure would refuse to create it; the simulator runs it anyway (a test may want a small one).
        logger.warning(
            "%s.ptu: Azure deploys %s with at least %d PTUs, in steps of %d; %d is used as given",
            where,
            dep.model.name,
            sizes.minimum_ptu,
            sizes.ptu_increment,
            ptu,
        )


def parse_content_filter(spec: Any, where: str) -> Policy:
    try:
        return parse_policy(spec, where)
    except FilterSpecError as e:
        raise ConfigError(str(e)) from None


def faults_of(value: Any, where: str) -> FaultProfile:
    try:
        return parse_profile(value, where)
    except FaultError as e:
        raise ConfigError(str(e)) from None


DEFAULTS_KEY = "*"  # the deployments file's entry for what every deployment without its own gets


def parse_defaults(spec: Any, where: str) -> FaultProfile | None:
    """The `"*"` entry: `{"faults": [...]}` for every deployment that declares none."""
    if not isinstance(spec, dict) or set(spec) - {"faults"}:
        raise ConfigError(f'{where}: the "*" entry holds only {{"faults": [...]}}, the default faults')
    return faults_of(spec["faults"], f"{where}.faults") if "faults" in spec else None


def parse_deployments(data: Any, where: str) -> dict[str, Deployment]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object mapping deployment names to settings")
    if DEFAULTS_KEY in data:
        parse_defaults(data[DEFAULTS_KEY], f"{where}: {DEFAULTS_KEY}")  # checked; load_deployments keeps it
    deployments = {
        name: parse_deployment(name, spec, f"{where}: {name}") for name, spec in data.items() if name != DEFAULTS_KEY
    }
    check_spillover(deployments, where)
    return deployments


# The standard SKU with the same data-processing level as each provisioned one.
SPILLOVER_SKU = {
    "ProvisionedManaged": "Standard",
    "GlobalProvisionedManaged": "GlobalStandard",
    "DataZoneProvisionedManaged": "DataZoneStandard",
}


def spillover_unfit(provisioned: Deployment, standard: Deployment | None, name: str) -> str | None:
    """Why `standard` (the deployment called `name`) cannot take `provisioned`'s overflow, or None."""
    if standard is None or not standard.defined:
        return f"no deployment {name!r} is defined"
    if standard.provisioned:
        return f"{name!r} is a provisioned deployment; spillover goes to a standard one"
    if standard.model.name != provisioned.model.name:
        return f"{name!r} runs {standard.model.name}, not {provisioned.model.name}"
    wanted = SPILLOVER_SKU[provisioned.sku]
    if standard.sku != wanted:
        return f"{name!r} is {standard.sku}; a {provisioned.sku} deployment spills to a {wanted} one"
    return None


def check_spillover(deployments: dict[str, Deployment], where: str) -> None:
    """Every provisioned deployment's `spillover` names a standard deployment that can take its
    overflow (spillover_unfit says what can); raises ConfigError."""
    for name, dep in deployments.items():
        if dep.spillover is not None:
            problem = spillover_unfit(dep, deployments.get(dep.spillover), dep.spillover)
            if problem is not None:
                raise ConfigError(f"{where}: {name}.spillover: {problem}")


def load_deployments_file(path: str) -> dict[str, Deployment]:
    return load_deployments(path)[0]


def load_deployments(path: str) -> tuple[dict[str, Deployment], FaultProfile | None]:
    """The deployments file's deployments, and its default faults (the `"*"` entry)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the deployments file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    deployments = parse_deployments(data, path)
    defaults = data.get(DEFAULTS_KEY)
    return deployments, parse_defaults(defaults, f"{path}: {DEFAULTS_KEY}") if defaults is not None else None


def model_latency(model: Model) -> Latency:
    """A model's catalogue latency, used where the deployment sets none."""
    return Latency(
        Normal(model.ttft_ms, model.ttft_ms / 6),
        Normal(model.itl_ms, model.itl_ms / 4),
        Normal(model.request_ms, model.request_ms / 5),
    )


CASSETTE_MODES = ("none", "once", "new_episodes", "all")  # as vcrpy names its record modes


@dataclass
class Cassette:
    """One file every interaction is read from and written to, in place of RECORDING_DIR's
    (PUT /++/cassette), and what its record mode makes of it when it is put in."""

    path: Path
    record_mode: str  # one of CASSETTE_MODES
    recording: bool  # forwards what it does not hold upstream, and appends it
    answers: bool  # answers from what it holds ("all": never, it is being written anew)
    home_mode: str  # SIMULATOR_MODE, back in force when the cassette is taken out

    @classmethod
    def put_in(cls, path: Path, record_mode: str, home_mode: str) -> Cassette:
        recording = record_mode in ("new_episodes", "all") or (record_mode == "once" and not path.is_file())
        return cls(path, record_mode, recording, record_mode != "all", home_mode)

    @property
    def mode(self) -> str:
        """The simulator's mode while it is in: record or replay."""
        return "record" if self.recording else "replay"


@dataclass
class RecordingConfig:
    dir: str = "recordings"
    autosave: bool = True
    # Functions tried in order to forward a request in record mode (extension contract).
    forwarders: list[Callable[..., Any]] = field(default_factory=list)
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
    doc_intelligence_rps: float = 15.0
    seed: int | None = None
    # Answer length when the request sets no limit (tokens).
    completion_tokens: Normal = field(default_factory=lambda: Normal(150.0, 50.0))
    # Share of `tool_choice: auto` requests that get a tool call rather than text.
    tool_call_share: float = 1.0
    latency_enabled: bool = True
    # Per-token (chat, completions) and per-request (embeddings) defaults, milliseconds.
    latency_defaults: dict[str, Normal] = field(default_factory=dict)
    bounds: Bounds = field(default_factory=Bounds)  # every limit on what a client can make us spend
    region: str = "eastus"
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    # Generators tried in order in generate mode: f(RequestContext) -> Response | None.
    generators: list[Callable[..., Any]] = field(default_factory=list)
    # Realtime sessions: f(SessionTicket, emit) -> a session (runtime/realtime_server.py); None:
    # the simulator's own. An extension's initialize(config) may set it.
    realtime_sessions: Callable[..., Any] | None = None
    bearer_tokens: set[str] = field(default_factory=set)
    # How bearer JWTs (Entra ID tokens) are judged: SIMULATOR_ENTRA_* settings.
    entra: TokenPolicy = field(default_factory=TokenPolicy)
    # The Redis replicas share state through (SIMULATOR_REDIS_URL), and the older spelling that
    # shared only the rate-limit windows (RATE_LIMIT_REDIS_URL); either shares everything now.
    simulator_redis_url: str = ""
    rate_limit_redis_url: str = ""
    # Tokens a chat request without max_tokens / max_completion_tokens reserves (limits/quota.py).
    rate_limit_default_reservation: int = DEFAULT_RESERVATION
    # Length of the request-limit window: 10 s (RPM/6 each) or 1 s (RPM/60 each).
    rate_limit_request_window_s: float = DEFAULT_REQUEST_WINDOW
    doc_intelligence_poll_rps: float = DEFAULT_DOC_INTELLIGENCE_POLL_RPS
    # Input tokens per minute per PTU by model, replacing the catalogue's (PTU_INPUT_TPM_PER_PTU).
    ptu_input_tpm: dict[str, int] = field(default_factory=dict)
    # Other workers of the same simulator (scripts/workers.py): management changes reach them too.
    peers: tuple[str, ...] = ()
    worker: str = ""  # this worker's name, when there are several
    peer_secret: str = ""  # SIMULATOR_PEER_SECRET: what calls between workers carry (a client cannot)
    # Responses kept for retrieve, input_items and previous_response_id (RESPONSES_STORED, the newest N).
    responses_stored: int = DEFAULT_CAPACITY
    # How long a prompt prefix stays in the prompt cache unused (PROMPT_CACHE_IDLE_SECONDS).
    prompt_cache_idle_s: float = DEFAULT_IDLE_S
    # The faults of every deployment that declares none (the deployments file's "*" entry).
    default_faults: FaultProfile | None = None
    # Where uploaded files and batch jobs are kept (SIMULATOR_DATA_DIR; "": beside the recordings),
    # and the most bytes their files may take together (SIMULATOR_DATA_MAX_BYTES).
    data_dir: str = ""
    data_max_bytes: int = DEFAULT_DATA_MAX_BYTES
    files_max: int = 10_000  # files kept at most (Azure: 10,000 when they expire)
    files_max_without_expiry: int = 500  # of them, files that never expire (Azure: 500)
    batch_pace: Pace = field(default_factory=Pace)  # BATCH_*_SECONDS: how long a job's steps take
    # PUT /++/cassette: while one is in, `mode` is its record or replay mode (SIMULATOR_MODE
    # waits in `cassette.home_mode`), and its one file holds every recording.
    cassette: Cassette | None = None

    @property
    def configured_mode(self) -> str:
        """SIMULATOR_MODE (as PATCH /++/config last set it), whether or not a cassette is in."""
        return self.cassette.home_mode if self.cassette is not None else self.mode

    @property
    def redis_url(self) -> str:
        """The Redis replicas share state and quotas through; "" when each process is alone."""
        return self.simulator_redis_url or self.rate_limit_redis_url

    @property
    def redis_variable(self) -> str:
        """The setting `redis_url` comes from, for messages."""
        return "SIMULATOR_REDIS_URL" if self.simulator_redis_url else "RATE_LIMIT_REDIS_URL"

    @property
    def data_folder(self) -> Path:
        """The data folder: SIMULATOR_DATA_DIR, else `simulator-data` beside the recordings folder."""
        if self.data_dir:
            return Path(self.data_dir)
        return Path(self.recording.dir).parent / DATA_FOLDER_NAME

    @property
    def max_body_bytes(self) -> int:
        return self.bounds.max_body_bytes

    def auth_bearer_token(self, token: str) -> None:
        """Accept `Authorization: Bearer <token>` as well as the API key (extension contract)."""
        self.bearer_tokens.add(token)

    def replace_generator(self, name: str, generator: Callable[..., Any]) -> None:
        """Put `generator` where the generator called `name` was (e.g. "openai_chat")."""
        for i, existing in enumerate(self.generators):
            if getattr(existing, "__name__", None) == name:
                self.generators[i] = generator
                return
        raise KeyError(f"no generator called {name!r}; there are {[g.__name__ for g in self.generators]}")

    def remove_generator(self, name: str) -> None:
        self.generators[:] = [g for g in self.generators if getattr(g, "__name__", None) != name]

    def input_tpm_per_ptu(self, deployment: Deployment) -> int:
        """A provisioned deployment's input tokens per minute per PTU: its own figure, else
        PTU_INPUT_TPM_PER_PTU's for its model, else the catalogue's."""
        if deployment.input_tpm_per_ptu is not None:
            return deployment.input_tpm_per_ptu
        model = deployment.model
        return self.ptu_input_tpm.get(model.name) or catalogue.provisioned(model).input_tpm_per_ptu

    def deployment(self, name: str, kind: str, labels: DeploymentLabels | None = None) -> Deployment | None:
        """The deployment called `name`; for an undefined name, a stand-in of the right kind
        when undefined deployments are allowed (counted under a label `labels` gives), else None."""
        dep = self.deployments.get(name)
        if dep is not None or not self.allow_undefined_deployments:
            return dep
        model = catalogue.find_model(name)
        if model is None or model.kind != kind:
            model = catalogue.MODELS[catalogue.DEFAULT_MODEL_FOR_KIND[kind]]
        label = labels.undefined(name) if labels is not None else None
        # Realtime models carry Azure's default token quota; other kinds have none unless declared.
        return Deployment(name, model, tokens_per_minute=model.tokens_per_minute, defined=False, undefined_label=label)
