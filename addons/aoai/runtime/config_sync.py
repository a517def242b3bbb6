"""Runtime configuration changes shared by every replica through Redis (SIMULATOR_REDIS_URL).

What PATCH /++/config can change is kept in Redis as one *state*: a PATCH-shaped body that
sets all of it (mode, seed, undefined deployments, latency, every deployment, the default
faults), with a version. A replica that takes a change writes the whole new state, but only
if the version is still the one it last applied (`write`, one Lua script that also bumps the
version and announces it); otherwise it is told the newer version, takes that first and tries
again. Every replica listens for the announcements and asks for the version every second too
(an announcement is lost while Redis is away), applies a newer state, and reports the version
it holds with a heartbeat, so the replica that took a change can say which replicas have it.

The same channel carries resets of the rate limits (each replica empties what it holds
itself) and quota cuts a fault draw started (each replica cuts the deployment's quota too; the
cuts in force are kept under a key that expires with the last of them, for replicas that start
later).

Layout of the keys under the prefix: `config` (hash: version, state, by), `config:notices`
(channel), `config:replicas` (hash: replica -> its version, last reset and heartbeat time),
`config:cuts` (hash: deployment label -> until and tokens).

This module knows Redis only: how a state is made from the configuration and applied to it
is the management stage's, given as `Hooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .shared import Shared
from .tasks import background

logger = logging.getLogger(__name__)

POLL_S = 1.0  # how often the version is asked for (and the heartbeat written)
ALIVE_S = 5.0  # a replica whose heartbeat is older than this is taken for gone
FORGET_S = 3600.0  # a replica not seen for this long leaves the replicas hash
WAIT_S = 1.0  # how long an answer waits for the other replicas to report a change
WRITE_TRIES = 4  # a change that keeps meeting newer versions is refused after this many tries

APPLIED, PENDING = "applied", "pending"

# KEYS: the config hash. ARGV: the version the writer holds, the state, the writer, the
# channel. Returns {1, new version} when written, {0, the version there} when it moved on.
WRITE_SCRIPT = """
local held = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if held ~= tonumber(ARGV[1]) then return {0, held} end
local version = held + 1
redis.call('HSET', KEYS[1], 'version', version, 'state', ARGV[2], 'by', ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"kind":"config","version":' .. version .. ',"by":' .. cjson.encode(ARGV[3]) .. '}')
return {1, version}
"""

# KEYS: the cuts hash. ARGV: label, the cut (JSON), until (ms since 1970), the channel, the
# notice. The hash lives as long as its longest cut.
CUT_SCRIPT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ends = tonumber(ARGV[3])
local left = redis.call('PEXPIRETIME', KEYS[1])
if left < ends then redis.call('PEXPIREAT', KEYS[1], ends) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""


@dataclass
class Hooks:
    """What the replica does with what the others share (the management stage gives them)."""

    state: Callable[[], dict[str, Any]]  # the configuration now, as a state
    apply: Callable[[dict[str, Any]], str]  # apply a state; "" when taken, else why not
    reset: Callable[[], None]  # empty this replica's own rate-limit state (hints)
    cut: Callable[[str, float, int], None]  # a quota cut from elsewhere: label, until (wall clock), tokens


@dataclass
class Written:
    """How a write ended: `version` is the new one when `written`, else the newer one found
    (`state` with it), or 0 with `away` when Redis could not be asked."""

    written: bool
    version: int = 0
    state: dict[str, Any] | None = None
    away: bool = False


def _unpacked(value: Any) -> Any:
    return orjson.loads(value) if value else None


class ConfigSync:
    """This replica's side of the shared configuration."""

    def __init__(self, shared: Shared, name: Callable[[], str], hooks: Hooks, clock: Callable[[], float] = time.time):
        self.shared, self.name, self.hooks, self.clock = shared, name, hooks, clock
        self.version = 0  # the shared version this replica last took (or wrote)
        self.refused = ""  # why this replica could not take `version`, if it could not
        self.last_reset = ""  # the last reset this replica did
        self.unpublished = False  # a change taken while Redis was away, to write when it is back
        self.lock = asyncio.Lock()  # one change at a time: a client's, or one from elsewhere
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._hooked = False

    @property
    def enabled(self) -> bool:
        return self.shared.enabled

    def key(self, *parts: str) -> str:
        return self.shared.key("config", *parts) if parts else self.shared.key("config")

    @property
    def channel(self) -> str:
        return self.key("notices")

    # --- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        """Take the state and the quota cuts the others share, then follow them."""
        if not self.enabled:
            return
        if not self._hooked:
            self.shared.on_return(self.caught_up)
            self._hooked = True
        self.lock = asyncio.Lock()  # of this loop
        try:  # before anything is read: no notice written meanwhile is missed
            await self._subscribe()
        except Exception as e:  # Redis lost: the listener subscribes once it is back
            await self._close_pubsub()
            self._lost("subscribing to configuration changes", e)
        await self._replace_an_earlier_launch()
        await self.follow()
        await self._read_cuts()
        await self.heartbeat()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _replace_an_earlier_launch(self) -> None:
        """With no other replica alive, a configuration in Redis is an earlier launch's (Redis
        outlived it): this replica's own starting configuration replaces it, as a launch
        without Redis would start. With others alive, theirs is taken (`follow`)."""
        alive = await self.replicas()
        if alive is None or set(alive) - {self.name()}:
            return
        found = await self.read()
        if found is None or found[0] == 0:
            return
        self.version = found[0]
        if (await self.write(self.hooks.state())).written:
            logger.info(
                "no other replica is running: the configuration an earlier launch left in Redis "
                "(version %d) is replaced by this one's",
                found[0],
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_pubsub()

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # --- the state ----------------------------------------------------------------------------

    async def read(self) -> tuple[int, dict[str, Any] | None] | None:
        """The shared version and state; None when Redis cannot say."""
        key = self.key()

        async def get(client: Any) -> tuple[int, dict[str, Any] | None]:
            version, state = await client.hmget(key, "version", "state")
            return int(version or 0), _unpacked(state)

        return await self.shared.call("reading the shared configuration", get, None)

    async def write(self, state: dict[str, Any]) -> Written:
        """Write `state` as the next version, if the shared version is still this replica's."""
        if self.shared.client is None:
            return Written(False, away=True)
        script = self.shared.script(WRITE_SCRIPT)
        args = [self.version, orjson.dumps(state), self.name(), self.channel]
        done = await self.shared.call(
            "writing the shared configuration", lambda _c: script(keys=[self.key()], args=args), None
        )
        if done is None:
            return Written(False, away=True)
        written, version = int(done[0]), int(done[1])
        if written:
            self.version, self.refused, self.unpublished = version, "", False
            await self.heartbeat()
            return Written(True, version)
        found = await self.read()
        if found is None:
            return Written(False, away=True)
        return Written(False, found[0], found[1])

    def take(self, version: int, state: dict[str, Any] | None) -> None:
        """Apply a shared state (None: there is none yet) and hold its version."""
        why = self.hooks.apply(state) if state is not None else ""
        if why:
            logger.error("configuration version %d could not be taken here: %s", version, why)
        self.version, self.refused = version, why

    async def follow(self) -> bool:
        """Take a newer shared state, if there is one; whether one was taken."""
        found = await self.read()
        if found is None or found[0] <= self.version:
            return False
        async with self.lock:
            if found[0] <= self.version:
                return False
            if self.unpublished:
                # Our change from while Redis was away, then another replica's: theirs is shared.
                logger.warning(
                    "a configuration change made while Redis was away is replaced by version %d, "
                    "written meanwhile by another replica",
                    found[0],
                )
                self.unpublished = False
            self.take(*found)
        logger.info("configuration version %d taken from the other replicas", found[0])
        await self.heartbeat()
        return True

    async def caught_up(self) -> None:
        """Redis is back: write a change made while it was away, unless the shared one moved on."""
        if not self.unpublished:
            await self.follow()
            return
        async with self.lock:
            written = await self.write(self.hooks.state())
            if written.written:
                logger.warning("a configuration change made while Redis was away is shared now")
            elif not written.away:
                logger.warning(
                    "a configuration change made while Redis was away is replaced by version %d, "
                    "written meanwhile by another replica",
                    written.version,
                )
                self.unpublished = False
                self.take(written.version, written.state)
        await self.heartbeat()

    # --- the replicas -------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Say which version this replica holds, and that it is alive."""
        key, name = self.key("replicas"), self.name()
        entry = orjson.dumps(
            {"version": self.version, "seen": self.clock(), "reset": self.last_reset, "refused": self.refused}
        )
        await self.shared.call("writing this replica's heartbeat", lambda c: c.hset(key, name, entry), None)

    async def replicas(self) -> dict[str, dict[str, Any]] | None:
        """Every replica seen within ALIVE_S, with what it last reported; None when Redis cannot say.
        Replicas not seen for FORGET_S are forgotten."""
        key = self.key("replicas")
        found = await self.shared.call("reading the replicas", lambda c: c.hgetall(key), None)
        if found is None:
            return None
        now, alive, gone = self.clock(), {}, []
        for raw_name, raw in found.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            try:
                entry = orjson.loads(raw)
                seen = float(entry["seen"])
            except (ValueError, KeyError, TypeError):
                gone.append(name)
                continue
            if now - seen <= ALIVE_S:
                alive[name] = entry
            elif now - seen > FORGET_S:
                gone.append(name)
        if gone:
            await self.shared.call("forgetting gone replicas", lambda c: c.hdel(key, *gone), None)
        return alive

    async def wait_for(self, done: Callable[[dict[str, Any]], bool], wait_s: float = WAIT_S) -> dict[str, str]:
        """Each alive replica: "applied" once `done` holds for what it reported, else "pending"
        (or "refused: why"), waiting up to `wait_s` for them. This replica is always there."""
        deadline = asyncio.get_running_loop().time() + wait_s
        me = self.name()
        while True:
            alive = await self.replicas()
            if alive is None:
                return {me: APPLIED}
            shown = {name: _status(entry, done) for name, entry in alive.items()}
            shown[me] = APPLIED
            if all(s == APPLIED for s in shown.values()) or asyncio.get_running_loop().time() >= deadline:
                return dict(sorted(shown.items()))
            await asyncio.sleep(0.05)

    async def wait_for_version(self, version: int, wait_s: float = WAIT_S) -> dict[str, str]:
        return await self.wait_for(lambda e: int(e.get("version", 0)) >= version and not e.get("refused"), wait_s)

    # --- resets and cuts ----------------------------------------------------------------------

    async def reset_everywhere(self) -> dict[str, str] | None:
        """Have every other replica empty its own rate-limit state (this one has); which did.
        None when Redis could not carry the notice."""
        reset = os.urandom(6).hex()
        self.last_reset = reset
        notice = orjson.dumps({"kind": "reset", "id": reset, "by": self.name()})
        channel = self.channel
        sent = await self.shared.call("announcing a reset", lambda c: c.publish(channel, notice), None)
        if sent is None:
            return None
        await self.heartbeat()
        return await self.wait_for(lambda e: e.get("reset") == reset)

    def cut_started(self, label: str, until: float, tokens: int) -> None:
        """A fault draw here started a quota cut: share it (in the background)."""
        if not self.enabled or self.shared.client is None or not self.shared.up:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        background(self.share_cut(label, until, tokens))

    async def share_cut(self, label: str, until: float, tokens: int) -> None:
        cut = orjson.dumps({"until": until, "tokens": tokens})
        notice = orjson.dumps({"kind": "cut", "label": label, "until": until, "tokens": tokens, "by": self.name()})
        script = self.shared.script(CUT_SCRIPT)
        args = [label, cut, int(until * 1000) + 1, self.channel, notice]
        await self.shared.call("sharing a quota cut", lambda _c: script(keys=[self.key("cuts")], args=args), None)

    async def _read_cuts(self) -> None:
        key = self.key("cuts")
        found = await self.shared.call("reading the quota cuts", lambda c: c.hgetall(key), None)
        now = self.clock()
        for label, raw in (found or {}).items():
            try:
                cut = orjson.loads(raw)
                until, tokens = float(cut["until"]), int(cut["tokens"])
            except (ValueError, KeyError, TypeError):
                continue
            if until > now:
                self.hooks.cut(label.decode() if isinstance(label, bytes) else str(label), until, tokens)

    # --- listening ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Notices as they come, and the version every POLL_S (a notice can be lost)."""
        loop = asyncio.get_running_loop()
        polled = 0.0
        while True:
            try:
                if not self.shared.up or self.shared.client is None:
                    await self._close_pubsub()
                    await asyncio.sleep(POLL_S)
                    continue
                if self._pubsub is None:
                    await self._subscribe()
                    await self.follow()  # what changed while it was not listening
                message = await self._pubsub.get_message(timeout=POLL_S)
                if message is not None and message.get("type") == "message":
                    await self.on_notice(message.get("data"))
                if loop.time() - polled >= POLL_S:
                    polled = loop.time()
                    await self.follow()
                    await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis lost mid-listen: the probe finds it again
                await self._close_pubsub()
                self._lost("listening for configuration changes", e)
                await asyncio.sleep(POLL_S)

    async def _subscribe(self) -> None:
        client = self.shared.client
        if client is None:
            return
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        await asyncio.wait_for(pubsub.subscribe(self.channel), POLL_S * 3)

    def _lost(self, what: str, error: Exception) -> None:
        if isinstance(error, (OSError, ConnectionError, asyncio.TimeoutError)) or type(error).__module__.startswith(
            "redis"
        ):
            self.shared.lost(what, error)
        else:
            logger.error("configuration changes: %s failed", what, exc_info=error)

    async def on_notice(self, data: Any) -> None:
        try:
            notice = orjson.loads(data)
            kind, by = notice["kind"], notice.get("by")
        except (ValueError, KeyError, TypeError):
            return
        if by == self.name():
            return
        if kind == "config":
            await self.follow()
        elif kind == "reset":
            self.hooks.reset()
            self.last_reset = str(notice.get("id", ""))
            await self.heartbeat()
        elif kind == "cut":
            try:
                self.hooks.cut(str(notice["label"]), float(notice["until"]), int(notice["tokens"]))
            except (KeyError, TypeError, ValueError):
                return


def _status(entry: dict[str, Any], done: Callable[[dict[str, Any]], bool]) -> str:
    if done(entry):
        return APPLIED
    refused = entry.get("refused")
    return f"refused: {refused}" if refused else PENDING
