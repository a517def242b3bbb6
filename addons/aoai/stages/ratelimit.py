"""Limits: throttle as Azure does, when the request arrives and before anything answers it,
in every mode (a throttled request in record mode never reaches Azure).

OpenAI requests are charged against their deployment's token and request windows (a
provisioned deployment's: against its utilization bucket); Document
Intelligence analyze submissions and result polls against their own per-second limits. A
refused request gets Azure's 429; an admitted one gets the quota headers on its response,
whoever makes it (a generator, a replay, the streaming stage or Azure itself). The windows and
the arithmetic live in runtime/limits/.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http

from .. import wire
from ..openai import catalogue
from ..runtime import config as cfg
from ..runtime import limits, spillover
from ..runtime.config import ConfigError, Deployment, SimulatorConfig
from ..runtime.fault_book import FaultBook
from ..runtime.labels import capped
from ..runtime.limits.quota import DEFAULT_DOC_INTELLIGENCE_POLL_RPS, DEFAULT_RESERVATION
from ..runtime.options import Option, check, declare, names, text_number
from ..runtime.routes import DEPLOYMENT_QUOTA, DI_ANALYZE_QUOTA, DI_POLL_QUOTA
from ..runtime.shared import redis_unreachable
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_of

logger = logging.getLogger(__name__)
UNLIMITED = limits.Quota()  # what a provisioned deployment's Ask carries: its bucket limits it


@dataclass(slots=True)
class Ask:
    """What one request asks of the limiter."""

    key: str  # the windows it is counted in
    name: str  # the deployment (or limited service) for counters and logs
    quota: limits.Quota
    context: RequestContext
    cost: int = 0
    capacity: limits.Capacity | None = None  # a provisioned deployment: its bucket instead of the quota
    early: float = 0.0  # seconds before its retry time this client came back, by this replica's hint


def client_identity(flow: http.HTTPFlow, key: str) -> bytes:
    """Who a retry comes from: the request id a client keeps across its retries when it sends
    one (Azure SDKs: x-ms-client-request-id), else the same body from the same address.
    A digest of it, so a hint costs the same however long the id or path a client sends."""
    request = flow.request
    given = request.headers.get("x-ms-client-request-id") or request.headers.get("idempotency-key")
    identity = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
    if given:
        identity.update(b"\0id\0" + given.encode("utf-8", "surrogatepass"))
        return identity.digest()
    peer = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
    identity.update(f"\0{peer}\0{request.method}\0".encode("utf-8", "surrogatepass"))
    identity.update(request.path.encode("utf-8", "surrogatepass") + b"\0")
    identity.update(request.raw_content or b"")
    return identity.digest()


def early_retry(name: str, early: float) -> None:
    logger.warning("early retry: a client retried %s %.0f ms before its retry-after had passed", name, early * 1000)


def too_many_requests(message: str, request: http.Request, extra: dict[str, str], region: str) -> http.Response:
    """Azure's 429 ({"error": {"code": "429", "message": …}} with the usual Azure headers).

    Built directly rather than with Response.make, which re-encodes and re-checks what is
    already bytes: under a throttled load, 429s are most of the traffic."""
    content = wire.dumps({"error": {"code": "429", "message": message}})
    headers = wire.azure_headers(request, region, "application/json")
    headers.update(extra)
    headers["content-length"] = str(len(content))
    fields = tuple((k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items())
    now = time.time()
    return http.Response(b"HTTP/1.1", 429, b"Too Many Requests", http.Headers(fields), content, None, now, now)


def _window(text: str) -> str:
    """RATE_LIMIT_REQUEST_WINDOW_SECONDS as one of its choices ("10.0" is 10)."""
    value = text_number("RATE_LIMIT_REQUEST_WINDOW_SECONDS", text) if text.strip() else 10
    return f"{value:g}"


OPTIONS = (
    Option(
        "RATE_LIMIT_REDIS_URL",
        str | None,
        None,
        "The older name of SIMULATOR_REDIS_URL (it shares everything SIMULATOR_REDIS_URL shares).",
        check=lambda url: cfg.redis_url_check("RATE_LIMIT_REDIS_URL", url),
    ),
    Option(
        "RATE_LIMIT_DEFAULT_RESERVATION",
        int,
        DEFAULT_RESERVATION,
        "Tokens a chat request without max_tokens reserves against the tokens-per-minute quota.",
        low=0,
        high=cfg.MAX_WHOLE,
    ),
    Option(
        "RATE_LIMIT_REQUEST_WINDOW_SECONDS",
        str,
        cfg.REQUEST_WINDOWS[0],
        "Window of the request limit, in seconds: 10 (RPM/6 per 10 s) or 1 (RPM/60 per second), as Azure's.",
        choices=cfg.REQUEST_WINDOWS,
        parse=_window,
    ),
    Option(
        "DOC_INTELLIGENCE_RPS",
        float,
        SimulatorConfig.doc_intelligence_rps,
        "Document Intelligence analyze requests per second; <= 0: no limit.",
    ),
    Option(
        "DOC_INTELLIGENCE_POLL_RPS",
        float,
        DEFAULT_DOC_INTELLIGENCE_POLL_RPS,
        "Document Intelligence result polls per second; <= 0: no limit.",
    ),
    Option(
        "PTU_INPUT_TPM_PER_PTU",
        Sequence[str],
        [],
        "Input tokens per minute one PTU gives, by model, replacing the built-in figures of provisioned "
        "deployments: model=tokens (comma-separated in the environment: gpt-4o=3000,gpt-4.1=2800).",
        check=cfg.ptu_input_tpm,
    ),
)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the quota settings and copy them into `config`; raises ConfigError, changing nothing."""
    check(options, OPTIONS, updated)
    url = (options.rate_limit_redis_url or "").strip()
    if url and config.simulator_redis_url and url != config.simulator_redis_url:
        raise ConfigError(
            "RATE_LIMIT_REDIS_URL: names another Redis than SIMULATOR_REDIS_URL; set only SIMULATOR_REDIS_URL"
        )
    config.rate_limit_redis_url = url
    config.rate_limit_default_reservation = options.rate_limit_default_reservation
    config.rate_limit_request_window_s = float(options.rate_limit_request_window_seconds)
    config.doc_intelligence_rps = options.doc_intelligence_rps
    config.doc_intelligence_poll_rps = options.doc_intelligence_poll_rps
    config.ptu_input_tpm = cfg.ptu_input_tpm(options.ptu_input_tpm_per_ptu)


