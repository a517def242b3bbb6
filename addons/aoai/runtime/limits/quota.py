"""Quotas and what a request costs against them, as pure functions: the token cost estimate,
the short request windows, and the shape of a decision. Time is always passed in (`now`), so
the callers choose the clock (see `Clock`).

Azure's model, which this follows:
- a deployment has a tokens-per-minute quota (TPM) and a request quota (RPM, by default
  6 per 1,000 TPM); either may be absent (0), which means no limit;
- a request's token cost is estimated when it arrives (prompt plus the most it may generate)
  and counted against a sliding 60-second window; a throttled request costs nothing;
- requests are counted over short windows (RPM/6 per 10 s, or RPM/60 per 1 s), so a burst
  is throttled even when the minute as a whole has room;
- the retry time given with a 429 is the moment the oldest entries that are in the way leave
  the window: a client that waits that long fits, unless others took the room meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...openai.validation import answer_limit, whole

TOKEN_WINDOW = 60.0  # seconds; Azure's token quota is per minute
REQUESTS_PER_1000_TPM = 6  # Azure's default request quota for a token quota
# The defaults of RATE_LIMIT_DEFAULT_RESERVATION, RATE_LIMIT_REQUEST_WINDOW_SECONDS and
# DOC_INTELLIGENCE_POLL_RPS; the settings and the configuration refer to these.
DEFAULT_RESERVATION = 4096  # see estimate_tokens
DEFAULT_REQUEST_WINDOW = 10.0  # seconds: Azure counts RPM/6 per 10 s (or RPM/60 per 1 s)
DEFAULT_DOC_INTELLIGENCE_POLL_RPS = 50.0
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the legacy completions API's own default
# Entries leave a window this much early, so float noise in "time + wait" never keeps a
# client that waited exactly as told out (1 microsecond; the retry times are whole ms).
GRACE = 1e-6

TOKENS = "tokens"
REQUESTS = "requests"
TOO_LARGE = "too_large"
EARLY = "early_retry"

# A request that can never fit: Azure answers it with a retry time of a day, which SDKs refuse
# to wait for (the 429's text says so in words too).
NEVER_SECONDS = 86400

# Seconds now, in whatever clock the caller keeps: memory windows need only a steady one,
# windows shared by replicas the wall clock they all agree on.
Clock = Callable[[], float]


# --- Quotas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """What one window key allows: tokens per 60 s and requests per short window (0: no limit)."""

    tokens: int = 0
    requests: int = 0
    request_window: float = DEFAULT_REQUEST_WINDOW

    @property
    def unlimited(self) -> bool:
        return not self.tokens and not self.requests


def request_limit(per_minute: float, window: float) -> tuple[int, float]:
    """The requests one short window allows for a per-minute rate, and that window's length.

    A fraction is rounded down, so the limit is never above the rate (Azure: 600 RPM is 10 per
    second); below one request per window the window stretches until it holds exactly one,
    so a tiny rate is not rounded up to one per window."""
    if per_minute <= 0:
        return 0, window
    allowed = per_minute * window / 60.0
    if allowed >= 1:
        return int(allowed + 1e-9), window
    return 1, 60.0 / per_minute


@functools.lru_cache(maxsize=4096)
def deployment_quota(tokens_per_minute: int, requests_per_minute: float | None, window: float) -> Quota:
    """A deployment's quota; `requests_per_minute` None means Azure's default for the TPM."""
    rpm = tokens_per_minute * REQUESTS_PER_1000_TPM / 1000 if requests_per_minute is None else requests_per_minute
    count, length = request_limit(rpm, window)
    return Quota(int(tokens_per_minute or 0), count, length)


@functools.lru_cache(maxsize=64)
def per_second_quota(per_second: float) -> Quota:
    """A plain requests-per-second limit (Document Intelligence); <= 0: none."""
    count, length = request_limit(per_second * 60, 1.0)
    return Quota(0, count, length)


# --- Token cost ---------------------------------------------------------------------------


def estimate_tokens(
    operation: str,
    body: dict[str, Any],
    prompt_tokens: int,
    *,
    default_reservation: int = DEFAULT_RESERVATION,
    max_output_tokens: int = 0,
) -> int:
    """Azure's up-front estimate of what a request may use, counted against the TPM quota.

    `operation` is "chat", "completions", "embeddings" or "responses"; `prompt_tokens` the prompt counted
    with the model's encoding (messages, tools and all). The answer's share is its maximum:
    `max_completion_tokens` or `max_tokens` (`max_output_tokens` for responses), times every
    answer produced (`n`, and `best_of` candidates for completions, for each prompt of a
    completions batch). Chat without a
    maximum reserves `default_reservation` (Azure reserves a large amount, not what the answer
    turns out to use), never more than the model can write; legacy completions default to 16
    tokens, which is then the most they can write. Embeddings cost their input.

    Everything that decides the estimate is in this one function, so it is easy to retune."""
    return prompt_tokens + estimate_output_tokens(
        operation, body, default_reservation=default_reservation, max_output_tokens=max_output_tokens
    )


def estimate_output_tokens(
    operation: str, body: dict[str, Any], *, default_reservation: int = DEFAULT_RESERVATION, max_output_tokens: int = 0
) -> int:
    """The answer's share of `estimate_tokens`: the most the request may generate."""
    if operation not in ("chat", "completions", "responses"):
        return 0  # embeddings cost their input; audio and images are limited in requests
    limit = answer_limit(operation, body)
    if limit is None:
        if operation == "completions":
            limit = COMPLETIONS_DEFAULT_MAX_TOKENS
        else:
            limit = min(default_reservation, max_output_tokens) if max_output_tokens else default_reservation
    answers = 1 if operation == "responses" else max(whole(body.get("n")) or 1, whole(body.get("best_of")) or 1)
    if operation == "completions":
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            answers *= len(prompt)  # a batch: every prompt gets its own answers
    return int(limit) * answers


# --- The decision ------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    """The answer for one request: admitted, or why not and for how long."""

    allowed: bool
    reason: str | None = None  # TOKENS, REQUESTS or TOO_LARGE when refused
    retry_after: float = 0.0  # seconds until this request would fit
    token_wait: float = 0.0  # seconds until it fits the token window
    request_wait: float = 0.0  # seconds until it fits the request window
    remaining_tokens: int = 0
    remaining_requests: int = 0
    at: float = 0.0  # when the windows were checked, in the store's clock
    hinted: float = 0.0  # shared windows: when another replica told this client to retry (0.0: it did not)


def verdict(
    quota: Quota,
    token_wait: float,
    request_wait: float,
    tokens_used: int,
    requests_used: int,
    admitted: bool,
    at: float,
) -> Verdict:
    """Shape a store's findings; the longer wait names the reason (both must pass)."""
    remaining_tokens = max(0, quota.tokens - tokens_used)
    remaining_requests = max(0, quota.requests - requests_used)
    if admitted:
        return Verdict(True, remaining_tokens=remaining_tokens, remaining_requests=remaining_requests, at=at)
    reason = TOKENS if token_wait >= request_wait else REQUESTS
    return Verdict(
        False, reason, max(token_wait, request_wait), token_wait, request_wait, remaining_tokens, remaining_requests, at
    )
