"""Rate limits as Azure applies them, as plain logic: the token cost estimate, the sliding
windows (in memory, or in Redis so replicas share one quota), the decision, and the headers
and texts of the answers. Nothing here touches mitmproxy; the `Limits` stage
(ratelimit.py) applies it to flows.

Azure's model, which this follows:
- a deployment has a tokens-per-minute quota (TPM) and a request quota (RPM, by default
  6 per 1,000 TPM); either may be absent (0), which means no limit;
- a request's token cost is estimated when it arrives (prompt plus the most it may generate)
  and counted against a sliding 60-second window; a throttled request costs nothing;
- requests are counted over short windows (RPM/6 per 10 s, or RPM/60 per 1 s), so a burst
  is throttled even when the minute as a whole has room;
- the retry time given with a 429 is the moment the oldest entries that are in the way leave
  the window: a client that waits that long fits, unless others took the room meanwhile.

Provisioned (PTU) deployments follow Azure's utilization model instead: a leaky bucket per
deployment (see "Provisioned throughput" below).
"""

from __future__ import annotations

import builtins
import functools
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..openai.validation import answer_limit, whole

TOKEN_WINDOW = 60.0  # seconds; Azure's token quota is per minute
REQUESTS_PER_1000_TPM = 6  # Azure's default request quota for a token quota
DEFAULT_RESERVATION = 4096  # see estimate_tokens
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the legacy completions API's own default
# Entries leave a window this much early, so float noise in "time + wait" never keeps a
# client that waited exactly as told out (1 microsecond; the retry times are whole ms).
GRACE = 1e-6

TOKENS = "tokens"
REQUESTS = "requests"
TOO_LARGE = "too_large"
EARLY = "early_retry"

Clock = Callable[[], float]


# --- Quotas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """What one window key allows: tokens per 60 s and requests per short window (0: no limit)."""

    tokens: int = 0
    requests: int = 0
    request_window: float = 10.0

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
    body: dict,
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
    operation: str, body: dict, *, default_reservation: int = DEFAULT_RESERVATION, max_output_tokens: int = 0
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


# --- Windows ------------------------------------------------------------------------------


class SlidingWindow:
    """Amounts added over time; an amount stops counting `span` seconds after it was added.

    A deque of (time, amount) and a running total: adding and expiring cost O(1) amortized,
    and only a refusal walks the oldest entries to find when enough of them will have left."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, span: float) -> None:
        entries, cutoff = self.entries, now - span + GRACE
        while entries and entries[0][0] <= cutoff:
            self.total -= entries.popleft()[1]

    def wait_for(self, amount: int, limit: int, now: float, span: float) -> float:
        """Seconds until `amount` more fits under `limit` (0.0: it fits now). Call after expire."""
        excess = self.total + amount - limit
        if excess <= 0:
            return 0.0
        freed = 0
        for at, size in self.entries:
            freed += size
            if freed >= excess:
                return max(at + span - now, 1e-6)  # over the limit is never "fits now"
        return math.inf  # larger than the limit itself

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.total += amount


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


class _Pair:
    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.tokens = SlidingWindow()
        self.requests = SlidingWindow()


class MemoryWindows:
    """Windows of this process only, keyed by deployment (or other limited thing)."""

    shared: Literal[False] = False  # a literal, so a check of `shared` tells the two kinds apart

    def __init__(self) -> None:
        self.pairs: dict[str, _Pair] = {}
        self.buckets: dict[str, tuple[float, float]] = {}  # provisioned deployments: (level, when)

    def check(self, key: str, quota: Quota, cost: int, now: float) -> Verdict:
        """Admit the request and count it, or say how long until it would fit."""
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = _Pair()
        token_wait = request_wait = 0.0
        tokens, requests = pair.tokens, pair.requests
        if quota.tokens:
            tokens.expire(now, TOKEN_WINDOW)
            token_wait = tokens.wait_for(cost, quota.tokens, now, TOKEN_WINDOW)
        if quota.requests:
            requests.expire(now, quota.request_window)
            request_wait = requests.wait_for(1, quota.requests, now, quota.request_window)
        admitted = token_wait == 0.0 and request_wait == 0.0
        if admitted:
            if quota.tokens:
                tokens.add(now, cost)
            if quota.requests:
                requests.add(now, 1)
        return verdict(quota, token_wait, request_wait, tokens.total, requests.total, admitted, now)

    def usage(self, key: str, quota: Quota, now: float) -> tuple[int, int]:
        """Tokens and requests counted now in the key's windows."""
        pair = self.pairs.get(key)
        if pair is None:
            return 0, 0
        pair.tokens.expire(now, TOKEN_WINDOW)
        pair.requests.expire(now, quota.request_window)
        return pair.tokens.total, pair.requests.total

    def fill(self, key: str, capacity: Capacity, cost: int, now: float) -> Fill:
        """A provisioned deployment's bucket: admit the request and add its cost, or say when
        the utilization will be back at 100 %."""
        level, since = self.buckets.get(key, (0.0, now))
        level = drained(level, since, now, capacity.per_second)
        admitted, level, wait = admit(level, capacity, cost)
        self.buckets[key] = (level, now)
        return Fill(admitted, level / capacity.bucket, wait, now)

    def utilization(self, key: str, capacity: Capacity, now: float) -> float:
        level, since = self.buckets.get(key, (0.0, now))
        return drained(level, since, now, capacity.per_second) / capacity.bucket

    def reset(self) -> None:
        self.pairs.clear()
        self.buckets.clear()


