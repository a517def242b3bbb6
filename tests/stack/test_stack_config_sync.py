"""Configuration shared through Redis, through the in-process stack: a PATCH answers with the
replicas that have it and writes the shared version; a version another replica writes is taken
within a second; a reset names the replicas. (Several processes: tests/e2e/test_e2e_workers.py.)
"""

from __future__ import annotations

import time

import orjson
import redis
from redis_server import redis_url  # noqa: F401

from aoai.runtime.shared import PREFIX


def test_a_change_is_shared_and_one_from_elsewhere_is_taken(stack_factory, redis_url):  # noqa: F811
    stack = stack_factory({"SIMULATOR_REDIS_URL": redis_url})
    patched = stack.patch("/++/config", json={"seed": 4})
    assert patched.status_code == 200, patched.content
    body = orjson.loads(patched.content)
    assert list(body["replicas"].values()) == ["applied"]
    client = redis.Redis.from_url(redis_url)
    version, state = client.hmget(PREFIX + "config", "version", "state")
    assert int(version) >= 1 and orjson.loads(state)["seed"] == 4
    # Another replica writes the next version (its notice goes the usual way).
    changed = {**orjson.loads(state), "seed": 12}
    client.hset(PREFIX + "config", mapping={"version": int(version) + 1, "state": orjson.dumps(changed)})
    client.publish(PREFIX + "config:notices", orjson.dumps({"kind": "config", "version": int(version) + 1}))
    deadline = time.monotonic() + 3
    while orjson.loads(stack.get("/++/config").content)["seed"] != 12:
        assert time.monotonic() < deadline, "the shared version was not taken"
        time.sleep(0.05)
    reset = orjson.loads(stack.post("/++/reset-limits").content)
    assert reset["reset"] is True and list(reset["replicas"].values()) == ["applied"]
    client.close()
