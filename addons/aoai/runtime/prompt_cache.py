"""Prompt caching as Azure reports it: a prompt of at least 1,024 tokens whose beginning the
same deployment saw recently reports that beginning as `cached_tokens`, in steps of 128.

The cache keeps a digest of each prompt prefix at those steps (1,024, 1,152, …), never the
text nor the deployment's name (both are inside the digest), so every entry takes the same
few bytes however long the prompt or the name; an entry not used for `idle_s` is forgotten,
as Azure's cache is after minutes idle, and at most `max_bytes` of entries are kept
(PROMPT_CACHE_MAX_BYTES; the least recently used go first).

With SIMULATOR_REDIS_URL, the replicas share one cache: a sorted set of prefix digests scored
by last use (wall clock), asked and refreshed by one script per prompt (`use_shared`) under the
same idle time and byte budget. Each replica still keeps its own, which answers while Redis is
away; what it saw meanwhile is written to Redis once it is back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .shared import Shared

MIN_TOKENS = 1024
STEP = 128
DEFAULT_IDLE_S = 300.0
ENTRY_BYTES = 200  # a 16-byte digest, its last use and its ordered-dict slot, measured
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # PROMPT_CACHE_MAX_BYTES's default: about 100,000 entries
CATCH_UP_BATCH = 512  # entries written to Redis per call when it is back

Digests = list[tuple[int, bytes]]  # (prefix length in tokens, digest), shortest first

# KEYS: the sorted set (digest -> last use, wall clock). ARGV: now, idle seconds, capacity,
# then the prompt's prefix digests, shortest first. Forgets the idle entries, finds the
# longest prefix already there, marks them all used now and trims to the capacity (the least
# recently used go first). Returns how many prefixes were cached (the longest's place).
SHARED_SCRIPT = """
local key = KEYS[1]
local now, idle, capacity = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - idle)
local cached = 0
for i = 4, #ARGV do
  if redis.call('ZSCORE', key, ARGV[i]) then cached = i - 3 end
end
for i = 4, #ARGV do
  -- A step apart, so the shorter prefixes count as used a little earlier and leave first.
  redis.call('ZADD', key, now + (i - 4) * 0.000001, ARGV[i])
end
local extra = redis.call('ZCARD', key) - capacity
if extra > 0 then redis.call('ZREMRANGEBYRANK', key, 0, extra - 1) end
redis.call('PEXPIRE', key, math.ceil(idle * 1000) + 1000)
return cached
"""

# KEYS: the sorted set. ARGV: idle seconds, capacity, then pairs of last use and digest: what
# a replica saw while Redis was away, kept where it is newer than what Redis holds.
CATCH_UP_SCRIPT = """
local key = KEYS[1]
local idle, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local used, digest = tonumber(ARGV[i]), ARGV[i + 1]
  local known = redis.call('ZSCORE', key, digest)
  if not known or tonumber(known) < used then redis.call('ZADD', key, used, digest) end