# --- Provisioned throughput: utilization --------------------------------------------------

# Azure's model for provisioned deployments ("What is provisioned throughput?", how the
# service decides when to send a 429): a leaky bucket. A request is refused while the
# deployment's utilization is above 100 %, with the time until it is back at 100 %; otherwise
# its estimated cost (prompt tokens plus the most it may generate, output tokens weighted as
# the model's) is added, so one admitted request may take the utilization a little above
# 100 %. The level drains continuously at the deployment's capacity. Azure does not publish
# the bucket's size: here it holds one minute of capacity, so an idle deployment takes a
# burst of a minute's worth at once and a busy one is held to exactly its capacity.
PTU_BUCKET_SECONDS = 60.0
UTILIZATION = "utilization"  # the reason of a provisioned deployment's 429
UTILIZATION_HEADER = "azure-openai-deployment-utilization"


@dataclass(frozen=True)
class Capacity:
    """A provisioned deployment's throughput, in input-token equivalents."""

    per_minute: float  # PTUs × input tokens per minute per PTU
    output_weight: float  # input tokens one output token counts as

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0

    @property
    def bucket(self) -> float:
        """What 100 % utilization holds."""
        return self.per_minute * PTU_BUCKET_SECONDS / 60.0

    def cost(self, prompt_tokens: int, output_tokens: int) -> int:
        """A request's estimated cost: its prompt plus its weighted output allowance."""
        return prompt_tokens + math.ceil(output_tokens * self.output_weight)


@functools.lru_cache(maxsize=1024)
def ptu_capacity(ptu: int, input_tpm_per_ptu: int, output_weight: float) -> Capacity:
    return Capacity(float(ptu * input_tpm_per_ptu), float(output_weight))


@dataclass(slots=True)
class Fill:
    """A provisioned deployment's answer for one request."""

    allowed: bool
    utilization: float  # level / bucket: after this request when admitted, else as it stands
    retry_after: float = 0.0  # seconds until the utilization is back at 100 %
    at: float = 0.0  # when the bucket was checked, in the store's clock


def drained(level: float, since: float, now: float, per_second: float) -> float:
    return max(0.0, level - max(0.0, now - since) * per_second)


def admit(level: float, capacity: Capacity, cost: int) -> tuple[bool, float, float]:
    """(admitted, the level after, seconds to wait) for a bucket drained to `level` now.

    A client that waits exactly the time it was told finds the level at 100 % and gets in
    (GRACE absorbs float noise). The Redis script below does the same arithmetic."""
    wait = (level - capacity.bucket) / capacity.per_second
    if wait > GRACE:
        return False, level, wait
    return True, level + cost, 0.0


# --- Redis: one quota for every replica ---------------------------------------------------

# Both windows of one key, checked and updated in one atomic step. Token entries are members
# "<id>:<cost>" of a sorted set scored by arrival time, with their total kept beside them;
# request entries are "<id>" members of another. Keys expire once their window has passed.
REDIS_SCRIPT = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local tlimit = tonumber(ARGV[3])
local twin = tonumber(ARGV[4])
local rlimit = tonumber(ARGV[5])
local rwin = tonumber(ARGV[6])
local id = ARGV[7]
local grace = tonumber(ARGV[8])
local tttl = math.ceil(twin * 1000) + 1000
local rttl = math.ceil(rwin * 1000) + 1000

