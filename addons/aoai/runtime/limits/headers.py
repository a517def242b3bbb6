"""What the answers say: Azure's rate-limit headers, retry times and 429 texts."""

from __future__ import annotations

import math

from .ptu import UTILIZATION_HEADER, Fill
from .quota import GRACE, NEVER_SECONDS, REQUESTS, TOKENS, TOO_LARGE, Quota, Verdict


def whole_ms(seconds: float) -> int:
    """Milliseconds rounded up, at least 1: waiting this long is always long enough (within
    the windows' GRACE, which absorbs float noise such as 29.900000000000002 s)."""
    return max(1, math.ceil(seconds * 1000 - GRACE * 1000))


def retry_seconds(seconds: float) -> int:
    """Whole seconds rounded up, as `retry-after` and Azure's texts give them."""
    return max(1, math.ceil(whole_ms(seconds) / 1000))


def success_headers(quota: Quota, v: Verdict) -> dict[str, str]:
    """Azure's quota headers on an admitted request. The request figures are those of the
    short window, as Azure reports them (80 TPM-thousands: 480 RPM, 80 per 10 s)."""
    headers: dict[str, str] = {}
    if quota.requests:
        headers["x-ratelimit-limit-requests"] = str(quota.requests)
        headers["x-ratelimit-remaining-requests"] = str(v.remaining_requests)
    if quota.tokens:
        headers["x-ratelimit-limit-tokens"] = str(quota.tokens)
        headers["x-ratelimit-remaining-tokens"] = str(v.remaining_tokens)
    return headers


def throttled_headers(quota: Quota, v: Verdict) -> dict[str, str]:
    """The headers of a 429: when to retry (ms exact, seconds rounded up), which limit, and
    how long until each window has room for this request."""
    ms = whole_ms(v.retry_after)
    headers = {
        "retry-after": str(retry_seconds(v.retry_after)),
        "retry-after-ms": str(ms),
        "policy-id": "DeploymentRatelimit-Token" if v.reason in (TOKENS, TOO_LARGE) else "DeploymentRatelimit-Call",
    }
    if quota.requests:
        headers["x-ratelimit-reset-requests"] = str(math.ceil(v.request_wait - 1e-9))
        headers["x-ratelimit-limit-requests"] = str(quota.requests)
        headers["x-ratelimit-remaining-requests"] = str(v.remaining_requests)
    if quota.tokens:
        headers["x-ratelimit-reset-tokens"] = str(math.ceil(v.token_wait - 1e-9))
        headers["x-ratelimit-limit-tokens"] = str(quota.tokens)
        headers["x-ratelimit-remaining-tokens"] = str(v.remaining_tokens)
    return headers


def utilization_headers(fill: Fill) -> dict[str, str]:
    """What a provisioned deployment's answers carry, e.g. `azure-openai-deployment-utilization: 42.5%`."""
    return {UTILIZATION_HEADER: f"{fill.utilization * 100:.1f}%"}


def utilization_throttled_headers(fill: Fill) -> dict[str, str]:
    """A provisioned deployment's 429: when to retry, and none of the pay-as-you-go
    x-ratelimit-* headers (it has no TPM or RPM quota)."""
    return {
        "retry-after": str(retry_seconds(fill.retry_after)),
        "retry-after-ms": str(whole_ms(fill.retry_after)),
        **utilization_headers(fill),
    }


def _seconds(n: int) -> str:
    return f"{n} second" if n == 1 else f"{n} seconds"


def throttled_message(operation: str, api_version: str | None, reason: str, seconds: int) -> str:
    """Azure's 429 text, e.g. for `ChatCompletions_Create` and a token limit."""
    kind = "call rate limit" if reason == REQUESTS else "token rate limit"
    version = f" version {api_version}" if api_version else ""
    return (
        f"Requests to the {operation} Operation under Azure OpenAI API{version} have exceeded {kind} of "
        f"your current OpenAI S0 pricing tier. Please retry after {_seconds(seconds)}. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
    )


def utilization_message(operation: str, api_version: str | None, seconds: int) -> str:
    """The 429 text of a provisioned deployment over 100 % utilization (Azure publishes no
    wording for it; this one follows its other 429 texts)."""
    version = f" version {api_version}" if api_version else ""
    return (
        f"Requests to the {operation} Operation under Azure OpenAI API{version} have exceeded the provisioned "
        f"throughput of this deployment: its utilization is above 100%. Please retry after {_seconds(seconds)}."
    )


def too_large_message(operation: str, api_version: str | None, deployment: str, cost: int, limit: int) -> str:
    """The 429 text of a request above the whole token quota: it can never be accepted."""
    return (
        throttled_message(operation, api_version, TOKENS, NEVER_SECONDS)
        + f" This request is estimated at {cost} tokens (prompt plus max_tokens times n), more than the "
        f"{limit} tokens per minute deployment {deployment} allows, so it can never be accepted: lower "
        "max_tokens or n, shorten the prompt, or raise tokensPerMinute."
    )


def doc_intelligence_message(operation: str, api_version: str | None, seconds: int) -> str:
    """Document Intelligence's 429 text (the Cognitive Services gateway's wording)."""
    version = f" ({api_version})" if api_version else ""
    return (
        f"Requests to the {operation} Operation under Document Intelligence API{version} have exceeded rate "
        f"limit of your current FormRecognizer S0 pricing tier. Please retry after {_seconds(seconds)}. "
        "Please contact Azure support service if you would like to further increase the default rate limit."
    )
