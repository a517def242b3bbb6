"""Realtime sessions with the simulator's hooks, in process: the quota's refusal and charges,
the content filter, a stream cut, a slow first delta; the windows' peek and charge; the
server's tallies for metrics."""

from __future__ import annotations

import asyncio

from redis_server import redis_url  # noqa: F401

from aoai.realtime.session import Disruption, Hooks, Session, SessionPlan
from aoai.realtime.timing import NO_WAITING
from aoai.runtime.limits import MemoryWindows, Quota

SAY = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there!"}]}


class FakeQuota:
    def __init__(self, wait: float = 0.0):
        self.wait, self.charged = wait, []

    async def room(self, tokens: int) -> float:
        return self.wait

    async def charge(self, tokens: int) -> None:
        self.charged.append(tokens)

    async def figures(self):
        return (10, 9), (1000, 700)


async def turn(hooks: Hooks, item: dict = SAY, drop=None) -> list[dict]:
    sent: list[dict] = []

    async def emit(event):
        sent.append(event)

    session = Session(SessionPlan("rt", "gpt-realtime", "ga", NO_WAITING, seed=3), emit, hooks=hooks)
    if drop is not None:
        session.bind_drop(drop)
    await session.receive({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    await session.receive({"type": "conversation.item.create", "item": item})
    await session.receive({"type": "response.create"})
    if session.response is not None and session.response.task is not None:
        await session.response.task
    await asyncio.sleep(0)
    return sent


def test_a_response_is_charged_when_done_and_shows_the_quotas_figures():
    quota = FakeQuota()
    sent = asyncio.run(turn(Hooks(quota=quota)))
    limits = next(e for e in sent if e["type"] == "rate_limits.updated")["rate_limits"]
    assert [(r["name"], r["limit"], r["remaining"]) for r in limits] == [("requests", 10, 9), ("tokens", 1000, 700)]
    done = sent[-1]["response"]
    assert done["status"] == "completed" and quota.charged == [done["usage"]["total_tokens"]]


def test_a_full_token_window_fails_the_response_uncharged():
    quota = FakeQuota(wait=12.3)
    sent = asyncio.run(turn(Hooks(quota=quota)))
    done = sent[-1]["response"]
    assert [e["type"] for e in sent[-2:]] == ["response.created", "response.done"]
    assert done["status"] == "failed" and done["output"] == [] and quota.charged == []
    error = done["status_details"]["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded") and "13s" in error["message"]
    assert done["usage"]["total_tokens"] == 0


def test_a_blocked_prompt_ends_the_response_incomplete_and_is_judged_once():
    judged: list[str] = []

    def judge(text: str):
        judged.append(text)
        return "hate" if "lighthouses" in text else None

    bad = {**SAY, "content": [{"type": "input_text", "text": "lighthouses"}]}
    sent = asyncio.run(turn(Hooks(judge=judge), bad))
    done = sent[-1]["response"]
    assert done["status"] == "incomplete" and done["status_details"] == {
        "type": "incomplete",
        "reason": "content_filter",
    }
    assert judged == ["lighthouses"]


def test_a_stream_cut_drops_the_socket_after_so_many_tokens_and_is_counted():
    dropped, struck = [], []

    async def drop():
        dropped.append(True)

    hooks = Hooks(disruption=lambda: Disruption(cut_after_tokens=2), struck=struck.append)
    sent = asyncio.run(turn(hooks, drop=drop))
    kinds = [e["type"] for e in sent]
    assert kinds.count("response.output_text.delta") == 2 and "response.done" not in kinds
    assert dropped == [True] and struck == ["streamCut"]


def test_a_slow_first_byte_delays_the_first_delta():
    struck: list[str] = []
    hooks = Hooks(disruption=lambda: Disruption(first_audio_delay_s=0.05), struck=struck.append)
    loop_time: list[float] = []

    async def main():
        start = asyncio.get_running_loop().time()
        sent = await turn(hooks)
        loop_time.append(asyncio.get_running_loop().time() - start)
        return sent

    sent = asyncio.run(main())
    assert sent[-1]["response"]["status"] == "completed" and struck == ["slowFirstByte"] and loop_time[0] >= 0.05


def test_memory_windows_peek_counts_nothing_and_charge_counts_past_the_quota():
    windows, quota = MemoryWindows(), Quota(tokens=100, requests=0)
    assert windows.peek("k", quota, 50, 0.0).allowed
    assert windows.charge("k", quota, 150, 1.0).remaining_tokens == 0  # over: still counted
    found = windows.peek("k", quota, 1, 2.0)
    assert not found.allowed and 58 < found.token_wait <= 59
    assert windows.usage("k", quota, 2.0) == (150, 0)
    assert windows.peek("k", quota, 1, 61.5).allowed


def test_redis_windows_peek_and_charge(redis_url):  # noqa: F811
    from aoai.runtime.limits import RedisWindows

    async def main():
        windows = RedisWindows.from_url(redis_url, prefix="test-rt:", server_time=False)
        quota = Quota(tokens=100, requests=5, request_window=10.0)
        try:
            assert (await windows.check("k", quota, 0, 0.0)).allowed  # a handshake: one request
            assert (await windows.check("k", quota, 150, 1.0, mode="charge")).remaining_tokens == 0
            found = await windows.check("k", quota, 1, 2.0, mode="peek")
            assert not found.allowed and found.reason == "tokens"
            again = await windows.check("k", quota, 0, 2.0, mode="peek")
            assert again.remaining_requests == 4  # peeks and charges are not requests
        finally:
            await windows.close()

    asyncio.run(main())
