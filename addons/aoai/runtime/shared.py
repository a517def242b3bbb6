"""State that replicas share through one Redis (SIMULATOR_REDIS_URL): each replica keeps its
own stores in memory and writes what it makes to Redis too, so a replica that does not hold
something (a stored response, an image, an analysis) reads it from there.

Redis is a help, never a dependency of an answer: when it cannot be reached, each call
returns at once as if nothing were shared, the replica serves from its own memory, logs the
loss once and counts it (`failures`), and a probe every second notices when it is back; then
the hooks given to `on_return` run, so each store can catch up.

Everything lives under the prefix, in "bags": a bag is one kind of value (responses, images,
…) bounded in bytes and count, each value with a time to live. One Lua script puts a value
and evicts the oldest past the bounds in one atomic step, so replicas writing at once never
leave a bag above its budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

logger = logging.getLogger(__name__)

PREFIX = "aoai-sim:"
PROBE_EVERY_S = 1.0  # while Redis is away, how often it is asked whether it is back
CONNECT_TIMEOUT_S = 3.0
CALL_TIMEOUT_S = 2.0  # a call that takes longer counts as Redis lost: answers do not wait for it
CLEANUP_PER_PUT = 64  # expired entries a put forgets at most (bounded work per call)

T = TypeVar("T")

# KEYS: the bag's index (sorted set: name -> when put), its sizes (hash: name -> bytes), its
# byte total, and the value's key. ARGV: now (s), ttl (ms), max bytes, max count, the value's
# size, its name, the value, the key prefix of the bag's values, cleanup batch.
# Returns the names evicted to make room.
PUT_SCRIPT = """
local index, sizes, total, key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_bytes, max_count, size = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local name, value, base, batch = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local used = tonumber(redis.call('GET', total) or '0')
local function forget(n)
  local s = tonumber(redis.call('HGET', sizes, n) or '0')
  redis.call('HDEL', sizes, n)
  redis.call('ZREM', index, n)
  redis.call('UNLINK', base .. n)
  used = used - s
end
-- Entries past their time: their values have expired already, their accounting goes now.
local old = redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl / 1000, 'LIMIT', 0, batch)
for _, n in ipairs(old) do forget(n) end
if redis.call('HEXISTS', sizes, name) == 1 then forget(name) end
local evicted = {}
if size > max_bytes then
  redis.call('SET', total, math.max(used, 0))
  return evicted