local function size(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

local used, twait = 0, 0
if tlimit > 0 then
  local cutoff = now - twin + grace
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  if #old > 0 then
    for _, m in ipairs(old) do used = used - size(m) end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
    if redis.call('ZCARD', KEYS[1]) == 0 then used = 0 end
    redis.call('SET', KEYS[2], used, 'PX', tttl)
  end
  local excess = used + cost - tlimit
  if excess > 0 then
    twait = -1
    local freed, start = 0, 0
    while twait < 0 do
      local batch = redis.call('ZRANGE', KEYS[1], start, start + 63, 'WITHSCORES')
      if #batch == 0 then twait = twin break end
      for i = 1, #batch, 2 do
        freed = freed + size(batch[i])
        if freed >= excess then twait = math.max(tonumber(batch[i + 1]) + twin - now, 0.000001) break end
      end
      start = start + 64
    end
  end
end

local count, rwait = 0, 0
if rlimit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - rwin + grace)
  count = redis.call('ZCARD', KEYS[3])
  local excess = count + 1 - rlimit
  if excess > 0 then
    local entry = redis.call('ZRANGE', KEYS[3], excess - 1, excess - 1, 'WITHSCORES')
    rwait = math.max(tonumber(entry[2]) + rwin - now, 0.000001)
  end
end

if twait == 0 and rwait == 0 then
  if tlimit > 0 then
    redis.call('ZADD', KEYS[1], now, id .. ':' .. cost)
    used = used + cost
    redis.call('SET', KEYS[2], used, 'PX', tttl)
    redis.call('PEXPIRE', KEYS[1], tttl)
  end
  if rlimit > 0 then
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('PEXPIRE', KEYS[3], rttl)
    count = count + 1
  end
  return {1, '0', '0', used, count, string.format('%.6f', now)}
end
return {0, tostring(twait), tostring(rwait), used, count, string.format('%.6f', now)}
"""

REDIS_PREFIX = "aoai-sim:"

# A provisioned deployment's bucket, drained, checked and filled in one atomic step: a hash
# of its level and when that was. The key expires once the level would have drained to 0.
PTU_SCRIPT = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local rate = tonumber(ARGV[2])
local bucket = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
level = math.max(0, level - math.max(0, now - at) * rate)
local wait = (level - bucket) / rate
if wait > grace then
  return {0, string.format('%.17g', level), string.format('%.17g', wait), string.format('%.6f', now)}
end
level = level + cost
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(level / rate * 1000) + 1000)
return {1, string.format('%.17g', level), '0', string.format('%.6f', now)}
"""


