"""Rate limits as Azure applies them, as plain logic; nothing here touches mitmproxy, the
`Limits` stage (stages/ratelimit.py) applies it to flows. One module per concern:

- `quota`: the quotas, a request's token cost estimate and the shape of a decision (pure
  functions; the caller passes the time);
- `windows`: the sliding windows and provisioned buckets of this process;
- `ptu`: provisioned deployments' utilization (a leaky bucket per deployment);
- `redis`: the same windows and buckets in Redis, shared by replicas;
- `headers`: the rate-limit headers, retry times and 429 texts;
- `limiter`: the object the stage holds (store, clock, counters, retry hints).

Every name is also importable from here, as `from aoai.runtime.limits import Quota`.
"""

from .headers import (
    doc_intelligence_message,
    retry_seconds,
    success_headers,
    throttled_headers,
    throttled_message,
    too_large_message,
    utilization_headers,
    utilization_message,
    utilization_throttled_headers,
    whole_ms,
)
from .limiter import Counters, Identity, Limiter, RetryHints
from .ptu import PTU_BUCKET_SECONDS, UTILIZATION, UTILIZATION_HEADER, Capacity, Fill, admit, drained, ptu_capacity
from .quota import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    DEFAULT_DOC_INTELLIGENCE_POLL_RPS,
    DEFAULT_REQUEST_WINDOW,
    DEFAULT_RESERVATION,
    EARLY,
    GRACE,
    NEVER_SECONDS,
    REQUESTS,
    REQUESTS_PER_1000_TPM,
    TOKEN_WINDOW,
    TOKENS,
    TOO_LARGE,
    Clock,
    Quota,
    Verdict,
    deployment_quota,
    estimate_output_tokens,
    estimate_tokens,
    per_second_quota,
    request_limit,
    verdict,
)
from .redis import PTU_SCRIPT, REDIS_PREFIX, REDIS_SCRIPT, RedisWindows
from .windows import MemoryWindows, SlidingWindow

__all__ = [
    "COMPLETIONS_DEFAULT_MAX_TOKENS",
    "DEFAULT_DOC_INTELLIGENCE_POLL_RPS",
    "DEFAULT_REQUEST_WINDOW",
    "DEFAULT_RESERVATION",
    "EARLY",
    "GRACE",
    "NEVER_SECONDS",
    "PTU_BUCKET_SECONDS",
    "PTU_SCRIPT",
    "REDIS_PREFIX",
    "REDIS_SCRIPT",
    "REQUESTS",
    "REQUESTS_PER_1000_TPM",
    "TOKENS",
    "TOKEN_WINDOW",
    "TOO_LARGE",
    "UTILIZATION",
    "UTILIZATION_HEADER",
    "Capacity",
    "Clock",
    "Counters",
    "Fill",
    "Identity",
    "Limiter",
    "MemoryWindows",
    "Quota",
    "RedisWindows",
    "RetryHints",
    "SlidingWindow",
    "Verdict",
    "admit",
    "deployment_quota",
    "doc_intelligence_message",
    "drained",
    "estimate_output_tokens",
    "estimate_tokens",
    "per_second_quota",
    "ptu_capacity",
    "request_limit",
    "retry_seconds",
    "success_headers",
    "throttled_headers",
    "throttled_message",
    "too_large_message",
    "utilization_headers",
    "utilization_message",
    "utilization_throttled_headers",
    "verdict",
    "whole_ms",
]
