"""Settings: what belongs to no single stage (mode, seed, deployments file, log level, the
TLS certificate and protocol, the workers), and the listener.

Every other setting is declared by the stage that uses it (`runtime/options.py` says how).
This stage also makes a bare `mitmdump -s addons/simulator.py` a simulator: reverse mode on
port 8000 toward AZURE_OPENAI_ENDPOINT, upstream connections only when a request is forwarded.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.proxy.layers import tls

from ..openai import sealed_reasoning, text, tokens
from ..runtime import config as cfg
from ..runtime import internals
from ..runtime.banner import DEFAULT_PORT, banner
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.options import Option, check, declare, names
from ..runtime.startup import Startup
from ..runtime.tls import CA_FILE, TLS_FILE, TlsCertificate, tls_certificate

logger = logging.getLogger(__name__)

PLACEHOLDER_ENDPOINT = "https://azure-openai-endpoint.invalid"
PEER_SECRET_MIN = 16
SEED_LOW, SEED_HIGH = -(2**63), 2**63 - 1  # a signed 64-bit integer
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _seed(text: str) -> int | None:
    seed = text.strip()
    if not seed:
        return None
    if not re.fullmatch(r"-?[0-9]+", seed):
        raise ConfigError(f"SIMULATOR_SEED: expected a whole number, got {seed[:40]!r}")
    if len(seed) > 21 or not SEED_LOW <= int(seed) <= SEED_HIGH:
        raise ConfigError(f"SIMULATOR_SEED: expected a whole number from {SEED_LOW} to {SEED_HIGH}, got {seed[:40]}")
    return int(seed)


def _check_seed(seed: int | None) -> None:
    if seed is not None and not SEED_LOW <= seed <= SEED_HIGH:
        raise ConfigError(f"SIMULATOR_SEED: expected a whole number from {SEED_LOW} to {SEED_HIGH}, got {seed}")


def _peers(peers: Sequence[str]) -> None:
    for peer in peers:
        if not re.fullmatch(r"https?://[^/\s]+", peer.strip().rstrip("/")):
            raise ConfigError(f"SIMULATOR_PEERS: expected base URLs such as http://127.0.0.1:8001, got {peer!r}")


OPTIONS = (
    Option(
        "SIMULATOR_MODE",
        str,
        SimulatorConfig.mode,
        "How requests are answered: made up (generate), forwarded to Azure and saved (record), or from the "
        "recordings (replay).",
        choices=cfg.MODES,
        parse=lambda t: t.strip().lower(),
    ),
    Option(
        "SIMULATOR_SEED",
        int | None,
        None,
        "A whole number that makes generated answers reproducible; unset: they differ on each run.",
        parse=_seed,
        check=_check_seed,
    ),
    Option(
        "OPENAI_DEPLOYMENT_CONFIG_PATH",
        str | None,
        None,
        "JSON file describing the deployments; unset: gpt-4o, gpt-4o-mini, an instruct and two embedding models.",
    ),
    Option(
        "ALLOW_UNDEFINED_OPENAI_DEPLOYMENTS",
        bool,
        SimulatorConfig.allow_undefined_deployments,
        "Answer for deployment names the deployments file does not define.",
    ),
    Option(
        "LOG_LEVEL",
        str,
        "INFO",
        "Log level of the simulator's own messages.",
        choices=LOG_LEVELS,
        parse=lambda t: t.strip().upper(),
    ),
    Option(
        "SIMULATOR_TLS_CERT",
        str | None,
        None,
        "PEM certificate (and chain) HTTPS clients are shown for the host names it names, instead of one "
        "signed by the simulator's CA.",
    ),
    Option(
        "SIMULATOR_TLS_KEY",
        str | None,
        None,
        "PEM private key of SIMULATOR_TLS_CERT, when that file does not hold it.",
    ),
    Option(
        "SIMULATOR_HTTP2_PREFERRED",
        bool,
        True,
        "Answer HTTPS clients that offer HTTP/2 with it, as Azure does, even when they list HTTP/1.1 first "
        "(httpx and the Python SDKs with http2=True); false: the client's order decides.",
    ),
    Option(
        "SIMULATOR_REDIS_URL",
        str | None,
        None,
        "Redis URL (redis://host:port/db) through which replicas share one resource: quotas, stored "
        "responses, images, analyses, the prompt cache and configuration changes; unset: each process alone.",
        check=lambda url: cfg.redis_url_check("SIMULATOR_REDIS_URL", url),
    ),
    Option(
        "SIMULATOR_PEERS",
        Sequence[str],
        [],
        "Base URLs of the other workers (comma-separated in the environment): saves of recordings and "
        "/++/metrics reach them too (configuration changes reach them through SIMULATOR_REDIS_URL, which "
        "they need). Set by scripts/workers.py.",
        check=_peers,
    ),
    Option(
        "SIMULATOR_WORKER",
        str,
        "",
        "This worker's address (host:port), its name in /++/metrics and /++/health (scripts/workers.py).",
    ),
    Option(
        "SIMULATOR_PEER_SECRET",
        str,
        "",
        "The secret calls between workers carry (at least 16 characters; required with SIMULATOR_PEERS). "
        "scripts/workers.py makes a new one for each launch.",
    ),
)
NAMES = names(OPTIONS)
TLS_OPTIONS = {"simulator_tls_cert", "simulator_tls_key"}


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> TlsCertificate | None:
    """Check this stage's options and copy them into `config`; raises ConfigError, changing
    nothing. Returns the TLS certificate when its settings changed (else None)."""
    check(options, OPTIONS, updated)
    peers = tuple(p.strip().rstrip("/") for p in options.simulator_peers if p.strip())
    peer_secret = options.simulator_peer_secret.strip()
    if peers and len(peer_secret) < PEER_SECRET_MIN:
        raise ConfigError(
            f"SIMULATOR_PEER_SECRET: workers (SIMULATOR_PEERS) need a secret of at least "
            f"{PEER_SECRET_MIN} characters for their calls to each other; scripts/workers.py makes one"
        )
    if peers and not ((options.simulator_redis_url or "").strip() or _rate_limit_redis_url(options)):
        raise ConfigError(
            "SIMULATOR_PEERS: workers share configuration changes through Redis; set SIMULATOR_REDIS_URL "
            "(scripts/workers.py starts one)"
        )
    certificate = None
    if updated & TLS_OPTIONS:
        certificate = tls_certificate(options.simulator_tls_cert, options.simulator_tls_key)
    deployments, default_faults = config.deployments, config.default_faults
    if "openai_deployment_config_path" in updated:
        path = (options.openai_deployment_config_path or "").strip()
        deployments, default_faults = cfg.load_deployments(path) if path else (cfg.default_deployments(), None)

    # Everything checked: now change the shared config.
    if config.cassette is None:
        config.mode = options.simulator_mode
    else:  # a cassette decides the mode until it is taken out
        config.cassette.home_mode = options.simulator_mode
    config.seed = options.simulator_seed
    config.deployments = deployments
    config.default_faults = default_faults
    config.allow_undefined_deployments = options.allow_undefined_openai_deployments
    config.simulator_redis_url = (options.simulator_redis_url or "").strip()
    config.peers = peers
    config.worker = options.simulator_worker.strip()
    config.peer_secret = peer_secret
    if peer_secret and not (options.simulator_redis_url or options.rate_limit_redis_url):
        # Workers read each other's encrypted reasoning (with a Redis, the key kept there: Services.start).
        sealed_reasoning.share_key(peer_secret)
    logging.getLogger("aoai").setLevel(options.log_level)
    return certificate


def _rate_limit_redis_url(options: Any) -> str:
    # Declared by the rate-limit stage, which may not be loaded (a test of this stage alone).
    try:
        return (options.rate_limit_redis_url or "").strip()
    except AttributeError:
        return ""


class Settings:
    def __init__(self, config: SimulatorConfig, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.replace_default_listener = False
        self.tls_specs: list[str] = []  # what SIMULATOR_TLS_CERT added to mitmproxy's certs option
        self.warned_ca: bytes | None = None  # the certificate last warned about as a CA (once each)
        self.ca_warning_filter: logging.Filter | None = None  # hides mitmproxy's for that file

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)
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

    def configure(self, updated: set[str]) -> None:
        if not updated & (NAMES | {"scripts"}):
            return
        try:
            if self.env_error:
                raise ConfigError(self.env_error)
            certificate = apply(ctx.options, self.config, updated)
            if updated & (TLS_OPTIONS | {"scripts"}):
                self._install_certificate(certificate)
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
            # mitmproxy's own warning goes by the CA flag alone, at every load: this one, once.
            certs_logger = logging.getLogger(internals.CERTS_LOGGER)
            certs_logger.removeFilter(self.ca_warning_filter)
            self.ca_warning_filter = internals.HideNotALeafWarning(path)
            certs_logger.addFilter(self.ca_warning_filter)
            if certificate.ca_only and certificate.pem != self.warned_ca:
                self.warned_ca = certificate.pem
                logger.warning(
                    "SIMULATOR_TLS_CERT: %s is a CA certificate whose key usage leaves out serving TLS; "
                    "HTTPS clients may refuse it: use one issued for the host names",
                    ctx.options.simulator_tls_cert,
                )
        others = [spec for spec in ctx.options.certs if spec not in self.tls_specs]
        if specs or self.tls_specs:
            self.tls_specs = specs
            ctx.options.update(certs=others + specs)

    def tls_clienthello(self, hello: tls.ClientHelloData) -> None:
        # Azure's front door picks h2 whenever it is offered; mitmproxy follows the client's order.
        if ctx.options.simulator_http2_preferred and ctx.options.http2:
            internals.prefer_http2(hello)

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