class RedisWindows:
    """The same windows in Redis, so every replica pointed at it enforces one quota.

    The script runs atomically in Redis and reads Redis's own clock, so replicas neither race
    for the last room nor disagree about time, however long their round trips take. With
    `server_time` off, the caller's `now` is used instead (tests drive it)."""

    shared: Literal[True] = True

    def __init__(self, client: Any, prefix: str = REDIS_PREFIX, server_time: bool = True):
        self.client = client
        self.prefix = prefix
        self.server_time = server_time
        self.script = client.register_script(REDIS_SCRIPT)
        self.ptu_script = client.register_script(PTU_SCRIPT)
        self._origin = os.urandom(4).hex()  # keeps entry ids unique across replicas
        self._serial = 0

    @classmethod
    def from_url(cls, url: str, prefix: str = REDIS_PREFIX, server_time: bool = True) -> RedisWindows:
        import redis.asyncio

        return cls(redis.asyncio.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5), prefix, server_time)

    def keys(self, key: str) -> list[str]:
        base = f"{self.prefix}{{{key}}}"  # one hash slot per key, for Redis Cluster
        return [base + ":t", base + ":tsum", base + ":r"]

    async def check(self, key: str, quota: Quota, cost: int, now: float) -> Verdict:
        self._serial += 1
        allowed, twait, rwait, used, count, at = await self.script(
            keys=self.keys(key),
            args=[
                "" if self.server_time else repr(now),
                cost,
                quota.tokens,
                TOKEN_WINDOW,
                quota.requests,
                quota.request_window,
                f"{self._origin}{self._serial}",
                GRACE,
            ],
        )
        return verdict(quota, float(twait), float(rwait), int(used), int(count), bool(int(allowed)), float(at))

    async def fill(self, key: str, capacity: Capacity, cost: int, now: float) -> Fill:
        allowed, level, wait, at = await self.ptu_script(
            keys=[f"{self.prefix}{{{key}}}:u"],
            args=["" if self.server_time else repr(now), capacity.per_second, capacity.bucket, cost, GRACE],
        )
        return Fill(bool(int(allowed)), float(level) / capacity.bucket, float(wait), float(at))

    async def utilization(self, key: str, capacity: Capacity, now: float) -> float:
        # A cost of 0 changes nothing but the moment the level was drained to.
        return (await self.fill(key, capacity, 0, now)).utilization

    async def ping(self) -> None:
        await self.client.ping()

    async def reset(self) -> None:
        batch = []
        async for name in self.client.scan_iter(match=self.prefix + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                await self.client.unlink(*batch)
                batch = []
        if batch:
            await self.client.unlink(*batch)

    async def close(self) -> None:
        await self.client.aclose()


# --- What the answers say -----------------------------------------------------------------


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
    headers = {}
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


# A request that can never fit: Azure answers it with a retry time of a day, which SDKs refuse
# to wait for; we say so in words too.
NEVER_SECONDS = 86400


def too_large_message(operation: str, api_version: str | None, deployment: str, cost: int, limit: int) -> str:
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


# --- Who was throttled, and who came back too soon ----------------------------------------


@dataclass
class Counters:
    """429s by (deployment, reason) and early retries by deployment, for logs and metrics."""

    throttled: Counter = field(default_factory=Counter)
    early_retries: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        throttled: dict[str, dict[str, int]] = {}
        for (name, reason), n in sorted(self.throttled.items()):
            throttled.setdefault(name, {})[reason] = n
        return {"throttled": throttled, "earlyRetries": dict(sorted(self.early_retries.items()))}

    def clear(self) -> None:
        self.throttled.clear()
        self.early_retries.clear()


class RetryHints:
    """When each throttled client was told it may retry, to catch those that come back early.

    A client is recognised by an identity the caller derives from the request and hashes
    (see ratelimit.client_identity): every hint takes the same few bytes, however long the
    request id a client sends, and at most `max_bytes` of them are kept (past that, the hints
    already due go, then the oldest half). A hint is used once, by the next request with that
    identity."""

    ENTRY_BYTES = 160  # a 16-byte digest, its due time and its dict slot, measured
    DEFAULT_MAX_BYTES = 8 * 1024 * 1024

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.due: dict[bytes, float] = {}

    def __bool__(self) -> bool:
        return bool(self.due)

    def __len__(self) -> int:
        return len(self.due)

    @property
    def capacity(self) -> int:
        return max(1, self.max_bytes // self.ENTRY_BYTES)

    @property
    def bytes(self) -> int:
        return len(self.due) * self.ENTRY_BYTES

    def told(self, identity: builtins.bytes, due: float, now: float) -> None:
        capacity = self.capacity
        if len(self.due) >= capacity:
            self.due = {k: t for k, t in self.due.items() if t > now}
            if len(self.due) >= capacity:  # all still pending: keep the newest half
                self.due = dict(list(self.due.items())[len(self.due) - capacity // 2 :])
        self.due[identity] = due

    def arrived(self, identity: builtins.bytes, now: float) -> float:
        """How many seconds too early this request came back (0.0: on time or no hint)."""
        due = self.due.pop(identity, None)
        return due - now if due is not None and due - now > GRACE else 0.0

    def clear(self) -> None:
        self.due.clear()

    def usage(self) -> dict:
        """For /++/limits: what the hints hold and may hold."""
        return {"count": len(self.due), "maxCount": self.capacity, "bytes": self.bytes, "maxBytes": self.max_bytes}


class Limiter:
    """The windows (in memory or Redis), the clock, and what was refused."""

    def __init__(self, store: MemoryWindows | RedisWindows | None = None, clock: Clock | None = None):
        self.store: MemoryWindows | RedisWindows = store or MemoryWindows()
        # Memory windows need only a steady clock; shared ones need the wall clock all
        # replicas agree on.
        self.clock: Clock = clock or (time.time if self.store.shared else time.monotonic)
        self.counters = Counters()
        self.hints = RetryHints()

    def use(self, store: MemoryWindows | RedisWindows, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or (time.time if store.shared else time.monotonic)
        self.hints.clear()

    def check(self, key: str, quota: Quota, cost: int):
        """The verdict, or for shared windows an awaitable of it. A cost above the whole token
        quota is refused at once: no window could ever hold it."""
        if quota.tokens and cost > quota.tokens:
            return Verdict(
                False,
                TOO_LARGE,
                float(NEVER_SECONDS),
                float(NEVER_SECONDS),
                0.0,
                quota.tokens,
                quota.requests,
                self.clock(),
            )
        return self.store.check(key, quota, cost, self.clock())

    def fill(self, key: str, capacity: Capacity, cost: int):
        """A provisioned deployment's verdict (a Fill), or for shared windows an awaitable of it."""
        return self.store.fill(key, capacity, cost, self.clock())

    def throttled(self, name: str, reason: str, identity: bytes | None, wait: float) -> None:
        self.counters.throttled[(name, reason)] += 1
        if identity is not None and reason != TOO_LARGE:
            now = self.clock()
            # The client may retry once the rounded-up wait it was given has passed.
            self.hints.told(identity, now + whole_ms(wait) / 1000, now)

    def early(self, name: str, identity: bytes) -> float:
        """Seconds this request came before its retry time (0.0: it did not); counted."""
        early = self.hints.arrived(identity, self.clock())
        if early > 0:
            self.counters.early_retries[name] += 1
        return early

    async def reset(self) -> None:
        if self.store.shared:
            await self.store.reset()
        else:
            self.store.reset()
        self.hints.clear()