end
local extra = redis.call('ZCARD', key) - capacity
if extra > 0 then redis.call('ZREMRANGEBYRANK', key, 0, extra - 1) end
redis.call('PEXPIRE', key, math.ceil(idle * 1000) + 1000)
return 0
"""


class PromptCache:
    def __init__(self, idle_s: float = DEFAULT_IDLE_S, capacity: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.idle_s = idle_s
        # Entries are all the same size: the byte budget is a count (`capacity` sets it directly).
        self.max_bytes = max_bytes if capacity is None else capacity * ENTRY_BYTES
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # prefix digest -> last used
        self._lock = threading.Lock()
        self.shared: Shared | None = None  # the Redis replicas share the cache through, if any
        self._away_since: float | None = None  # (monotonic) the first use Redis did not see

    def share_through(self, shared: Shared) -> None:
        """Share the cache through `shared` (when it names a Redis); catch up when it returns."""
        self.shared = shared
        shared.on_return(self.catch_up)

    @property
    def sharing(self) -> bool:
        return self.shared is not None and bool(self.shared.enabled)

    @property
    def capacity(self) -> int:
        return max(1, self.max_bytes // ENTRY_BYTES)

    @property
    def bytes(self) -> int:
        return len(self._seen) * ENTRY_BYTES

    def use(self, deployment: str, token_ids: Sequence[int], now: float | None = None) -> int:
        """The tokens of this prompt that were cached; the prompt is remembered for next time."""
        return self.remember(self.digests(deployment, token_ids), now)

    @staticmethod
    def digests(deployment: str, token_ids: Sequence[int]) -> Digests:
        """The prompt's prefix digests (none below MIN_TOKENS)."""
        return _prefix_digests(deployment, token_ids) if len(token_ids) >= MIN_TOKENS else []

    def remember(self, digests: Digests, now: float | None = None) -> int:
        """This replica's cache: the tokens of the prompt (given by its digests) that were
        cached; they are remembered for next time."""
        if not digests:
            return 0
        now = time.monotonic() if now is None else now
        cached = 0
        with self._lock:
            self._forget_idle(now)
            for length, digest in digests:
                if digest in self._seen:
                    cached = length
                self._seen[digest] = now
                self._seen.move_to_end(digest)
            capacity = self.capacity
            while len(self._seen) > capacity:
                self._seen.popitem(last=False)
        return cached

    async def use_shared(self, digests: Digests, local: int, now: float | None = None) -> int:
        """The tokens of the prompt any replica's use left cached (Redis asked, the prompt
        remembered there); `local` (what `remember` found here) when Redis is away."""
        shared = self.shared
        if not digests or shared is None or shared.client is None:
            return local
        script = shared.script(SHARED_SCRIPT)
        keys = [shared.key("{prompt-cache}")]
        args = [repr(shared.clock() if now is None else now), self.idle_s, self.capacity, *(d for _, d in digests)]
        found: int | None = await shared.call("asking the prompt cache", lambda _c: script(keys=keys, args=args), None)
        if found is None:  # not seen by Redis: written once it is back
            since = time.monotonic()
            self._away_since = since if self._away_since is None else min(self._away_since, since)
            return local
        found = int(found)
        return max(local, digests[found - 1][0] if found else 0)

    async def catch_up(self) -> None:
        """Write to Redis the entries this replica used while Redis was away (those still here)."""
        shared, since = self.shared, self._away_since
        if shared is None or shared.client is None or since is None:
            return
        self._away_since = None
        wall, steady = shared.clock(), time.monotonic()
        with self._lock:
            recent = []
            for digest, used in reversed(self._seen.items()):  # newest first
                if used < since - 1:
                    break
                recent.append((wall - (steady - used), digest))
        script = shared.script(CATCH_UP_SCRIPT)
        keys = [shared.key("{prompt-cache}")]
        for start in range(0, len(recent), CATCH_UP_BATCH):
            args: list[Any] = [self.idle_s, self.capacity]
            for used, digest in recent[start : start + CATCH_UP_BATCH]:
                args += [repr(used), digest]

            async def write(_client: Any, args: list[Any] = args) -> int:
                return int(await script(keys=keys, args=args))

            if await shared.call("catching up the prompt cache", write, None) is None:
                self._away_since = since  # lost again: try all of it next time
                return

    async def shared_usage(self) -> dict[str, int] | None:
        """What the shared cache holds in Redis (count, bytes as budgeted); None when it cannot say."""
        shared = self.shared
        if shared is None or not shared.enabled:
            return None
        key = shared.key("{prompt-cache}")
        count: int | None = await shared.call("reading the prompt cache's size", lambda c: c.zcard(key), None)
        return None if count is None else {"count": int(count), "bytes": int(count) * ENTRY_BYTES}

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _forget_idle(self, now: float) -> None:
        # Entries are in order of last use: the idle ones are at the front.
        while self._seen:
            digest, used = next(iter(self._seen.items()))
            if now - used < self.idle_s:
                return
            del self._seen[digest]

    def __len__(self) -> int:
        return len(self._seen)

    def usage(self) -> dict[str, Any]:
        """For /++/limits: what the cache holds and may hold."""
        return {"count": len(self._seen), "maxCount": self.capacity, "bytes": self.bytes, "maxBytes": self.max_bytes}


def _prefix_digests(deployment: str, token_ids: Sequence[int]) -> list[tuple[int, bytes]]:
    """(length, digest) of the prompt's prefixes of 1,024 tokens and every 128 after."""
    running = hashlib.blake2b(deployment.encode() + b"\0", digest_size=16)
    out, start = [], 0
    for length in range(MIN_TOKENS, len(token_ids) + 1, STEP):
        running.update(b"".join(t.to_bytes(4, "little") for t in token_ids[start:length]))
        out.append((length, running.copy().digest()))
        start = length
    return out
