"""The batch runner on a real data folder: two runners (as two replicas) on one folder run a
job once, a runner keeps its lease however long a line takes, and a job left by a runner that
stopped is resumed by another from its saved progress. Lines are answered by a plain function
here; through the simulator's stages in tests/stack/test_stack_batches.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aoai.batch import jsonl, results
from aoai.batch.runner import Pace, Runner, Setup
from aoai.batch.store import DataStore


@dataclass(frozen=True)
class Answered:
    status: int
    body: bytes
    request_id: str


def setup(pace: Pace) -> Setup:
    return Setup(
        pace=lambda: pace,
        deployment=lambda name: jsonl.BatchDeployment(name, True, "gpt-4o", lambda endpoint, body: 10),
        enqueued_limit=lambda name: None,
        line_path=lambda batch, endpoint, deployment, version: "/openai/v1/chat/completions",
    )


def job(store: DataStore, n: int) -> str:
    data = b"".join(
        json.dumps(
            {"custom_id": f"t{i}", "method": "POST", "url": "/chat/completions", "body": {"model": "b", "messages": []}}
        ).encode()
        + b"\n"
        for i in range(n)
    )
    source = store.add_file("in.jsonl", "batch", data, None)
    batch = results.new_batch(
        results.new_batch_id(), source.id, "/chat/completions", "24h", None, None, int(time.time())
    )
    store.add_batch(batch, "", 0)
    return str(batch["id"])


async def until_done(store: DataStore, batch_id: str, within: float = 20) -> dict:
    for _ in range(int(within / 0.05)):
        batch = store.get_batch(batch_id)
        if batch is not None and batch["status"] in results.TERMINAL:
            return batch
        await asyncio.sleep(0.05)
    raise AssertionError(store.get_batch(batch_id))


def custom_ids(store: DataStore, file_id: str) -> Counter:
    return Counter(json.loads(line)["custom_id"] for line in store.file_path(file_id).read_bytes().splitlines())


def test_two_runners_on_one_folder_answer_each_line_once(tmp_path: Path):
    pace = Pace(validating_s=0, line_s=0, finalizing_s=0, concurrency=4, lease_s=2, poll_s=0.05)
    asked: Counter = Counter()

    async def answer(method: str, path: str, body: bytes) -> Answered:
        asked[body] += 1
        await asyncio.sleep(0.01)
        return Answered(200, b'{"ok": true}', "r")

    async def go():
        one, two = DataStore(tmp_path, 10**9), DataStore(tmp_path, 10**9)
        batch_id = job(one, 60)
        runners = [Runner(one, answer, setup(pace)), Runner(two, answer, setup(pace))]
        for runner in runners:
            runner.start()
        done = await until_done(one, batch_id)
        for runner in runners:
            await runner.stop()
        assert done["status"] == "completed" and done["request_counts"]["completed"] == 60
        assert set(custom_ids(one, done["output_file_id"]).values()) == {1}

    asyncio.run(go())


def test_a_long_line_keeps_its_runners_lease(tmp_path: Path):
    pace = Pace(validating_s=0, line_s=0, finalizing_s=0, concurrency=1, lease_s=1.2, poll_s=0.05)
    runs: Counter = Counter()

    async def slow(method: str, path: str, body: bytes) -> Answered:
        runs["slow"] += 1
        await asyncio.sleep(2.5)  # twice the lease: renewed meanwhile
        return Answered(200, b"{}", "r")

    async def go():
        one, two = DataStore(tmp_path, 10**9), DataStore(tmp_path, 10**9)
        batch_id = job(one, 1)
        first = Runner(one, slow, setup(pace))
        first.start()
        await asyncio.sleep(0.3)
        second = Runner(two, slow, setup(pace))
        second.start()
        done = await until_done(one, batch_id)
        await first.stop()
        await second.stop()
        assert done["status"] == "completed" and runs["slow"] == 1

    asyncio.run(go())


def test_a_job_left_by_a_stopped_runner_resumes_where_it_was(tmp_path: Path):
    pace = Pace(validating_s=0, line_s=0.02, finalizing_s=0, concurrency=2, lease_s=0.5, poll_s=0.05)

    async def answer(method: str, path: str, body: bytes) -> Answered:
        return Answered(200, b"{}", "r")

    async def go():
        store = DataStore(tmp_path, 10**9)
        batch_id = job(store, 40)
        first = Runner(store, answer, setup(pace))
        first.start()
        for _ in range(200):
            if store.progress(batch_id).get("completed", 0) >= 10:
                break
            await asyncio.sleep(0.01)
        await first.stop()  # as a process stopping mid-job
        assert store.get_batch(batch_id)["status"] == "in_progress"
        second = Runner(DataStore(tmp_path, 10**9), answer, setup(pace))
        second.start()
        done = await until_done(store, batch_id)
        await second.stop()
        assert done["status"] == "completed"
        ids = custom_ids(store, done["output_file_id"])
        assert len(ids) == 40 and set(ids.values()) == {1}  # every line once, none lost, none twice

    asyncio.run(go())
