"""Configuration shared through a real Redis: replicas in one process, each a `Shared` of its
own and a state held in a dict, write versions in turn, take each other's, report them, and
pass on resets and quota cuts; a change made while Redis is away is written when it is back."""

from __future__ import annotations

import asyncio
import itertools
import time

import orjson
from redis_server import redis_url  # noqa: F401

from aoai.runtime import config_sync as cs
from aoai.runtime import shared as sh

_PREFIXES = itertools.count()


class Replica:
    """A replica's configuration as a dict, and what reached it."""

    def __init__(self, url: str, prefix: str, name: str, refuse: str = "") -> None:
        self.shared = sh.Shared(prefix=prefix)
        self.shared.use(url)
        self.state: dict = {"seed": None}
        self.resets = 0
        self.cuts: list[tuple[str, float, int]] = []
        self.refuse = refuse
        self.sync = cs.ConfigSync(
            self.shared,
            lambda: name,
            cs.Hooks(state=lambda: dict(self.state), apply=self.apply, reset=self.reset, cut=self.cut),
        )

    def apply(self, state: dict) -> str:
        if self.refuse:
            return self.refuse
        self.state = dict(state)
        return ""

    def reset(self) -> None:
        self.resets += 1

    def cut(self, label: str, until: float, tokens: int) -> None:
        self.cuts.append((label, until, tokens))

    async def change(self, **values) -> cs.Written:
        """A change made here, written as the next version (taking a newer one first)."""
        for _ in range(cs.WRITE_TRIES):
            before = dict(self.state)
            self.state.update(values)
            written = await self.sync.write(self.state)
            if written.written or written.away:
                return written
            self.state = before
            self.sync.take(written.version, written.state)
        raise AssertionError("never written")

    async def close(self) -> None:
        await self.sync.stop()
        await self.shared.close()


def replicas(url: str, *names: str) -> list[Replica]:
    prefix = f"t-sync{next(_PREFIXES)}:"
    return [Replica(url, prefix, name) for name in names]


