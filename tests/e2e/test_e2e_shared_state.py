"""Replicas sharing state through one Redis (SIMULATOR_REDIS_URL), as two machines would run
them: two independent `mitmdump -s addons/simulator.py`, each in its own folder on its own
port, one `redis-server` on loopback, and the real openai SDK and OpenAI Agents SDK talking to
one replica, then the other. Also `make run WORKERS=2` (scripts/workers.py): conversations
over fresh connections, which HAProxy spreads over both workers, never lose their thread."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import simulator_process
from conftest import API_KEY, API_VERSION, Simulator, start_simulator
from helpers import researcher, scrape, v1, value
from simulator_process import free_port
from workers import haproxy_path

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (Debian package redis-server; .ci/run installs it)",
)

PDF = b"%PDF-1.7\n" + b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % i for i in range(3)) + b"%%EOF\n"
NO_5XX = range(200, 500)


class Redis:
    """A redis-server on one loopback port that can be stopped and started again there, as an
    operator restarting it would (nothing saved: it comes back empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            simulator_process.stop(self.process)
            self.process = None


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    server = Redis()
    server.start()
    yield server
    server.stop()


def replica(folder: Path, redis_url: str | None, wait: bool = True) -> Simulator:
    env = {"SIMULATOR_LATENCY": "false"}
    if redis_url:
        env["SIMULATOR_REDIS_URL"] = redis_url
    return start_simulator(folder, env, wait=wait)


@pytest.fixture(scope="module")
def replicas(redis, tmp_path_factory) -> Iterator[tuple[Simulator, Simulator]]:
    """Two replicas of one simulator, each with its own folder and recordings, one Redis."""
    pair = [replica(tmp_path_factory.mktemp(f"replica{n}"), redis.url, wait=False) for n in range(2)]
    try:
        for sim in pair:
            simulator_process.wait_ready(sim, timeout=60)
        yield pair[0], pair[1]
    finally:
        for sim in pair:
            sim.stop()


def other_replica(url: str, one: Simulator, other: Simulator) -> str:
    """The same URL on the other replica."""
    return url.replace(one.url, other.url, 1)


# --- what this branch shares: stored responses and the sealed reasoning key -------------------


def test_a_chain_of_previous_response_ids_alternating_replicas_keeps_the_whole_conversation(replicas):
    a, b = replicas
    clients = [
        v1(a),
        openai.AzureOpenAI(azure_endpoint=b.url, api_key=b.key, api_version="2025-04-01-preview", max_retries=0),
    ]
    response = clients[0].responses.create(model="gpt-4o", input="My name is Ada.", max_output_tokens=20)
    ids, inputs = [response.id], [response.usage.input_tokens]
    for turn in range(1, 10):
        answered = response
        response = clients[turn % 2].responses.create(
            model="gpt-4o",
            input=f"Turn {turn}: what is my name?",
            previous_response_id=answered.id,
            max_output_tokens=20,
        )
        assert response.previous_response_id == answered.id
        # The whole conversation so far is carried: every earlier input and answer counts.
        assert response.usage.input_tokens > answered.usage.input_tokens + answered.usage.output_tokens
        ids.append(response.id)
        inputs.append(response.usage.input_tokens)
    # Each response is found on the replica that did not make it, its items too.
    for n, made in enumerate(ids):
        elsewhere = clients[(n + 1) % 2]
        assert elsewhere.responses.retrieve(made).usage.input_tokens == inputs[n]
        items = elsewhere.responses.input_items.list(made, order="asc").data
        assert items and items[-1].role == "user"
    # A delete on one replica is seen on the other.
    clients[1].responses.delete(ids[0])
    with pytest.raises(openai.NotFoundError):
        clients[0].responses.retrieve(ids[0])
    with pytest.raises(openai.BadRequestError) as raised:
        clients[0].responses.create(model="gpt-4o", input="Again?", previous_response_id=ids[0])
    assert raised.value.code == "previous_response_not_found"


def sealed_reasoning(sim: Simulator) -> list[dict]:
    """A reasoning turn made without store, its encrypted reasoning included, given back."""
    first = v1(sim).responses.create(
        model="o4-mini", input="Think.", store=False, include=["reasoning.encrypted_content"]
    )
    reasoning = next(o for o in first.output if o.type == "reasoning")
    assert reasoning.encrypted_content
    return [
        {"role": "user", "content": "Think."},
        reasoning.model_dump(exclude_none=True),
        {"role": "user", "content": "Again."},
    ]


def test_encrypted_reasoning_sealed_on_one_replica_is_read_by_the_other(replicas):
    a, b = replicas
    for made, given in ((a, b), (b, a)):
        turn = sealed_reasoning(made)
        answer = v1(given).responses.create(model="o4-mini", input=turn, store=False)
        assert answer.status == "completed"


def test_a_simulator_without_the_shared_key_refuses_the_sealed_reasoning(replicas, tmp_path):
    """The check above means something: a simulator not sharing the key (no Redis) refuses it."""
    a, _ = replicas
    alone = replica(tmp_path, None)
    try:
        with pytest.raises(openai.BadRequestError) as raised:
            v1(alone).responses.create(model="o4-mini", input=sealed_reasoning(a), store=False)
        assert raised.value.code == "invalid_encrypted_content"
    finally:
        alone.stop()


def test_while_redis_is_away_each_replica_serves_from_memory_and_shares_it_once_back(replicas, redis):
    a, b = replicas
    redis.stop()
    try:
        made = []
        for sim in (a, b, a, b):
            client = v1(sim)
            created = client.responses.create(model="gpt-4o", input="While Redis is away.", max_output_tokens=16)
            follow = client.responses.create(
                model="gpt-4o", input="And then?", previous_response_id=created.id, max_output_tokens=16
            )
            assert client.responses.retrieve(follow.id).id == follow.id
            made.append((sim, follow.id))
            chat = httpx.post(
                f"{sim.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
                headers={"api-key": API_KEY},
                timeout=30,
            )
            assert chat.status_code == 200, chat.text
            other = b if sim is a else a
            elsewhere = httpx.get(
                f"{other.url}/openai/v1/responses/{follow.id}",
                headers={"api-key": API_KEY},
                timeout=30,
            )
            assert elsewhere.status_code in NO_5XX, elsewhere.text
    finally:
        redis.start()
    # Back: what each made while Redis was away is found on the other within a few seconds.
    deadline = time.monotonic() + 5
    pending = list(made)
    while pending:
        sim, made_id = pending[0]
        other = b if sim is a else a
        found = httpx.get(f"{other.url}/openai/v1/responses/{made_id}", headers={"api-key": API_KEY}, timeout=30)
        assert found.status_code in (200, 404), found.text
        if found.status_code == 200:
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, f"{made_id} made on {sim.url} not found on {other.url}"
        time.sleep(0.2)


# --- shared on merging the configuration, images, analyses, prompt cache and metrics ---------


def config_of(sim: Simulator) -> dict:
    return httpx.get(f"{sim.url}/++/config", headers={"api-key": API_KEY}).json()


def test_a_config_change_on_one_replica_is_applied_by_the_other_within_a_second(replicas):
    a, b = replicas
    patched = httpx.patch(
        f"{a.url}/++/config",
        json={"deployments": {"shared-quota": {"model": "gpt-4o", "tokensPerMinute": 4321}}},
        headers={"api-key": API_KEY},
        timeout=30,
    )
    assert patched.status_code == 200, patched.text
    deadline = time.monotonic() + 1
    while config_of(b)["deployments"].get("shared-quota", {}).get("tokensPerMinute") != 4321:
        assert time.monotonic() < deadline, config_of(b)["deployments"].get("shared-quota")
        time.sleep(0.05)
    chat = httpx.post(
        f"{b.url}/openai/deployments/shared-quota/chat/completions?api-version={API_VERSION}",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
        headers={"api-key": API_KEY},
        timeout=30,
    )
    assert chat.status_code == 200 and chat.headers["x-ratelimit-limit-tokens"] == "4321"


def test_the_config_patch_answer_names_both_replicas_applied(replicas):
    a, _ = replicas
    patched = httpx.patch(
        f"{a.url}/++/config",
        json={"deployments": {"shared-named": {"model": "gpt-4o", "tokensPerMinute": 5000}}},
        headers={"api-key": API_KEY},
        timeout=30,
    )
    assert patched.status_code == 200, patched.text
    answered = patched.json()["replicas"]
    assert len(answered) == 2 and set(answered.values()) == {"applied"}, answered


def test_an_image_url_made_on_one_replica_downloads_from_the_other(replicas):
    a, b = replicas
    made = httpx.post(
        f"{a.url}/openai/deployments/dall-e-3/images/generations?api-version={API_VERSION}",
        json={"prompt": "A red bicycle", "size": "1024x1024", "response_format": "url"},
        headers={"api-key": API_KEY},
        timeout=60,
    )
    assert made.status_code == 200, made.text
    url = made.json()["data"][0]["url"]
    assert url.startswith(a.url + "/++/images/")
    download = httpx.get(other_replica(url, a, b), timeout=30)
    assert download.status_code == 200 and download.content == httpx.get(url, timeout=30).content


def test_a_document_analysis_started_on_one_replica_is_polled_on_the_other(replicas):
    a, b = replicas
    key = {"Ocp-Apim-Subscription-Key": API_KEY}
    started = httpx.post(
        f"{a.url}/documentintelligence/documentModels/prebuilt-layout:analyze?api-version=2024-11-30",
        content=PDF,
        headers={**key, "content-type": "application/pdf"},
        timeout=30,
    )
    assert started.status_code == 202, started.text
    poll = other_replica(started.headers["operation-location"], a, b)
    assert poll.startswith(b.url)
    deadline = time.monotonic() + 10
    while True:
        polled = httpx.get(poll, headers=key, timeout=30)
        assert polled.status_code == 200, polled.text
        body = polled.json()
        if body["status"] not in ("notStarted", "running"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert body["status"] == "succeeded" and len(body["analyzeResult"]["pages"]) == 3


def test_cached_tokens_are_reported_on_one_replica_for_a_prompt_the_other_saw(replicas):
    a, b = replicas
    instructions = " ".join(f"shared clause {n} of the standing instructions" for n in range(300))
    first = v1(a).responses.create(model="gpt-4o", instructions=instructions, input="One?", max_output_tokens=16)
    assert first.usage.input_tokens > 1024 and first.usage.input_tokens_details.cached_tokens == 0
    second = v1(b).responses.create(model="gpt-4o", instructions=instructions, input="Two?", max_output_tokens=16)
    assert second.usage.input_tokens_details.cached_tokens >= 1024


def test_metrics_say_the_shared_state_is_up(replicas):
    for sim in replicas:
        metrics = scrape(sim)
        assert value(metrics, "aoai_shared_state_up") == 1.0
        assert ("aoai_shared_state_failures_total", ()) in metrics


# --- make run WORKERS=2: conversations over fresh connections, spread over both workers -------

CONVERSATIONS, TURNS = 8, 5


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Iterator[Simulator]:
    if haproxy_path() is None:
        pytest.skip("haproxy is not installed (.ci/run installs it)")
    folder = tmp_path_factory.mktemp("workers")
    server = simulator_process.start_workers(
        2,
        cwd=folder,
        env={
            "SIMULATOR_API_KEY": API_KEY,
            "SIMULATOR_LATENCY": "false",
            "SIMULATOR_SEED": "1",
            "RECORDING_DIR": str(folder / "recordings"),
        },
    )
    simulator_process.wait_ready(server, after_log=simulator_process.WORKERS_BANNER, timeout=90)
    yield server
    server.stop(timeout=20)


def fresh_connection() -> httpx.AsyncClient:
    """A client that opens a new connection for every request: HAProxy then picks a worker each time."""
    return httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)


def test_concurrent_chained_conversations_over_fresh_connections_never_lose_their_thread(pool):
    async def conversation(n: int) -> list[str]:
        previous, seen = None, []
        for turn in range(TURNS):
            # A new SDK client each turn, on a new connection.
            async with fresh_connection() as http:
                client = openai.AsyncOpenAI(
                    base_url=pool.url + "/openai/v1/", api_key=API_KEY, max_retries=0, http_client=http
                )
                response = await client.responses.create(
                    model="gpt-4o",
                    input=f"Conversation {n}, turn {turn}.",
                    previous_response_id=previous,
                    max_output_tokens=16,
                )
            previous = response.id
            seen.append(response.id)
        return seen

    async def all_conversations() -> list[list[str] | BaseException]:
        return await asyncio.gather(*(conversation(n) for n in range(CONVERSATIONS)), return_exceptions=True)

    outcomes = asyncio.run(all_conversations())
    lost = [o for o in outcomes if isinstance(o, openai.BadRequestError) and o.code == "previous_response_not_found"]
    assert not lost, lost
    assert all(isinstance(o, list) and len(o) == TURNS for o in outcomes), outcomes
    metrics = scrape(pool)
    served = {labels: v for (name, labels), v in metrics.items() if name == "aoai_requests_total" and v}
    workers = {dict(labels).get("worker") for labels in served}
    assert len(workers) == 2, served  # both workers answered turns


def test_concurrent_agents_chained_by_previous_response_id_over_fresh_connections(pool):
    async def run_agent(n: int) -> int:
        async with fresh_connection() as http:
            client = openai.AsyncOpenAI(
                base_url=pool.url + "/openai/v1/", api_key=API_KEY, max_retries=0, http_client=http
            )
            agents, agent, called = researcher(pool, "gpt-4o", "Look it up, then answer.", client=client)
            result = await agents.Runner.run(agent, f"Agent {n}: what is the tallest tree?")
            for turn in range(3):
                result = await agents.Runner.run(
                    agent, f"Agent {n}, follow-up {turn}.", previous_response_id=result.last_response_id
                )
                assert result.final_output
            return len(called)

    async def all_agents() -> list[int]:
        return await asyncio.gather(*(run_agent(n) for n in range(4)))

    assert len(asyncio.run(all_agents())) == 4
