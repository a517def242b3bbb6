"""Shared rate-limit windows when Redis goes away, in process: the replica keeps throttling
with windows of its own (no request fails, none passes unchecked), and goes back to the
shared windows once Redis answers again."""

from __future__ import annotations

import pytest
from simulator_process import start_redis, stop

CHAT = "/openai/deployments/tiny/chat/completions?api-version=2024-10-21"


def ask(stack):
    return stack.post(CHAT, json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100})


def test_with_redis_gone_the_quota_is_still_kept_by_the_replica_alone(stack_factory):
    started = start_redis()
    if started is None:
        pytest.skip("redis-server is not installed")
    process, url = started
    stack = stack_factory({"SIMULATOR_REDIS_URL": url})
    r = stack.patch("/++/config", json={"deployments": {"tiny": {"model": "gpt-4o", "tokensPerMinute": 1000}}})
    assert r.status_code == 200, r.text
    assert stack.get("/++/health").json()["sharedState"] == "up"
    stop(process)
    statuses = [ask(stack).status_code for _ in range(12)]
    assert 500 not in statuses and statuses.count(200) >= 1
    assert 429 in statuses  # 1,000 tokens a minute hold a few requests of ~110 tokens, not twelve
    health = stack.get("/++/health").json()
    assert health["status"] == "healthy" and health["sharedState"] == "away"