class Limits:
    def __init__(
        self,
        config: SimulatorConfig,
        limiter: limits.Limiter | None = None,
        startup: Startup | None = None,
        faults: FaultBook | None = None,
    ):
        self.config = config
        self.env_error: str | None = None
        self.startup = startup or Startup()
        self.limiter = limiter or limits.Limiter()
        self.faults = faults if faults is not None else FaultBook()  # quota cuts in force
        self.redis_url = ""
        self._redis_failed_at = -1e9  # when a Redis failure was last logged

    @property
    def counters(self) -> limits.Counters:
        """429s by (deployment, reason) and early retries by deployment, for metrics."""
        return self.limiter.counters

    # --- set-up ---------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)
        self.limiter.hints.max_bytes = self.config.bounds.retry_hints_bytes
        url = self.config.redis_url
        if url == self.redis_url:
            return
        if url and not self.startup.running:
            problem = redis_unreachable(url)
            if problem is not None:
                self.startup.refuse(f"{self.config.redis_variable}: cannot reach Redis at {url} ({problem})")
                return
        self.redis_url = url
        self.limiter.use(limits.RedisWindows.from_url(url) if url else limits.MemoryWindows())
        if url:
            logger.info("Rate limits shared through Redis at %s", url)

    async def done(self) -> None:
        if isinstance(self.limiter.store, limits.RedisWindows):
            await self.limiter.store.close()

    # --- requests -------------------------------------------------------------------------

    def ask(self, context: RequestContext) -> Ask | None:
        """What the request costs and which quota its route draws from; None: not limited."""
        route, config = context.route, self.config
        if route is None:
            return None
        if route.quota == DEPLOYMENT_QUOTA:
            deployment = context.deployment
            if deployment is None:
                return None
            if deployment.provisioned:
                return self.ask_provisioned(context)
            quota = self.quota_now(deployment)
            if quota.unlimited:
                return None
            cost = context.estimated_tokens = limits.estimate_tokens(
                route.operation,
                context.body,
                context.prompt_tokens,
                default_reservation=config.rate_limit_default_reservation,
                max_output_tokens=deployment.model.max_output_tokens,
            )
            # By label: an undefined deployment's window is never keyed by the whole name a client sent.
            label = deployment.label
            return Ask("d:" + label, label, quota, context, cost)
        if route.quota == DI_ANALYZE_QUOTA:
            quota = limits.per_second_quota(config.doc_intelligence_rps)
        elif route.quota == DI_POLL_QUOTA:
            quota = limits.per_second_quota(config.doc_intelligence_poll_rps)
        else:
            return None
        return None if quota.unlimited else Ask(route.quota, route.quota, quota, context)

    def session_quota(self, deployment: Deployment) -> SessionWindows | None:
        """A realtime session's share of its deployment's quota; None when it has none."""
        if deployment.provisioned or self.quota_now(deployment).unlimited:
            return None
        return SessionWindows(self, deployment)

    def capacity(self, deployment: Deployment) -> limits.Capacity:
        return limits.ptu_capacity(
            deployment.ptu,
            self.config.input_tpm_per_ptu(deployment),
            catalogue.provisioned(deployment.model).output_weight,
        )

    def ask_provisioned(self, context: RequestContext) -> Ask:
        deployment = context.deployment
        capacity = self.capacity(deployment)
        output = limits.estimate_output_tokens(
            context.route.operation,
            context.body,
            default_reservation=self.config.rate_limit_default_reservation,
            max_output_tokens=deployment.model.max_output_tokens,
        )
        cost = context.estimated_tokens = capacity.cost(context.prompt_tokens, output)
        label = deployment.label
        return Ask("p:" + label, label, UNLIMITED, context, cost, capacity)

    def quota_now(self, deployment: Deployment) -> limits.Quota:
        """The deployment's quota, lowered while a declared quota cut lasts (as Azure does under
        load: x-ratelimit-limit-tokens shows it). Azure's own in record mode."""
        config = self.config
        tokens = deployment.tokens_per_minute
        rpm: float | None = deployment.requests_per_minute
        if config.mode != "record" and (deployment.faults is not None or config.default_faults is not None):
            tokens = self.faults.tokens_per_minute(deployment, config.default_faults, config.seed)
            if tokens != deployment.tokens_per_minute and rpm is None:
                # The request quota stays what the normal token quota gives.
                rpm = deployment.tokens_per_minute * limits.REQUESTS_PER_1000_TPM / 1000
        return limits.deployment_quota(tokens, rpm, config.rate_limit_request_window_s)

    def request(self, flow: http.HTTPFlow):
        # Plain (not async) so in-memory windows cost no coroutine; Redis returns an awaitable.
        context = context_of(flow)
        if flow.response or context is None:
            return None
        ask = self.ask(context)
        if ask is None:
            return None
        limiter = self.limiter
        identity = None
        # With shared windows, every limited request is recognised: the window check takes a
        # hint another replica gave it in the same round trip.
        sharing = limiter.shares_hints
        if limiter.hints or sharing:
            identity = client_identity(flow, ask.key)
            ask.early = limiter.early(ask.name, identity) if limiter.hints else 0.0
            if ask.early:
                early_retry(ask.name, ask.early)
        shared_identity = identity if sharing else None
        result: limits.Verdict | limits.Fill | Awaitable[limits.Verdict] | Awaitable[limits.Fill]
        if ask.capacity is not None:
            result = limiter.fill(ask.key, ask.capacity, ask.cost, shared_identity)
        else:
            result = limiter.check(ask.key, ask.quota, ask.cost, shared_identity)
        if isinstance(result, (limits.Verdict, limits.Fill)):
            return self.decide(
                flow, ask, result, identity
            )  # an awaitable only when a shared window must be asked again
        return self._decide_later(flow, ask, result, identity)

    async def _decide_later(self, flow: http.HTTPFlow, ask: Ask, pending, identity: bytes | None) -> None:
        try:
            verdict = await pending
        except Exception as e:
            self._lost(e)
            if ask.capacity is not None:
                verdict = self.limiter.fill_locally(ask.key, ask.capacity, ask.cost)
            else:
                verdict = self.limiter.check_locally(ask.key, ask.quota, ask.cost)
        spill = self.decide(flow, ask, verdict, identity)
        if spill is not None:
            await spill

    def _lost(self, error: Exception) -> None:
        """Redis went away: this replica counts alone for a while rather than fail anyone,
        and says so (every 10 s)."""
        self.limiter.lost()
        if time.monotonic() - self._redis_failed_at > 10:
            self._redis_failed_at = time.monotonic()
            logger.error("rate limits counted by each replica alone: Redis at %s failed (%s)", self.redis_url, error)

    def decide(
        self, flow: http.HTTPFlow, ask: Ask, verdict: limits.Verdict | limits.Fill, identity: bytes | None
    ) -> Awaitable[None] | None:
        # When the quota was checked (the windows' clock: monotonic, or Redis's wall clock).
        ask.context.quota_checked_at = verdict.at
        if verdict.hinted and not ask.early:  # told to wait by another replica
            early = self.limiter.early_elsewhere(ask.name, verdict.hinted)
            if early:
                early_retry(ask.name, early)
        if isinstance(verdict, limits.Fill):
            return self.decide_provisioned(flow, ask, verdict, identity)
        if verdict.allowed:
            if ask.key.startswith("d:"):  # deployments' answers carry their quota
                ask.context.quota_headers = limits.success_headers(ask.quota, verdict)
            return None
        sharing = self.limiter.throttled(
            ask.name, verdict.reason, identity or client_identity(flow, ask.key), verdict.retry_after, ask.key
        )
        flow.response = self.throttled(flow, ask, verdict)
        logger.info(
            "429 %s: %s, retry after %d ms%s",
            ask.name,
            {
                limits.TOKENS: "token rate limit",
                limits.REQUESTS: "call rate limit",
                limits.TOO_LARGE: "request larger than the token rate limit",
            }[verdict.reason],
            limits.whole_ms(verdict.retry_after),
            f" (cost {ask.cost} tokens)" if ask.cost else "",
        )
        return sharing  # the hint in Redis before the 429 leaves, so any replica sees the retry

    def decide_provisioned(
        self, flow: http.HTTPFlow, ask: Ask, fill: limits.Fill, identity: bytes | None
    ) -> Awaitable[None] | None:
        if fill.allowed:
            ask.context.quota_headers = limits.utilization_headers(fill)
            return None
        context = ask.context
        standard = spillover.target(
            context.deployment,
            context.route.operation,
            flow.request.headers.get(spillover.REQUEST_HEADER),
            self.config.deployments,
        )
        if standard is not None:
            return self.spill(flow, ask, fill, identity, standard)
        return self.refuse_provisioned(flow, ask, fill, identity)

    def refuse_provisioned(
        self, flow: http.HTTPFlow, ask: Ask, fill: limits.Fill, identity: bytes | None, spill_status: int = 0
    ) -> Awaitable[None] | None:
        """The provisioned deployment's 429; an awaitable that shares the retry hint with
        shared windows."""
        sharing = self.limiter.throttled(
            ask.name, limits.UTILIZATION, identity or client_identity(flow, ask.key), fill.retry_after, ask.key
        )
        context = ask.context
        message = limits.utilization_message(
            context.route.azure_operation, context.api_version, limits.retry_seconds(fill.retry_after)
        )
        headers = limits.utilization_throttled_headers(fill)
        if spill_status:
            headers[spillover.ERROR_HEADER] = str(spill_status)  # why the spillover did not help
        flow.response = too_many_requests(message, flow.request, headers, self.config.region)
        logger.info(
            "429 %s: provisioned utilization %.1f%%, retry after %d ms (cost %d tokens)",
            ask.name,
            fill.utilization * 100,
            limits.whole_ms(fill.retry_after),
            ask.cost,
        )
        return sharing

    def spill(
        self, flow: http.HTTPFlow, ask: Ask, fill: limits.Fill, identity: bytes | None, standard: Deployment
    ) -> Awaitable[None] | None:
        """The throttled provisioned deployment's request charged to its spillover deployment's
        own quota instead; an awaitable when that quota is in shared windows."""
        context = ask.context
        quota = self.quota_now(standard)
        cost = limits.estimate_tokens(
            context.route.operation,
            context.body,
            context.prompt_tokens,
            default_reservation=self.config.rate_limit_default_reservation,
            max_output_tokens=standard.model.max_output_tokens,
        )
        if quota.unlimited:
            return self.spilled(flow, ask, fill, identity, standard, quota, None, cost)
        result = self.limiter.check("d:" + standard.label, quota, cost)
        if isinstance(result, limits.Verdict):
            return self.spilled(flow, ask, fill, identity, standard, quota, result, cost)
        return self._spilled_later(flow, ask, fill, identity, standard, quota, result, cost)

    async def _spilled_later(
        self,
        flow: http.HTTPFlow,
        ask: Ask,
        fill: limits.Fill,
        identity: bytes | None,
        standard: Deployment,
        quota: limits.Quota,
        pending: Awaitable[limits.Verdict],
        cost: int,
    ) -> None:
        try:
            verdict: limits.Verdict | None = await pending
        except Exception as e:  # Redis went away: the spillover's quota is counted here alone
            self._lost(e)
            verdict = self.limiter.check_locally("d:" + standard.label, quota, cost)
        sharing = self.spilled(flow, ask, fill, identity, standard, quota, verdict, cost)
        if sharing is not None:
            await sharing

    def spilled(
        self,
        flow: http.HTTPFlow,
        ask: Ask,
        fill: limits.Fill,
        identity: bytes | None,
        standard: Deployment,
        quota: limits.Quota,
        verdict: limits.Verdict | None,
        cost: int,
    ) -> Awaitable[None] | None:
        """Served by `standard` when its quota admits the request (None: no quota to ask);
        else the provisioned deployment's 429 naming the spillover's status, as Azure answers
        (an awaitable that shares its retry hint, with shared windows)."""
        context = ask.context
        if verdict is not None and not verdict.allowed:
            self.limiter.counters.throttled[(standard.label, verdict.reason)] += 1
            sharing = self.refuse_provisioned(flow, ask, fill, identity, 429)
            logger.info("429 %s: provisioned utilization full and spillover to %s throttled", ask.name, standard.name)
            return sharing
        # The provisioned deployment still counts its 429, as Azure's metrics show; the client,
        # answered, is given no retry time.
        self.limiter.counters.throttled[(ask.name, limits.UTILIZATION)] += 1
        self.limiter.counters.spilled[(ask.name, standard.label)] += 1
        provisioned = context.deployment.name
        context.deployment = standard  # it answers: its latency, its faults, its metrics
        context.estimated_tokens = cost
        headers = limits.success_headers(quota, verdict) if verdict is not None else {}
        headers.update(spillover.served_headers(provisioned, standard.name))
        context.quota_headers = headers
        logger.info("spillover %s -> %s: provisioned utilization full (cost %d tokens)", ask.name, standard.name, cost)
        return None

    def throttled(self, flow: http.HTTPFlow, ask: Ask, verdict: limits.Verdict) -> http.Response:
        request = flow.request
        seconds = limits.retry_seconds(verdict.retry_after)
        context = ask.context
        operation = context.route.azure_operation
        if context.route.quota != DEPLOYMENT_QUOTA:  # Document Intelligence
            headers = {"retry-after": str(seconds), "retry-after-ms": str(limits.whole_ms(verdict.retry_after))}
            message = limits.doc_intelligence_message(operation, request.query.get("api-version"), seconds)
            return too_many_requests(message, request, headers, self.config.region)
        headers = limits.throttled_headers(ask.quota, verdict)
        version = context.api_version
        if verdict.reason == limits.TOO_LARGE:
            headers["x-should-retry"] = "false"  # the openai SDKs honour it
            name = context.deployment.name if context.deployment is not None else ask.name  # as the client named it
            message = limits.too_large_message(operation, version, name, ask.cost, ask.quota.tokens)
        else:
            message = limits.throttled_message(operation, version, verdict.reason, seconds)
        return too_many_requests(message, request, headers, self.config.region)

    # --- responses: the quota headers -----------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Streams from the loopback stream server or from Azure (record mode) leave before `response`;
        # streams written straight to the client carry the headers already (streaming.py).
        self._stamp(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._stamp(flow)

    @staticmethod
    def _stamp(flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is None or not context.quota_headers or flow.response is None:
            return
        flow.response.headers.update(context.quota_headers)
        context.quota_headers = None

    # --- management -----------------------------------------------------------------------

    async def reset(self) -> None:
        """Empty every window (not the counters: they only ever grow, as metrics expect)."""
        await self.limiter.reset()
        logger.info("rate-limit windows cleared")

    def view(self):
        """Quotas and what the windows hold; for shared windows an awaitable of it, since the
        provisioned deployments' utilization is read from Redis."""
        config, store = self.config, self.limiter.store
        deployments, provisioned = {}, {}
        for name, d in config.deployments.items():
            try:
                self._view_one(name, d, deployments, provisioned)
            except (ArithmeticError, ValueError, TypeError) as e:
                # Values are checked where they are set; a view still never fails on one.
                logger.warning("cannot show %s's limits: %s: %s", name, type(e).__name__, e)
                deployments[name] = {"error": f"cannot be shown ({type(e).__name__})"}
        view = {
            "windows": "redis" if store.shared else "memory",
            "defaultReservation": config.rate_limit_default_reservation,
            "deployments": deployments,
            **self.limiter.counters.to_json(),
        }
        if store.shared and provisioned:
            return self._with_utilization(store, view, provisioned)
        return view

    def _view_one(self, name: str, d: Deployment, deployments: dict, provisioned: dict) -> None:
        config, store = self.config, self.limiter.store
        if d.provisioned:
            capacity = self.capacity(d)
            provisioned[name] = capacity
            deployments[name] = {
                "sku": d.sku,
                "ptu": d.ptu,
                "inputTpmPerPtu": config.input_tpm_per_ptu(d),
                "outputTokenWeight": capacity.output_weight,
                "capacityPerMinute": round(capacity.per_minute),
            }
            if isinstance(store, limits.MemoryWindows):
                deployments[name]["utilization"] = _percent(
                    store.utilization("p:" + d.label, capacity, self.limiter.clock())
                )
            return
        quota = self.quota_now(d)
        if quota.unlimited:
            return
        entry = {
            "tokensPerMinute": quota.tokens,
            "requestsPerWindow": quota.requests,
            "requestWindowSeconds": quota.request_window,
        }
        if isinstance(store, limits.MemoryWindows):
            used_tokens, used_requests = store.usage("d:" + d.label, quota, self.limiter.clock())
            entry["usedTokens"], entry["usedRequests"] = used_tokens, used_requests
        deployments[name] = entry

    async def _with_utilization(
        self, store: limits.RedisWindows, view: dict, provisioned: dict[str, limits.Capacity]
    ) -> dict:
        for name, capacity in provisioned.items():
            try:
                used = await store.utilization("p:" + capped(name), capacity, self.limiter.clock())
            except Exception as e:  # Redis went away: the rest of the view still helps
                logger.error("cannot read %s's utilization from Redis (%s)", name, e)
                continue
            view["deployments"][name]["utilization"] = _percent(used)
        return view


class SessionWindows:
    """A realtime session's share of its deployment's quota (runtime/realtime_server.py's
    SessionQuota): whether a response's input fits the token window, the tokens each
    response used charged when it is done, and the figures rate_limits.updated shows
    (requests: of the short request window, which new sessions fill; tokens: of the minute).
    A quota cut in force lowers the token figures, as it does for requests."""

    def __init__(self, limits: Limits, deployment: Deployment):
        self.limits, self.deployment = limits, deployment
        self.key = "d:" + deployment.label

    async def room(self, tokens: int) -> float:
        quota = self.limits.quota_now(self.deployment)
        if not quota.tokens:
            return 0.0
        # Tokens only: a response is not a new request (its session was).
        found = await self.limits.limiter.peek(self.key, limits.Quota(quota.tokens, 0, quota.request_window), tokens)
        if found.allowed:
            return 0.0
        return min(max(found.token_wait, 1e-6), float(limits.NEVER_SECONDS))  # larger than the quota: never

    async def charge(self, tokens: int) -> None:
        quota = self.limits.quota_now(self.deployment)
        if quota.tokens and tokens > 0:
            await self.limits.limiter.charge(self.key, quota, tokens)

    async def figures(self) -> tuple[tuple[int, int], tuple[int, int]]:
        quota = self.limits.quota_now(self.deployment)
        found = await self.limits.limiter.peek(self.key, quota, 0)
        return (quota.requests, found.remaining_requests), (quota.tokens, found.remaining_tokens)


def _percent(utilization: float) -> str:
    return f"{utilization * 100:.1f}%"
