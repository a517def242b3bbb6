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
import socket
from dataclasses import dataclass
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import ctx, exceptions

from ..openai import catalogue, text, tokens
from ..runtime import bounds as limits_table
from ..runtime import config as cfg
from ..runtime import entra, internals, upstream
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.extensions import extensions_paths
from ..runtime.startup import Startup

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8000
PLACEHOLDER_ENDPOINT = "https://azure-openai-endpoint.invalid"

PEER_SECRET_MIN = 16
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
    return Setting(
        f"LATENCY_OPENAI_{op}_{what}",
        str,
        "",
        f"{'Mean' if what == 'MEAN' else 'Standard deviation'} of the simulated latency of "
        f"{op.lower().replace('_', ' ')}, milliseconds {unit}. Empty: the model's default.",
    )


SETTINGS = [
    Setting("SIMULATOR_MODE", str, "generate", "How requests are answered: generate, record or replay."),
    Setting("SIMULATOR_API_KEY", str, "", "The key clients must send; generated and printed when empty."),
    Setting("SIMULATOR_SEED", str, "", "A whole number that makes generated answers reproducible."),
    Setting("RECORDING_DIR", str, "recordings", "Folder of the recording files."),
    Setting("RECORDING_AUTOSAVE", bool, True, "Save each recorded interaction as it completes."),
    Setting("RECORDING_IGNORE_FIELDS", str, "", "Body fields, comma-separated, that do not tell recordings apart."),
    Setting("RECORDING_MATCH_API_VERSION", bool, False, "Tell recordings apart by api-version too."),
    Setting(
        "RECORDING_SKIP_BROKEN",
        bool,
        False,
        "Skip recorded interactions that do not parse, with a warning, instead of refusing to start.",
    ),
    Setting(
        "RECORDING_FILE_SUFFIX",
        str,
        "",
        "Added to recording file names ({hostname} is this machine's name), so replicas recording "
        "to one shared folder never write the same file.",
    ),
    Setting(
        "REPLAY_TIMING", str, "recorded", "Replay pace: recorded (as recorded), model (the latency model) or none."
    ),
    Setting("REPLAY_MISS_STATUS", str, "404", "HTTP status of the answer to a request with no recording."),
    Setting("EXTENSION_PATH", str, "", "Extension files or packages to load, separated by commas."),
    Setting("AZURE_OPENAI_ENDPOINT", str, "", "The Azure OpenAI endpoint to record from."),
    Setting("AZURE_OPENAI_KEY", str, "", "The Azure OpenAI key used when recording."),
    Setting(
        "AZURE_OPENAI_TIMEOUT_SECONDS",
        str,
        "300",
        "Record mode: seconds Azure may take to accept the connection, and then to send each part of "
        "its answer, before the client gets a 504.",
    ),
    Setting("OPENAI_DEPLOYMENT_CONFIG_PATH", str, "", "JSON file describing the deployments."),
    Setting(
        "ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS",
        bool,
        True,
        "Answer for deployment names the deployments file does not define.",
    ),
    Setting("DOC_INTELLIGENCE_RPS", str, "15", "Document Intelligence analyze requests per second; <= 0: no limit."),
    Setting("LOG_LEVEL", str, "INFO", "Log level of the simulator's own messages."),
    Setting("SIMULATOR_LATENCY", bool, True, "Simulate latency; off answers as fast as possible."),
    Setting(
        "SIMULATOR_COMPLETION_TOKENS_MEAN",
        str,
        "150",
        "Mean length in tokens of an answer whose request sets no limit.",
    ),
    Setting("SIMULATOR_COMPLETION_TOKENS_STD_DEV", str, "50", "Standard deviation of that length."),
    Setting(
        "SIMULATOR_TOOL_CALL_SHARE",
        str,
        "1",
        "Share (0 to 1) of tool_choice=auto requests that get a tool call instead of text.",
    ),
    _latency("CHAT_COMPLETIONS", "MEAN", "per completion token"),
    _latency("CHAT_COMPLETIONS", "STD_DEV", "per completion token"),
    _latency("COMPLETIONS", "MEAN", "per completion token"),
    _latency("COMPLETIONS", "STD_DEV", "per completion token"),
    _latency("EMBEDDINGS", "MEAN", "per request"),
    _latency("EMBEDDINGS", "STD_DEV", "per request"),
    Setting(
        "RATE_LIMIT_REDIS_URL",
        str,
        "",
        "Redis URL (redis://host:port/db) where replicas keep one shared quota; empty: each process alone.",
    ),
    Setting(
        "RATE_LIMIT_DEFAULT_RESERVATION",
        str,
        "4096",
        "Tokens a chat request without max_tokens reserves against the tokens-per-minute quota.",
    ),
    Setting(
        "RATE_LIMIT_REQUEST_WINDOW_SECONDS",
        str,
        "10",
        "Window of the request limit: 10 (RPM/6 per 10 s) or 1 (RPM/60 per second).",
    ),
    Setting("DOC_INTELLIGENCE_POLL_RPS", str, "50", "Document Intelligence result polls per second; <= 0: no limit."),
    Setting(
        "SIMULATOR_PEERS",
        str,
        "",
        "Base URLs of the other workers (comma-separated): configuration changes, saves, resets and "
        "/++/metrics reach them too. Set by scripts/workers.py.",
    ),
    Setting(
        "SIMULATOR_WORKER",
        str,
        "",
        "This worker's address (host:port), its name in /++/metrics and /++/health (scripts/workers.py).",
    ),
    Setting(
        "SIMULATOR_PEER_SECRET",
        str,
        "",
        "The secret calls between workers carry (at least 16 characters; required with SIMULATOR_PEERS). "
        "scripts/workers.py makes a new one for each launch.",
    ),
    Setting(
        "SIMULATOR_ENTRA_TOKENS",
        str,
        "off",
        "How Entra ID bearer tokens are judged: off (not accepted), claims (audience, expiry, tenant, "
        "principal; no signature check) or signature (claims and a signature by a SIMULATOR_ENTRA_JWKS key).",
    ),
    Setting(
        "SIMULATOR_ENTRA_AUDIENCES",
        str,
        "",
        "Accepted token audiences (aud), comma-separated; empty: those Azure AI services accept.",
    ),
    Setting("SIMULATOR_ENTRA_TENANTS", str, "", "Accepted tenant ids (tid), comma-separated; empty: any."),
    Setting(
        "SIMULATOR_ENTRA_PRINCIPALS",
        str,
        "",
        "Allowed object or application ids (oid, appid), comma-separated; empty: any. Others get "
        "Azure's PermissionDenied.",
    ),
    Setting("SIMULATOR_ENTRA_JWKS", str, "", "JWKS file whose public keys sign accepted tokens (signature mode)."),
    Setting(
        "SIMULATOR_TLS_CERT",
        str,
        "",
        "PEM certificate (and chain) HTTPS clients are shown for the host names it names, instead of one "
        "signed by the simulator's CA.",
    ),
    Setting("SIMULATOR_TLS_KEY", str, "", "PEM private key of SIMULATOR_TLS_CERT, when that file does not hold it."),
    Setting(
        "PTU_INPUT_TPM_PER_PTU",
        str,
        "",
        "Input tokens per minute one PTU gives, by model, replacing the built-in figures of provisioned "
        "deployments: model=tokens, comma-separated (gpt-4o=3000,gpt-4.1=2800).",
    ),
    Setting(
        "RESPONSES_STORED",
        str,
        "1000",
        "Responses API: how many stored responses are kept (the newest) for retrieve and previous_response_id.",
    ),
    Setting(
        "PROMPT_CACHE_IDLE_SECONDS",
        str,
        "300",
        "Seconds after which an unused prompt prefix leaves the prompt cache (cached_tokens).",
    ),
    # Every bound on what a client can make the simulator spend (runtime/bounds.py).
    *(Setting(b.env, str, str(b.default), b.help) for b in limits_table.BOUNDS),
]
BY_OPTION = {s.option: s for s in SETTINGS}
ENTRA_OPTIONS = {
    "simulator_entra_tokens",
    "simulator_entra_audiences",
    "simulator_entra_tenants",
    "simulator_entra_principals",
    "simulator_entra_jwks",
}
TLS_OPTIONS = {"simulator_tls_cert", "simulator_tls_key"}
CA_FILE = "mitmproxy-ca-cert.pem"  # the CA clients trust, in mitmproxy's confdir
TLS_FILE = "simulator-tls.pem"  # SIMULATOR_TLS_CERT and its key in one file, as mitmproxy reads them


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


