"""Shared bags in a real Redis: bounded in bytes and count, values expire, and a lost Redis
makes each call return at once as if nothing were shared."""

from __future__ import annotations

import asyncio

import pytest
from redis_server import redis_url  # noqa: F401

from aoai.runtime import shared as sh


def run(coro):
    return asyncio.run(coro)


def fresh(url: str, prefix: str) -> sh.Shared:
    state = sh.Shared(prefix=prefix)
    state.use(url)
    return state


def test_pack_round_trips_small_and_large_values():
    small, large = {"a": 1}, {"text": "word " * 2000}
    assert sh.pack(small)[:1] == sh.RAW
    assert sh.pack(large)[:1] == sh.DEFLATED and len(sh.pack(large)) < 1000
    assert sh.unpack(sh.pack(small)) == small and sh.unpack(sh.pack(large)) == large


def test_bag_keeps_within_its_bytes_and_count(redis_url):  # noqa: F811
    async def go():
        state = fresh(redis_url, "t-bytes:")
        bag = sh.Bag(state, "things", ttl_s=60, max_bytes=250, max_count=3)
        for n in range(5):
            assert await bag.put(f"n{n}", b"x" * 100)
        assert await bag.get("n0") is None and await bag.get("n2") is None  # the oldest left for room
        assert await bag.get("n4") == b"x" * 100
        assert await bag.usage() == {"count": 2, "bytes": 200}
        assert not await bag.put("big", b"x" * 251)  # larger than the whole budget: not kept
        bag.max_bytes = 10_000
        for n in range(5):
            await bag.put(f"m{n}", b"y")
        assert (await bag.usage())["count"] == 3
        assert await bag.delete("m4") and not await bag.delete("m4")
        assert await bag.usage() == {"count": 2, "bytes": 2}
        await state.close()

    run(go())


def test_a_value_put_again_is_counted_once(redis_url):  # noqa: F811
    async def go():
        state = fresh(redis_url, "t-again:")
        bag = sh.Bag(state, "things", ttl_s=60, max_bytes=1000)
        await bag.put("a", b"1234")
        await bag.put("a", b"12")
        assert await bag.usage() == {"count": 1, "bytes": 2}
        await state.close()

    run(go())


def test_expired_values_leave_the_accounting(redis_url):  # noqa: F811
    async def go():
        now = [1000.0]
        state = sh.Shared(prefix="t-ttl:", clock=lambda: now[0])
        state.use(redis_url)
        bag = sh.Bag(state, "things", ttl_s=0.2, max_bytes=1000)
        await bag.put("a", b"1234")
        await asyncio.sleep(0.3)
        assert await bag.get("a") is None
        now[0] += 1
        await bag.put("b", b"1")
        assert await bag.usage() == {"count": 1, "bytes": 1}
        await state.close()

    run(go())


def test_lost_redis_answers_at_once_and_is_found_again(redis_url):  # noqa: F811
    async def go():
        state = sh.Shared(prefix="t-lost:")
        state.use("redis://127.0.0.1:1/0")  # nothing listens there
        bag = sh.Bag(state, "things", ttl_s=60, max_bytes=1000)
        assert not await bag.put("a", b"1")
        assert not state.up and state.failures == 1
        assert await bag.get("a") is None and state.failures == 1  # no further tries while away
        returned = asyncio.Event()

        async def back():
            returned.set()

        state.on_return(back)
        state.use(redis_url)  # Redis is there now: the probe started by the loss finds it
        state.up = False
        await asyncio.wait_for(returned.wait(), 5)
        assert state.up and await bag.put("a", b"1")
        await state.close()

    run(go())


@pytest.mark.parametrize("name", ["plain", "with:colon", "ü"])
def test_names_are_kept_as_given(redis_url, name):  # noqa: F811
    async def go():
        state = fresh(redis_url, "t-names:")
        bag = sh.Bag(state, "things", ttl_s=60, max_bytes=1000)
        await bag.put(name, b"v")
        assert await bag.get(name) == b"v"
        assert await bag.delete(name)
        await state.close()

    run(go())


def test_clear_empties_one_bag_only(redis_url):  # noqa: F811
    async def go():
        state = fresh(redis_url, "t-clear:")
        one, other = sh.Bag(state, "one", 60, 1000), sh.Bag(state, "other", 60, 1000)
        await one.put("a", b"1")
        await other.put("a", b"2")
        await one.clear()
        assert await one.get("a") is None and await one.usage() == {"count": 0, "bytes": 0}
        assert await other.get("a") == b"2"
        await state.close()

    run(go())


def test_replicas_agree_on_one_reasoning_key_even_when_one_started_without_redis(redis_url):  # noqa: F811
    from aoai.openai import sealed_reasoning
    from aoai.runtime.config import SimulatorConfig
    from aoai.runtime.services import Services

    async def go():
        first, late = Services.build(SimulatorConfig()), Services.build(SimulatorConfig())
        first.shared.prefix = late.shared.prefix = "t-key:"
        first.shared.use(redis_url)
        await first.start()
        late.shared.use("redis://127.0.0.1:1/0")  # Redis away when it starts: its own key
        await late.start()
        assert late.reasoning_secret and late.reasoning_secret != first.reasoning_secret
        sealed_alone = sealed_reasoning.seal(42)
        late.shared.use(redis_url)
        await late._agree_on_reasoning_key()  # what runs when Redis is back
        assert late.reasoning_secret == first.reasoning_secret
        assert sealed_reasoning.unseal(sealed_alone) == 42  # sealed before agreeing: still read
        await first.shared.close()
        await late.shared.close()

    run(go())
