"""Windows and buckets kept in Redis, so every replica pointed at one server enforces one
quota: the Lua scripts that check and count atomically, and the store that runs them."""

from __future__ import annotations

import os
from typing import Any

from .ptu import Capacity, Fill
from .quota import GRACE, TOKEN_WINDOW, Quota, Verdict, verdict

# Both windows of one key, checked and updated in one atomic step. Token entries are members
# "<id>:<cost>" of a sorted set scored by arrival time, with their total kept beside them;
# request entries are "<id>" members of another. Keys expire once their window has passed.
REDIS_SCRIPT = """
-- A retry hint another replica gave this client (KEYS[4]), taken once: read with the check.
local hinted = ''
if #KEYS >= 4 then
  hinted = redis.call('GET', KEYS[4]) or ''
  if hinted ~= '' then redis.call('DEL', KEYS[4]) end
end
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
-- 'check' counts what fits; 'peek' only looks; 'charge' counts tokens used, whatever is left.
local mode = ARGV[9] or 'check'
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

if mode == 'charge' then twait, rwait = 0, 0 end
if twait == 0 and rwait == 0 and mode ~= 'peek' then
  if tlimit > 0 and cost > 0 then
    redis.call('ZADD', KEYS[1], now, id .. ':' .. cost)
    used = used + cost
    redis.call('SET', KEYS[2], used, 'PX', tttl)
    redis.call('PEXPIRE', KEYS[1], tttl)
  end
  if rlimit > 0 and mode == 'check' then
    redis.call('ZADD', KEYS[3], now, id)
    redis.call('PEXPIRE', KEYS[3], rttl)
    count = count + 1
  end
  return {1, '0', '0', used, count, string.format('%.6f', now), hinted}
end
if twait == 0 and rwait == 0 then
  return {1, '0', '0', used, count, string.format('%.6f', now), hinted}
end
return {0, tostring(twait), tostring(rwait), used, count, string.format('%.6f', now), hinted}
"""

REDIS_PREFIX = "aoai-sim:quota:"  # apart from the other shared state: a reset empties only these

# A provisioned deployment's bucket, drained, checked and filled in one atomic step: a hash
# of its level and when that was. The key expires once the level would have drained to 0.
PTU_SCRIPT = """
-- A retry hint another replica gave this client (KEYS[2]), taken once: read with the check.
local hinted = ''
if #KEYS >= 2 then
  hinted = redis.call('GET', KEYS[2]) or ''
  if hinted ~= '' then redis.call('DEL', KEYS[2]) end
end
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
  return {0, string.format('%.17g', level), string.format('%.17g', wait), string.format('%.6f', now), hinted}
end
level = level + cost
redis.call('HSET', KEYS[1], 'level', string.format('%.17g', level), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(level / rate * 1000) + 1000)
return {1, string.format('%.17g', level), '0', string.format('%.6f', now), hinted}
"""


class RedisWindows:
    """The same windows in Redis, so every replica pointed at it enforces one quota.

    The script runs atomically in Redis and reads Redis's own clock, so replicas neither race
    for the last room nor disagree about time, however long their round trips take. With
    `server_time` off, the caller's `now` is used instead (tests drive it)."""

    shared = True

    def __init__(self, client: Any, prefix: str = REDIS_PREFIX, server_time: bool = True) -> None:
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

    async def check(
        self, key: str, quota: Quota, cost: int, now: float, hint: str = "", mode: str = "check"
    ) -> Verdict:
        """The verdict; with `hint` (a retry hint's key), the hint is taken in the same step
        and its due time given as the verdict's `hinted`. `mode` "peek" only looks; "charge"
        counts `cost` tokens used (no request), whatever room is left."""
        self._serial += 1
        allowed, twait, rwait, used, count, at, *hinted = await self.script(
            keys=self.keys(key) + ([hint] if hint else []),
            args=[
                "" if self.server_time else repr(now),
                cost,
                quota.tokens,
                TOKEN_WINDOW,
                quota.requests,
                quota.request_window,
                f"{self._origin}{self._serial}",
                GRACE,
                mode,
            ],
        )
        found = verdict(quota, float(twait), float(rwait), int(used), int(count), bool(int(allowed)), float(at))
        found.hinted = _due(hinted)
        return found

    async def fill(self, key: str, capacity: Capacity, cost: int, now: float, hint: str = "") -> Fill:
        allowed, level, wait, at, *hinted = await self.ptu_script(
            keys=[f"{self.prefix}{{{key}}}:u"] + ([hint] if hint else []),
            args=["" if self.server_time else repr(now), capacity.per_second, capacity.bucket, cost, GRACE],
        )
        return Fill(bool(int(allowed)), float(level) / capacity.bucket, float(wait), float(at), _due(hinted))

    async def utilization(self, key: str, capacity: Capacity, now: float) -> float:
        # A cost of 0 changes nothing but the moment the level was drained to.
        return (await self.fill(key, capacity, 0, now)).utilization

    async def ping(self) -> None:
        await self.client.ping()

    async def reset(self) -> None:
        batch: list[Any] = []
        async for name in self.client.scan_iter(match=self.prefix + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                await self.client.unlink(*batch)
                batch = []
        if batch:
            await self.client.unlink(*batch)

    async def close(self) -> None:
        await self.client.aclose()


def _due(hinted: list[Any]) -> float:
    """A hint's due time as the script gave it back (0.0: none)."""
    try:
        return float(hinted[0]) if hinted and hinted[0] else 0.0
    except ValueError:
        return 0.0