def ptu_input_tpm(raw: str) -> dict[str, int]:
    """PTU_INPUT_TPM_PER_PTU: `model=tokens` pairs, comma-separated."""
    figures: dict[str, int] = {}
    for pair in (p.strip() for p in raw.split(",") if p.strip()):
        name, sep, value = (part.strip() for part in pair.partition("="))
        model = catalogue.find_model(name)
        if not sep or not re.fullmatch(r"[0-9]{1,10}", value) or not 1 <= int(value) <= cfg.MAX_TPM_PER_PTU:
            raise ConfigError(
                f"PTU_INPUT_TPM_PER_PTU: expected model=tokens with a whole number of tokens "
                f"from 1 to {cfg.MAX_TPM_PER_PTU}, got {pair!r}"
            )
        if model is None:
            raise ConfigError(f"PTU_INPUT_TPM_PER_PTU: unknown model {name!r}")
        figures[model.name] = int(value)
    return figures


def _names(raw: str) -> frozenset[str]:
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def entra_policy(options) -> entra.TokenPolicy:
    """The SIMULATOR_ENTRA_* settings as a token policy; raises ConfigError naming the variable."""
    mode = options.simulator_entra_tokens.strip().lower()
    mode = {"": "off", "on": "claims", "true": "claims", "false": "off"}.get(mode, mode)
    if mode not in entra.MODES:
        raise ConfigError(
            f"SIMULATOR_ENTRA_TOKENS: unknown mode {options.simulator_entra_tokens!r}; use off, claims or signature"
        )
    audiences = tuple(a.strip() for a in options.simulator_entra_audiences.split(",") if a.strip())
    jwks_path = options.simulator_entra_jwks.strip()
    keys: tuple = ()
    if mode == "signature":
        if not jwks_path:
            raise ConfigError("SIMULATOR_ENTRA_JWKS: signature mode needs the JWKS file of the keys that sign tokens")
        try:
            keys = entra.load_jwks(os.path.expanduser(jwks_path))
        except ValueError as e:
            raise ConfigError(f"SIMULATOR_ENTRA_JWKS: {e}") from None
    elif jwks_path:
        raise ConfigError(f"SIMULATOR_ENTRA_JWKS: used only when SIMULATOR_ENTRA_TOKENS=signature (it is {mode})")
    return entra.TokenPolicy(
        mode=mode,
        audiences=audiences or entra.AZURE_AUDIENCES,
        tenants=_names(options.simulator_entra_tenants),
        principals=_names(options.simulator_entra_principals),
        keys=keys,
    )