end
redis.call('SET', key, value, 'PX', ttl)
redis.call('ZADD', index, now, name)
redis.call('HSET', sizes, name, size)
used = used + size
while used > max_bytes or redis.call('ZCARD', index) > max_count do
  local oldest = redis.call('ZRANGE', index, 0, 0)
  if #oldest == 0 then break end
  forget(oldest[1])
  evicted[#evicted + 1] = oldest[1]
end
redis.call('SET', total, math.max(used, 0))
return evicted
"""

# KEYS: index, sizes, total, value key. ARGV: name. Returns 1 when it was there.
DELETE_SCRIPT = """
local s = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
local gone = redis.call('DEL', KEYS[4])
if s then redis.call('DECRBY', KEYS[3], tonumber(s)) end
return gone
"""

# What a Redis call can raise when Redis is away or slow, without importing redis here.
_LOST = (OSError, asyncio.TimeoutError, ConnectionError)

RAW, DEFLATED = b"\x00", b"\x01"
COMPRESS_FROM = 1024  # values smaller than this are kept as they are


def pack(value: Any) -> bytes:
    """A JSON value as compact bytes: deflated when that is worth it."""
    data = orjson.dumps(value)
    if len(data) < COMPRESS_FROM:
        return RAW + data
    return DEFLATED + zlib.compress(data, 1)


def unpack(data: bytes) -> Any:
    if data[:1] == DEFLATED:
        return orjson.loads(zlib.decompress(data[1:]))
    return orjson.loads(data[1:])


def redis_unreachable(url: str) -> str | None:
    """Why Redis at `url` cannot be used, or None. Asked once at start-up, before the port opens."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except Exception as e:
        return str(e) or type(e).__name__
    finally:
        client.close()
    return None


def _redis_errors() -> tuple[type[BaseException], ...]:
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - redis is a dependency
        return _LOST
    return (*_LOST, redis.exceptions.RedisError)


class Shared:
    """One Redis client for the shared state, and whether Redis is there right now."""

    def __init__(self, prefix: str = PREFIX, clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self.url = ""
        self.client: Any = None
        self.up = True
        self.failures = 0  # calls that failed because Redis was away or slow (aoai_shared_state_failures_total)
        self.replica = os.urandom(6).hex()  # this process, as the other replicas see it
        self._errors = _redis_errors()
        self._returns: list[Callable[[], Awaitable[None]]] = []
        self._probe: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def use(self, url: str, client: Any = None) -> None:
        """Share through Redis at `url` ("": nothing shared). `client` replaces the one made
        from the URL (tests)."""
        if url == self.url and client is None:
            return
        self.url = url
        self.up = True
        self._scripts.clear()
        if not url:
            self.client = None
            return
        if client is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(
                url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CALL_TIMEOUT_S
            )
        self.client = client

    def on_return(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` each time Redis is reachable again after it was lost."""
        self._returns.append(hook)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def script(self, source: str) -> Any:
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self.client.register_script(source)
        return found

    async def call(self, what: str, action: Callable[[Any], Awaitable[T]], default: T) -> T:
        """`action(client)`'s result, or `default` when nothing is shared, Redis is away, or
        the call fails; `what` names the call in the log."""
        if self.client is None or not self.up:
            return default
        try:
            return await asyncio.wait_for(action(self.client), CALL_TIMEOUT_S + 1)
        except self._errors as e:
            self.lost(what, e)
            return default

    def lost(self, what: str, error: BaseException) -> None:
        """Redis failed a call: serve from memory until the probe finds it again."""
        self.failures += 1
        if not self.up:
            return
        self.up = False
        logger.error(
            "shared state: Redis at %s failed (%s while %s); each replica serves from its own memory until it is back",
            self.url,
            f"{type(error).__name__}: {error}".rstrip(": "),
            what,
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._probe is None or self._probe.done():
            self._probe = loop.create_task(self._wait_for_return())

    async def _wait_for_return(self) -> None:
        while self.client is not None:
            await asyncio.sleep(PROBE_EVERY_S)
            client = self.client
            if client is None:
                return
            try:
                await asyncio.wait_for(client.ping(), CALL_TIMEOUT_S)
            except self._errors:
                continue
            self.up = True
            logger.warning("shared state: Redis at %s is back; catching up", self.url)
            for hook in list(self._returns):
                try:
                    await hook()
                except self._errors as e:
                    self.lost("catching up", e)
                    break
                except Exception:
                    logger.exception("shared state: catching up failed")
            return

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
        client, self.client, self.url = self.client, None, ""
        if client is not None:
            await client.aclose()


class Bag:
    """One kind of shared value: at most `max_bytes` and `max_count` of them, each for
    `ttl_s` seconds, the oldest evicted first. Its settings may change while it runs."""

    def __init__(self, shared: Shared, kind: str, ttl_s: float, max_bytes: int, max_count: int = 2**31) -> None:
        self.shared, self.kind = shared, kind
        self.ttl_s, self.max_bytes, self.max_count = ttl_s, max_bytes, max_count

    @property
    def enabled(self) -> bool:
        return self.shared.enabled

    def _keys(self, name: str) -> list[str]:
        # One hash slot ({kind}) for a bag, so its script may touch all of its keys.
        base = self.shared.key("{" + self.kind + "}", "")
        return [base + "index", base + "sizes", base + "bytes", base + "v:" + name]

    async def put(self, name: str, value: bytes) -> bool:
        """Share `value` under `name`; False when Redis could not take it (or it is larger than
        the whole budget, and so is not kept)."""
        if len(value) > self.max_bytes:
            return False
        keys = self._keys(name)
        base = keys[3][: -len(name)] if name else keys[3]
        args = [
            repr(self.shared.clock()),
            max(1, int(self.ttl_s * 1000)),
            self.max_bytes,
            self.max_count,
            len(value),
            name,
            value,
            base,
            CLEANUP_PER_PUT,
        ]
        script = self.shared.script(PUT_SCRIPT) if self.shared.client is not None else None
        if script is None:
            return False
        missing = object()
        done = await self.shared.call(f"sharing a {self.kind} value", lambda _c: script(keys=keys, args=args), missing)
        return done is not missing

    def key(self, name: str) -> str:
        """The Redis key of the value `name` (for a script that reads it along with other work)."""
        return self._keys(name)[3]

    async def get(self, name: str) -> bytes | None:
        key = self._keys(name)[3]
        found: bytes | None = await self.shared.call(f"reading a {self.kind} value", lambda c: c.get(key), None)
        return found

    async def delete(self, name: str) -> bool:
        keys = self._keys(name)
        script = self.shared.script(DELETE_SCRIPT) if self.shared.client is not None else None
        if script is None:
            return False
        gone = await self.shared.call(f"deleting a {self.kind} value", lambda _c: script(keys=keys, args=[name]), 0)
        return bool(gone)

    async def clear(self) -> None:
        """Forget every value of the bag (a reset of the rate limits forgets the retry hints)."""
        pattern = self.shared.key("{" + self.kind + "}", "*")

        async def unlink_all(client: Any) -> None:
            batch: list[Any] = []
            async for name in client.scan_iter(match=pattern, count=500):
                batch.append(name)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)

        await self.shared.call(f"emptying the {self.kind} bag", unlink_all, None)

    async def usage(self) -> dict[str, int] | None:
        """What the bag holds in Redis (count, bytes); None when Redis cannot say."""
        keys = self._keys("")

        async def read(client: Any) -> dict[str, int]:
            pipe = client.pipeline(transaction=False)
            pipe.zcard(keys[0])
            pipe.get(keys[2])
            count, used = await pipe.execute()
            return {"count": int(count), "bytes": int(used or 0)}

        return await self.shared.call(f"reading the {self.kind} bag's size", read, None)