async def eventually(check, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


def test_a_write_bumps_the_version_and_a_stale_one_is_told_the_newer(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        assert (await a.change(seed=1)) == cs.Written(True, 1)
        assert await a.sync.read() == (1, {"seed": 1})
        stale = await b.sync.write({"seed": 2})  # b still holds version 0
        assert stale == cs.Written(False, 1, {"seed": 1})
        assert await a.sync.read() == (1, {"seed": 1})  # nothing written
        # Taking the newer one first, b's change goes on top of it.
        assert (await b.change(other=True)) == cs.Written(True, 2)
        assert b.state == {"seed": 1, "other": True}
        await a.close()
        await b.close()

    asyncio.run(go())


def test_every_replica_takes_a_change_and_reports_it(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        await a.sync.start()
        await b.sync.start()
        written = await a.change(seed=7)
        shown = await a.sync.wait_for_version(written.version)
        assert shown == {"a": "applied", "b": "applied"}
        assert b.state == {"seed": 7} and b.sync.version == 1
        await a.close()
        await b.close()

    asyncio.run(go())


def test_a_lost_notice_is_made_up_by_the_poll(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        await b.sync.start()
        # A version written without its notice (as if the notice was lost).
        await a.shared.client.hset(a.sync.key(), mapping={"version": 1, "state": orjson.dumps({"seed": 3})})
        await eventually(lambda: b.state == {"seed": 3}, within=cs.POLL_S * 3)
        await a.close()
        await b.close()

    asyncio.run(go())


def test_a_replica_that_starts_later_takes_the_shared_state_and_cuts(redis_url):  # noqa: F811
    async def go():
        a, late = replicas(redis_url, "a", "late")
        await a.sync.start()
        await a.change(seed=5)
        until = time.time() + 30
        await a.sync.share_cut("gpt-4o", until, 100)
        await a.sync.share_cut("gone", time.time() - 1, 100)  # over already: not taken
        await late.sync.start()
        assert late.state == {"seed": 5} and late.sync.version == 1
        assert late.cuts == [("gpt-4o", until, 100)]
        ttl = await a.shared.client.pttl(a.sync.key("cuts"))
        assert 25_000 < ttl <= 30_001  # the cuts key lives as long as its longest cut
        await a.close()
        await late.close()

    asyncio.run(go())


def test_a_launch_with_no_replica_alive_replaces_what_an_earlier_launch_left(redis_url):  # noqa: F811
    async def go():
        earlier, fresh = replicas(redis_url, "earlier", "fresh")
        await earlier.change(seed=5)  # an earlier launch's change; that launch is gone:
        await earlier.shared.client.hdel(earlier.sync.key("replicas"), "earlier")  # no heartbeat
        fresh.state = {"seed": 11}  # this launch's own starting configuration
        await fresh.sync.start()
        assert fresh.state == {"seed": 11}
        assert await fresh.sync.read() == (2, {"seed": 11})
        await earlier.close()
        await fresh.close()

    asyncio.run(go())


def test_a_quota_cut_reaches_the_other_replicas(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        await a.sync.start()
        await b.sync.start()
        until = time.time() + 10
        a.sync.cut_started("gpt-4o", until, 50)
        await eventually(lambda: b.cuts == [("gpt-4o", until, 50)])
        assert a.cuts == []  # its own: the fault book holds it already
        await a.close()
        await b.close()

    asyncio.run(go())


def test_a_reset_reaches_every_replica(redis_url):  # noqa: F811
    async def go():
        a, b, c = replicas(redis_url, "a", "b", "c")
        for r in (a, b, c):
            await r.sync.start()
        shown = await a.sync.reset_everywhere()
        assert shown == {"a": "applied", "b": "applied", "c": "applied"}
        assert (a.resets, b.resets, c.resets) == (0, 1, 1)  # the one asked empties its own itself
        for r in (a, b, c):
            await r.close()

    asyncio.run(go())


def test_a_replica_gone_quiet_is_not_waited_for_and_a_slow_one_is_pending(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        key = a.sync.key("replicas")
        old = orjson.dumps({"version": 0, "seen": time.time() - cs.ALIVE_S - 1})
        slow = orjson.dumps({"version": 0, "seen": time.time()})
        await a.shared.client.hset(key, mapping={"gone": old, "slow": slow})
        written = await a.change(seed=1)
        shown = await a.sync.wait_for_version(written.version, wait_s=0.2)
        assert shown == {"a": "applied", "slow": "pending"}
        await a.close()
        await b.close()

    asyncio.run(go())


def test_a_state_a_replica_cannot_take_is_reported_refused(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        b.refuse = "AZURE_OPENAI_ENDPOINT: record mode forwards to Azure OpenAI"
        await a.sync.start()
        await b.sync.start()
        written = await a.change(mode="record")
        shown = await a.sync.wait_for_version(written.version)
        assert shown["b"] == "refused: AZURE_OPENAI_ENDPOINT: record mode forwards to Azure OpenAI"
        assert b.sync.version == 1  # not asked again each second
        await a.close()
        await b.close()

    asyncio.run(go())


def test_a_change_made_while_redis_was_away_is_written_when_it_is_back(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        await a.change(seed=1)
        a.shared.up = False  # Redis away, as the client found
        away = await a.change(seed=2)
        assert away.away
        a.sync.unpublished = True
        a.shared.up = True
        await a.sync.caught_up()
        assert await b.sync.read() == (2, {"seed": 2}) and not a.sync.unpublished
        await a.close()
        await b.close()

    asyncio.run(go())


def test_a_change_made_while_redis_was_away_gives_way_to_one_written_meanwhile(redis_url):  # noqa: F811
    async def go():
        a, b = replicas(redis_url, "a", "b")
        await a.change(seed=1)
        a.shared.up = False
        await a.change(seed=2)
        a.sync.unpublished = True
        await b.change(seed=3)  # b reached Redis meanwhile
        a.shared.up = True
        await a.sync.caught_up()
        assert a.state == {"seed": 3} and a.sync.version == 2 and not a.sync.unpublished
        assert await b.sync.read() == (2, {"seed": 3})
        await a.close()
        await b.close()

    asyncio.run(go())


def test_without_redis_nothing_is_shared():
    async def go():
        shared = sh.Shared()
        sync = cs.ConfigSync(
            shared, lambda: "a", cs.Hooks(state=dict, apply=lambda s: "", reset=lambda: None, cut=lambda *a: None)
        )
        assert not sync.enabled
        await sync.start()
        assert sync._task is None
        assert (await sync.write({})).away
        sync.cut_started("x", time.time() + 1, 1)  # nothing to do, nothing raised
        await sync.stop()

    asyncio.run(go())
