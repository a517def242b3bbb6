"""Stored responses shared by two replicas through one Redis, in process: whichever replica a
request reaches, it continues, retrieves, lists, cancels and deletes what the other stored;
with Redis gone each replica serves what it holds, and what it stored meanwhile is shared
once Redis is back."""

from __future__ import annotations

import time

import pytest
from simulator_process import start_redis, stop

from aoai.runtime import background

CHAT = "/openai/v1/responses"


@pytest.fixture
def redis_server():
    started = start_redis()
    if started is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    process, url = started
    yield process, url
    stop(process)


@pytest.fixture
def pair(stack_factory, redis_server):
    _, url = redis_server
    return stack_factory({"SIMULATOR_REDIS_URL": url}), stack_factory({"SIMULATOR_REDIS_URL": url})


def create(stack, **body):
    return stack.post(CHAT, json={"model": "gpt-4o", "input": "Hello", **body})


def test_a_chain_alternating_replicas_never_loses_its_previous_response(pair):
    a, b = pair
    previous = None
    for turn in range(6):
        stack = (a, b)[turn % 2]
        r = create(stack, input=f"turn {turn}", **({"previous_response_id": previous} if previous else {}))
        assert r.status_code == 200, r.text
        previous = r.json()["id"]
    # The last turn read every earlier one: its input counts them all.
    items = b.get(f"{CHAT}/{previous}/input_items").json()["data"]
    assert [i["content"][0]["text"] for i in items] == ["turn 5"]
    assert a.get(f"{CHAT}/{previous}").json()["id"] == previous


def test_retrieve_input_items_and_delete_on_the_other_replica(pair):
    a, b = pair
    made = create(a, input="Remember this.").json()
    assert b.get(f"{CHAT}/{made['id']}").json()["output"] == made["output"]
    assert b.get(f"{CHAT}/{made['id']}/input_items").json()["data"][0]["content"][0]["text"] == "Remember this."
    gone = b.delete(f"{CHAT}/{made['id']}")
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    for stack in (a, b):  # the replica that made it holds no stale copy
        r = stack.get(f"{CHAT}/{made['id']}")
        assert r.status_code == 404, r.text
    r = create(a, previous_response_id=made["id"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "previous_response_not_found"


def test_a_background_response_is_followed_and_cancelled_on_the_other_replica(stack_factory, redis_server, monkeypatch):
    now = [time.time()]
    monkeypatch.setattr(background, "clock", lambda: now[0])
    env = {"SIMULATOR_REDIS_URL": redis_server[1], "SIMULATOR_LATENCY": "true"}
    a, b = stack_factory(env), stack_factory(env)
    made = create(a, background=True, max_output_tokens=400).json()
    assert made["status"] == "queued"
    assert b.get(f"{CHAT}/{made['id']}").json()["status"] == "queued"
    cancelled = b.post(f"{CHAT}/{made['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    now[0] += 3600
    assert a.get(f"{CHAT}/{made['id']}").json()["status"] == "cancelled"


def test_a_reasoning_item_stored_on_one_replica_is_known_to_the_other(pair):
    a, b = pair
    first = a.post(CHAT, json={"model": "o4-mini", "input": "Think.", "max_output_tokens": 200}).json()
    reasoning = next(item for item in first["output"] if item["type"] == "reasoning")
    turn = [{"type": "reasoning", "id": reasoning["id"], "summary": []}, {"role": "user", "content": "And?"}]
    r = b.post(CHAT, json={"model": "o4-mini", "input": turn, "max_output_tokens": 200})
    assert r.status_code == 200, r.text


def test_with_redis_gone_each_replica_serves_its_own_and_shares_it_when_redis_is_back(stack_factory):
    started = start_redis()
    if started is None:
        pytest.skip("redis-server is not installed")
    process, url = started
    port = url.rsplit(":", 1)[1].split("/")[0]
    a = stack_factory({"SIMULATOR_REDIS_URL": url})
    b = stack_factory({"SIMULATOR_REDIS_URL": url})
    stop(process)
    try:
        made = create(a, input="While Redis is away.")
        assert made.status_code == 200
        made_id = made.json()["id"]
        follow = create(a, previous_response_id=made_id)  # this replica's own memory serves
        assert follow.status_code == 200, follow.text
        assert b.get(f"{CHAT}/{made_id}").status_code == 404  # not shared: nothing is wrong, it is not known
        import subprocess

        process = subprocess.Popen(
            ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b.get(f"{CHAT}/{made_id}").status_code == 200:
                break
            create(a, input="poke")  # a call notices Redis is back sooner than the probe
            time.sleep(0.2)
        assert b.get(f"{CHAT}/{made_id}").status_code == 200
    finally:
        stop(process)


def test_a_reset_of_the_rate_limits_empties_only_the_windows(pair):
    a, b = pair
    made = create(a, input="Keep me.").json()
    assert a.post("/++/reset-limits").status_code == 200
    assert b.get(f"{CHAT}/{made['id']}").status_code == 200  # the shared responses are still there
    r = b.patch("/++/config", json={"seed": 5})
    assert r.status_code == 200 and len(r.json()["replicas"]) == 2  # the replicas' heartbeats too
