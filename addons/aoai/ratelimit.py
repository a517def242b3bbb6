"""Limits: throttle as Azure does, when the request arrives and before anything answers it,
in every mode (a throttled request in record mode never reaches Azure).

OpenAI requests are charged against their deployment's token and request windows; Document
Intelligence analyze submissions and result polls against their own per-second limits. A
refused request gets Azure's 429; an admitted one gets the quota headers on its response,
whoever makes it (a generator, a replay, the streaming stage or Azure itself). The windows and
the arithmetic live in limits.py.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass

from mitmproxy import http

from . import limits, wire
from .config import RequestContext, SimulatorConfig, context_of

logger = logging.getLogger(__name__)

HEADERS_KEY = "aoai.limits"  # flow.metadata: the quota headers its response will carry

_DI_ANALYZE = re.compile(r"^/(?:formrecognizer|documentintelligence)/documentModels/[^/]+:analyze$")
_DI_POLL = re.compile(r"^/(?:formrecognizer|documentintelligence)/documentModels/[^/]+/analyzeResults/[^/]+$")
DI_ANALYZE = "document-intelligence:analyze"
DI_POLL = "document-intelligence:poll"
_DI_OPERATIONS = {DI_ANALYZE: "Analyze Document", DI_POLL: "Get Analyze Result"}


@dataclass(slots=True)
class Ask:
    """What one request asks of the limiter."""

    key: str  # the windows it is counted in
    name: str  # the deployment (or limited service) for counters and logs
    quota: limits.Quota
    cost: int = 0
    context: RequestContext | None = None  # OpenAI requests only


def client_identity(flow: http.HTTPFlow, key: str) -> str:
    """Who a retry comes from: the request id a client keeps across its retries when it sends
    one (Azure SDKs: x-ms-client-request-id), else the same body from the same address."""
    headers = flow.request.headers
    given = headers.get("x-ms-client-request-id") or headers.get("idempotency-key")
    if given:
        return f"{key} id {given}"
    peer = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
    digest = hashlib.blake2b(flow.request.raw_content or b"", digest_size=12).hexdigest()
    return f"{key} {peer} {flow.request.method} {flow.request.path} {digest}"


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


class Limits:
    def __init__(self, config: SimulatorConfig, limiter: limits.Limiter | None = None):
        self.config = config
        self.limiter = limiter or limits.Limiter()
        self.redis_url = ""
        self._redis_failed_at = -1e9  # when a Redis failure was last logged
        config.limits = self  # management reads view() and calls reset()

    @property
    def counters(self) -> limits.Counters:
        """429s by (deployment, reason) and early retries by deployment, for metrics."""
        return self.limiter.counters

    # --- set-up ---------------------------------------------------------------------------

    def configure(self, updated: set[str]) -> None:
        url = self.config.rate_limit_redis_url
        if url == self.redis_url:
            return
        self.redis_url = url
        self.limiter.use(limits.RedisWindows.from_url(url) if url else limits.MemoryWindows())
        logger.debug("rate-limit windows: %s", "Redis" if url else "in memory")

    async def running(self) -> None:
        store = self.limiter.store
        if not store.shared:
            return
        try:
            await store.ping()
        except Exception as e:
            # One clear line; mitmproxy then exits because an error was logged at start-up.
            logger.error("Cannot start the simulator: RATE_LIMIT_REDIS_URL: cannot reach Redis at %s (%s)",
                         self.redis_url, e)
            return
        logger.info("Rate limits shared through Redis at %s", self.redis_url)

    async def done(self) -> None:
        if self.limiter.store.shared:
            await self.limiter.store.close()

    # --- requests -------------------------------------------------------------------------

    def ask(self, flow: http.HTTPFlow) -> Ask | None:
        """What the request costs and which quota it counts against; None: not limited."""
        context = context_of(flow)
        if context is not None and context.deployment is not None and context.operation is not None:
            deployment, config = context.deployment, self.config
            quota = limits.deployment_quota(deployment.tokens_per_minute, deployment.requests_per_minute,
                                            config.rate_limit_request_window_s)
            if quota.unlimited:
                return None
            cost = limits.estimate_tokens(context.operation.name, context.body, context.values.get("prompt_tokens", 0),
                                          default_reservation=config.rate_limit_default_reservation,
                                          max_output_tokens=deployment.model.max_output_tokens)
            context.values["estimated_tokens"] = cost
            return Ask("d:" + deployment.name, deployment.name, quota, cost, context)
        # Document Intelligence: a cheap test first, as most requests are neither.
        request = flow.request
        if request.method == "POST" and ":analyze" in request.path:
            key, pattern, rate = DI_ANALYZE, _DI_ANALYZE, self.config.doc_intelligence_rps
        elif request.method == "GET" and "/analyzeResults/" in request.path:
            key, pattern, rate = DI_POLL, _DI_POLL, self.config.doc_intelligence_poll_rps
        else:
            return None
        if not pattern.match(request.path.partition("?")[0]):
            return None
        quota = limits.per_second_quota(rate)
        return None if quota.unlimited else Ask(key, key, quota)

    def request(self, flow: http.HTTPFlow):
        # Plain (not async) so in-memory windows cost no coroutine; Redis returns an awaitable.
        if flow.response:
            return None
        ask = self.ask(flow)
        if ask is None:
            return None
        limiter = self.limiter
        identity = None
        if limiter.hints:
            identity = client_identity(flow, ask.key)
            early = limiter.early(ask.name, identity)
            if early:
                logger.warning("early retry: a client retried %s %.0f ms before its retry-after had passed",
                               ask.name, early * 1000)
        result = limiter.check(ask.key, ask.quota, ask.cost)
        if isinstance(result, limits.Verdict):
            self.decide(flow, ask, result, identity)
            return None
        return self._decide_later(flow, ask, result, identity)

    async def _decide_later(self, flow: http.HTTPFlow, ask: Ask, pending, identity: str | None) -> None:
        try:
            verdict = await pending
        except Exception as e:
            # Redis went away: let traffic through rather than fail it, and say so (every 10 s).
            if time.monotonic() - self._redis_failed_at > 10:
                self._redis_failed_at = time.monotonic()
                logger.error("rate limits not applied: Redis at %s failed (%s); requests pass unchecked",
                             self.redis_url, e)
            return
        self.decide(flow, ask, verdict, identity)

    def decide(self, flow: http.HTTPFlow, ask: Ask, verdict: limits.Verdict, identity: str | None) -> None:
        if ask.context is not None:
            # When the quota was checked (the windows' clock: monotonic, or Redis's wall clock).
            ask.context.values["quota_checked_at"] = verdict.at
        if verdict.allowed:
            if ask.context is not None:
                flow.metadata[HEADERS_KEY] = limits.success_headers(ask.quota, verdict)
            return
        self.limiter.throttled(ask.name, verdict.reason, identity or client_identity(flow, ask.key),
                               verdict.retry_after)
        flow.response = self.throttled(flow, ask, verdict)
        logger.info("429 %s: %s, retry after %d ms%s", ask.name,
                    {limits.TOKENS: "token rate limit", limits.REQUESTS: "call rate limit",
                     limits.TOO_LARGE: "request larger than the token rate limit"}[verdict.reason],
                    limits.whole_ms(verdict.retry_after), f" (cost {ask.cost} tokens)" if ask.cost else "")

    def throttled(self, flow: http.HTTPFlow, ask: Ask, verdict: limits.Verdict) -> http.Response:
        request = flow.request
        seconds = limits.retry_seconds(verdict.retry_after)
        context = ask.context
        if context is None:  # Document Intelligence
            headers = {"retry-after": str(seconds), "retry-after-ms": str(limits.whole_ms(verdict.retry_after))}
            message = limits.doc_intelligence_message(_DI_OPERATIONS[ask.key], request.query.get("api-version"),
                                                      seconds)
            return too_many_requests(message, request, headers, self.config.region)
        headers = limits.throttled_headers(ask.quota, verdict)
        operation, version = context.operation.azure_name, context.api_version
        if verdict.reason == limits.TOO_LARGE:
            headers["x-should-retry"] = "false"  # the openai SDKs honour it
            message = limits.too_large_message(operation, version, ask.name, ask.cost, ask.quota.tokens)
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
        headers = flow.metadata.pop(HEADERS_KEY, None)
        if headers and flow.response is not None:
            flow.response.headers.update(headers)

    # --- management -----------------------------------------------------------------------

    async def reset(self) -> None:
        """Empty every window (not the counters: they only ever grow, as metrics expect)."""
        await self.limiter.reset()
        logger.info("rate-limit windows cleared")

    def view(self) -> dict:
        config, store = self.config, self.limiter.store
        deployments = {}
        for name, d in config.deployments.items():
            quota = limits.deployment_quota(d.tokens_per_minute, d.requests_per_minute,
                                            config.rate_limit_request_window_s)
            if quota.unlimited:
                continue
            entry = {"tokensPerMinute": quota.tokens, "requestsPerWindow": quota.requests,
                     "requestWindowSeconds": quota.request_window}
            if not store.shared:
                used_tokens, used_requests = store.usage("d:" + name, quota, self.limiter.clock())
                entry["usedTokens"], entry["usedRequests"] = used_tokens, used_requests
            deployments[name] = entry
        return {"windows": "redis" if store.shared else "memory",
                "defaultReservation": config.rate_limit_default_reservation,
                "deployments": deployments, **self.limiter.counters.to_json()}