@dataclass(frozen=True)
class TlsCertificate:
    pem: bytes  # the certificate chain, then its private key
    names: tuple[str, ...]  # the host names and addresses it serves


def tls_certificate(options) -> TlsCertificate | None:
    """SIMULATOR_TLS_CERT (and _KEY) read and checked; None when unset; raises ConfigError."""
    cert_path = os.path.expanduser(options.simulator_tls_cert.strip())
    key_path = os.path.expanduser(options.simulator_tls_key.strip())
    if not cert_path:
        if key_path:
            raise ConfigError("SIMULATOR_TLS_KEY: set SIMULATOR_TLS_CERT too, the certificate of this key")
        return None
    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
    except OSError as e:
        raise ConfigError(f"SIMULATOR_TLS_CERT: {cert_path}: cannot read the certificate ({e.strerror})") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"SIMULATOR_TLS_CERT: {cert_path}: no PEM certificate in it") from None
    key_pem, key_source = cert_pem, cert_path
    if key_path:
        try:
            with open(key_path, "rb") as f:
                key_pem = f.read()
        except OSError as e:
            raise ConfigError(f"SIMULATOR_TLS_KEY: {key_path}: cannot read the key ({e.strerror})") from None
        key_source = key_path
    try:
        key = serialization.load_pem_private_key(_pem_key_block(key_pem), password=None)
    except (ValueError, TypeError):
        variable = "SIMULATOR_TLS_KEY" if key_path else "SIMULATOR_TLS_CERT"
        raise ConfigError(
            f"{variable}: {key_source}: no unencrypted PEM private key in it"
            + ("" if key_path else "; give the key with SIMULATOR_TLS_KEY")
        ) from None
    if key.public_key() != chain[0].public_key():
        raise ConfigError(
            f"SIMULATOR_TLS_KEY: {key_source}: the key is not the certificate's (SIMULATOR_TLS_CERT {cert_path})"
        )
    names: list[str] = []
    try:
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names += [str(a.value) for a in chain[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if not names:
        raise ConfigError(f"SIMULATOR_TLS_CERT: {cert_path}: the certificate names no host")
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return TlsCertificate(pem, tuple(dict.fromkeys(names)))


def _pem_key_block(pem: bytes) -> bytes:
    """The private key block of a PEM file that may hold certificates too."""
    match = re.search(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", pem, re.S)
    return match.group(0) if match else pem


def apply(options, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the options and copy them into `config`; raises ConfigError, changing nothing."""
    mode = options.simulator_mode.strip().lower()
    if mode not in cfg.MODES:
        raise ConfigError(f"SIMULATOR_MODE: unknown mode {options.simulator_mode!r}; use generate, record or replay")
    seed = options.simulator_seed.strip()
    if seed and not re.fullmatch(r"-?[0-9]+", seed):
        raise ConfigError(f"SIMULATOR_SEED: expected a whole number, got {seed[:40]!r}")
    if seed and not (len(seed) <= 20 and -(2**63) <= int(seed) < 2**63):
        raise ConfigError(f"SIMULATOR_SEED: expected a whole number from {-(2**63)} to {2**63 - 1}, got {seed[:40]!r}")
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
        raise ConfigError(
            f"RATE_LIMIT_DEFAULT_RESERVATION: expected a whole number, got {options.rate_limit_default_reservation!r}"
        )
    window = _float("rate_limit_request_window_seconds", options.rate_limit_request_window_seconds, high=60.0)
    if window is not None and window <= 0:
        raise ConfigError("RATE_LIMIT_REQUEST_WINDOW_SECONDS: must be above 0 (Azure uses 10 or 1)")
    poll_rps = _float("doc_intelligence_poll_rps", options.doc_intelligence_poll_rps, low=None)
    per_ptu = ptu_input_tpm(options.ptu_input_tpm_per_ptu)
    stored = _float("responses_stored", options.responses_stored)
    if stored is not None and stored != int(stored):
        raise ConfigError(f"RESPONSES_STORED: expected a whole number, got {options.responses_stored!r}")
    cache_idle = _float("prompt_cache_idle_seconds", options.prompt_cache_idle_seconds)
    endpoint = options.azure_openai_endpoint.strip()
    if endpoint and not upstream.is_endpoint(endpoint):
        raise ConfigError(
            f"AZURE_OPENAI_ENDPOINT: expected an http(s) URL such as https://NAME.openai.azure.com, got {endpoint!r}"
        )
    upstream_timeout = _float("azure_openai_timeout_seconds", options.azure_openai_timeout_seconds)
    if upstream_timeout is not None and upstream_timeout <= 0:
        raise ConfigError("AZURE_OPENAI_TIMEOUT_SECONDS: must be above 0")
    redis_url = options.rate_limit_redis_url.strip()
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"RATE_LIMIT_REDIS_URL: expected redis://host:port/db, rediss://… or unix://…, got {redis_url!r}"
        )
    file_suffix = options.recording_file_suffix.strip().replace("{hostname}", socket.gethostname())
    if file_suffix and not re.fullmatch(r"[A-Za-z0-9._-]+", file_suffix):
        raise ConfigError(f"RECORDING_FILE_SUFFIX: letters, digits, '.', '_' and '-' only, got {file_suffix!r}")
    peers = tuple(p.strip().rstrip("/") for p in options.simulator_peers.split(",") if p.strip())
    for peer in peers:
        if not re.fullmatch(r"https?://[^/\s]+", peer):
            raise ConfigError(f"SIMULATOR_PEERS: expected base URLs such as http://127.0.0.1:8001, got {peer!r}")
    peer_secret = options.simulator_peer_secret.strip()
    if peers and len(peer_secret) < PEER_SECRET_MIN:
        raise ConfigError(
            f"SIMULATOR_PEER_SECRET: workers (SIMULATOR_PEERS) need a secret of at least "
            f"{PEER_SECRET_MIN} characters for their calls to each other; scripts/workers.py makes one"
        )
    try:
        bounds = limits_table.parse_bounds({b.env: getattr(options, b.option) for b in limits_table.BOUNDS})
    except limits_table.BoundError as e:
        raise ConfigError(str(e)) from None
    policy = entra_policy(options) if updated & ENTRA_OPTIONS else config.entra
    if updated & TLS_OPTIONS:
        tls_certificate(options)  # checked here; the Settings stage hands it to mitmproxy
    deployments, default_faults = config.deployments, config.default_faults
    if "openai_deployment_config_path" in updated:
        path = options.openai_deployment_config_path.strip()
        deployments, default_faults = cfg.load_deployments(path) if path else (cfg.default_deployments(), None)

    # Everything checked: now change the shared config.
    config.mode = mode
    config.api_key = options.simulator_api_key or config.api_key or secrets.token_urlsafe(24)
    config.seed = int(seed) if seed else None
    config.deployments = deployments
    config.default_faults = default_faults
    config.allow_undefined_deployments = options.allow_undefined_openai_deployments
    config.azure_openai_endpoint = endpoint
    config.azure_openai_key = options.azure_openai_key
    config.azure_openai_timeout_s = 300.0 if upstream_timeout is None else upstream_timeout
    config.doc_intelligence_rps = 15.0 if rps is None else rps
    config.completion_tokens = cfg.Normal(
        150.0 if completion_mean is None else completion_mean, 50.0 if completion_std is None else completion_std
    )
    config.tool_call_share = 1.0 if share is None else share
    config.latency_enabled = options.simulator_latency
    config.latency_defaults = latency
    config.recording.dir = options.recording_dir
    config.recording.autosave = options.recording_autosave
    config.recording.ignore_fields = tuple(f.strip() for f in options.recording_ignore_fields.split(",") if f.strip())
    config.recording.match_api_version = options.recording_match_api_version
    config.recording.file_suffix = file_suffix
    config.recording.skip_broken = options.recording_skip_broken
    config.recording.replay_timing = timing
    config.recording.miss_status = int(miss)
    config.rate_limit_redis_url = redis_url
    config.rate_limit_default_reservation = 4096 if reservation is None else int(reservation)
    config.rate_limit_request_window_s = 10.0 if window is None else window
    config.doc_intelligence_poll_rps = 50.0 if poll_rps is None else poll_rps
    config.ptu_input_tpm = per_ptu
    config.peers = peers
    config.worker = options.simulator_worker.strip()
    config.peer_secret = peer_secret
    config.entra = policy
    config.bounds = bounds
    config.responses_stored = 1000 if stored is None else int(stored)
    config.prompt_cache_idle_s = 300.0 if cache_idle is None else cache_idle
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


class Settings:
    def __init__(self, config: SimulatorConfig, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.replace_default_listener = False
        self.tls_specs: list[str] = []  # what SIMULATOR_TLS_CERT added to mitmproxy's certs option

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
            if updated & (TLS_OPTIONS | {"scripts"}):
                self._install_certificate(tls_certificate(ctx.options))
        except ConfigError as e:
            self.startup.refuse(str(e))  # at start-up: one line, before the port opens

    def _install_certificate(self, certificate: TlsCertificate | None) -> None:
        """Show HTTPS clients the user's certificate for its host names (mitmproxy's `certs`
        option, which wants the chain and key in one file), its CA's for any other name."""
        specs = []
        if certificate is not None:
            confdir = os.path.expanduser(ctx.options.confdir)
            os.makedirs(confdir, exist_ok=True)
            path = os.path.join(confdir, TLS_FILE)
            # Private key inside: readable by this user only, as mitmproxy keeps its CA's.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(certificate.pem)
            specs = [f"{name}={path}" for name in certificate.names]
        others = [spec for spec in ctx.options.certs if spec not in self.tls_specs]
        if specs or self.tls_specs:
            self.tls_specs = specs
            ctx.options.update(certs=others + specs)

    async def running(self):
        self.startup.running = True
        gone = internals.missing()
        if gone:
            logger.warning(
                "this mitmproxy lacks what the simulator's fast paths use (%s): streams go through "
                "the slower loopback path",
                "; ".join(gone),
            )
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
        logger.info(banner(self.config, addresses, ca_file(), self.tls_specs))


def ca_file() -> str:
    """Where mitmproxy keeps the CA certificate that signs what HTTPS clients are shown."""
    return os.path.join(os.path.expanduser(ctx.options.confdir), CA_FILE)


def banner(config: SimulatorConfig, addresses: list, ca: str = "", tls_specs: list[str] | None = None) -> str:
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
    curl = (
        f"curl {shlex.quote(url)} "
        f"-H 'api-key: {config.api_key}' -H 'content-type: application/json' -d {shlex.quote(body)}"
    )
    lines = [
        f"Azure OpenAI simulator: mode {config.mode}, listening on {base}",
        f"  API key:     {config.api_key}",
        f"  Deployments: {deployments}"
        + (" (undefined names answered too)" if config.allow_undefined_deployments else ""),
        f"  Try:         {curl}",
    ]
    if ca:
        lines.append(f"  HTTPS:       https://{host}:{port} on the same port; clients trust the CA file {ca}")
    if tls_specs:
        names = ", ".join(spec.split("=", 1)[0] for spec in tls_specs)
        lines.append(f"               SIMULATOR_TLS_CERT serves {names}")
    if config.entra.enabled:
        lines.append(
            f"  Entra ID:    bearer tokens judged by {config.entra.mode}; a token for tests: "
            f"POST /++/token with the API key"
        )
    return "\n".join(lines)
