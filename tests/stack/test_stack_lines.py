"""Requests the simulator makes of itself (a batch job's lines), through the stages an online
request meets, in process: the generators answer them, the content filter and declared faults
judge them, and the online quota never sees them."""

from __future__ import annotations

import json

from aoai.runtime.lines import LineDriver

# The stages a line goes through, by class name (stack.py builds the same list).
LINE_STAGES = {"Routing", "Checks", "ContentFilter", "Faults", "Extensions", "Replay", "Generate"}
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def driver(stack) -> LineDriver:
    stages = [a for a in stack.addons if type(a).__name__ in LINE_STAGES]
    return LineDriver(stages, lambda: stack.config.api_key, timeout_s=5)


def answer(stack, path: str, body: dict):
    return stack.call(driver(stack).answer("POST", path, json.dumps(body).encode()))


def test_a_line_is_answered_by_the_generator_without_taking_the_online_quota(stack_factory):
    stack = stack_factory()
    stack.patch("/++/config", json={"deployments": {"gpt-4o": {"model": "gpt-4o", "tokensPerMinute": 1000}}})
    for _ in range(20):  # far more than 1,000 tokens a minute hold
        line = answer(stack, CHAT, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100})
        assert line.status == 200, line.body
    assert json.loads(line.body)["object"] == "chat.completion" and line.request_id
    limits = stack.get("/++/limits").json()
    assert limits["deployments"]["gpt-4o"]["usedTokens"] == 0
    assert (
        stack.post(CHAT, json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}).status_code == 200
    )
    assert stack.get("/++/limits").json()["deployments"]["gpt-4o"]["usedTokens"] > 0  # an online request does


def test_a_line_meets_the_checks_and_the_declared_faults(stack_factory):
    stack = stack_factory()
    bad = answer(stack, CHAT, {"messages": "not a list"})
    assert bad.status == 400 and "error" in json.loads(bad.body)
    stack.patch("/++/config", json={"faults": [{"kind": "500", "share": 1}]})
    failed = answer(stack, CHAT, {"messages": [{"role": "user", "content": "Hi"}]})
    assert failed.status == 500


def test_a_hanging_line_is_left_after_its_timeout(stack_factory):
    stack = stack_factory()
    stack.patch("/++/config", json={"faults": [{"kind": "hang", "share": 1}]})
    d = driver(stack)
    d.timeout_s = 0.5
    line = stack.call(d.answer("POST", CHAT, json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode()))
    assert line.status == 408
