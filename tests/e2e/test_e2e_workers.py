"""Several simulator processes behind HAProxy on one port (scripts/workers.py): one quota,
configuration changes that reach every worker through Redis, one metrics scrape, a worker that dies taken
out of rotation and started again, and record mode writing each interaction once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import simulator_process
import yaml
from conftest import API_KEY, API_VERSION
from fake_azure import UPSTREAM_KEY, FakeAzure
from helpers import scrape, value
from workers import haproxy_path

pytestmark = pytest.mark.skipif(haproxy_path() is None, reason="haproxy is not installed (.ci/run installs it)")

DEPLOYMENTS = {"tight": {"model": "gpt-4o", "tokensPerMinute": 1000, "requestsPerMinute": 600}}


class Pool:
    """A worker pool through the shared process helper, and the worker addresses it printed."""

    def __init__(self, folder: Path, count: int, env: dict[str, str]):
        self.folder = folder
        (folder / "deployments.json").write_text(json.dumps(DEPLOYMENTS))
        self.server = simulator_process.start_workers(
            count,
            cwd=folder,
            env={
                "SIMULATOR_API_KEY": API_KEY,
                "SIMULATOR_LATENCY": "false",
                "SIMULATOR_SEED": "1",
                "OPENAI_DEPLOYMENT_CONFIG_PATH": str(folder / "deployments.json"),
                "RECORDING_DIR": str(folder / "recordings"),
                **env,
            },
            extra_args=["--set", "flow_detail=1"],  # a line per request in each worker's log, which tests read
        )
        simulator_process.wait_ready(self.server, after_log=simulator_process.WORKERS_BANNER, timeout=90)
        self.process, self.port, self.url = self.server.process, self.server.port, self.server.url
        self.workers = [u.strip() for u in self.log().split("Workers:")[1].split("(logs")[0].split(",")]

    def log(self) -> str:
        return self.server.log()

    def stop(self) -> None:
        self.server.stop(timeout=20)


@pytest.fixture
def pool(tmp_path):
    started = []

    def make(count: int = 2, **env: str) -> Pool:
        started.append(Pool(tmp_path, count, env))
        return started[-1]

    yield make
    for p in started:
        p.stop()
        assert p.process.returncode == 0, p.log()


def chat(url: str, deployment: str = "gpt-4o", **body) -> httpx.Response:
    return httpx.post(
        f"{url}/openai/deployments/{deployment}/chat/completions?api-version={API_VERSION}",
        json={"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 400, **body},
        headers={"api-key": API_KEY},
        timeout=30,
    )


def test_two_workers_answer_on_one_port_and_share_one_quota(pool):
    p = pool()
    # Each request on a fresh connection, so the balancer spreads them over both workers.
    statuses = [chat(p.url, "tight").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]  # 1000 TPM, 419 tokens each: two fit, whoever answers
    metrics = scrape(p)
    served = {w: value(metrics, "aoai_requests_total", worker=w.partition("//")[2]) for w in p.workers}
    assert sum(served.values()) == 4 and all(n >= 1 for n in served.values()), served


def test_a_configuration_change_reaches_every_worker(pool):
    p = pool()
    patched = httpx.patch(
        f"{p.url}/++/config",
        json={"seed": 42, "deployments": {"extra": {"model": "gpt-4o"}}},
        headers={"api-key": API_KEY},
    )
    assert patched.status_code == 200
    assert patched.json()["replicas"] == {w.partition("//")[2]: "applied" for w in p.workers}
    for worker in p.workers:
        config = httpx.get(f"{worker}/++/config", headers={"api-key": API_KEY}).json()
        assert config["seed"] == 42 and "extra" in config["deployments"]


def worker_pid(worker: str) -> int:
    return next(
        int(line.split()[0])
        for line in subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
        if f"-p {worker.rpartition(':')[2]}" in line and "simulator.py" in line
    )


def wait_healthy(worker: str, p: Pool) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{worker}/++/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.2)


def test_a_worker_that_was_down_takes_the_changes_made_meanwhile(pool):
    p = pool()
    first, second = p.workers
    config = f"{first}/++/config"
    assert httpx.patch(config, json={"seed": 7}, headers={"api-key": API_KEY}).status_code == 200
    assert httpx.get(f"{second}/++/config", headers={"api-key": API_KEY}).json()["seed"] == 7
    # A change this worker refuses is checked here and changes nothing anywhere.
    refused = httpx.patch(
        config,
        json={"seed": 8, "deployments": {"big": {"model": "gpt-4o", "tokensPerMinute": 1e300}}},
        headers={"api-key": API_KEY},
    )
    assert refused.status_code == 400
    # A worker down: the change is taken all the same, and by the worker when it is back.
    os.kill(worker_pid(second), signal.SIGKILL)
    down = httpx.patch(config, json={"seed": 9}, headers={"api-key": API_KEY}, timeout=30)
    assert down.status_code == 200, down.text
    assert down.json()["replicas"][first.partition("//")[2]] == "applied"
    wait_healthy(second, p)
    assert httpx.get(f"{second}/++/config", headers={"api-key": API_KEY}).json()["seed"] == 9
    reset = httpx.post(f"{first}/++/reset-limits", headers={"api-key": API_KEY}).json()
    assert reset["reset"] is True and set(reset["replicas"]) == {w.partition("//")[2] for w in p.workers}
    # An image no worker holds: looked up in the shared store (Redis), never asked of the other worker.
    for _ in range(5):
        assert httpx.get(f"{first}/++/images/nowhere-to-be-found.png").status_code == 404
    folder = Path(p.log().split("(logs in ")[1].split(")")[0])
    first_log, second_log = ((folder / f"worker{i}.log").read_text() for i in (0, 1))
    assert first_log.count("/++/images/nowhere") >= 5, first_log[-2000:]  # (mitmproxy cuts long URLs)
    assert second_log.count("/++/images/nowhere") == 0, second_log[-2000:]


def test_a_killed_worker_is_taken_out_of_rotation_and_started_again(pool):
    p = pool()
    victim = p.workers[0]
    health = httpx.get(f"{victim}/++/health").json()
    pid = next(
        int(line.split()[0])
        for line in subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
        if f"-p {victim.rpartition(':')[2]}" in line and "simulator.py" in line
    )
    os.kill(pid, signal.SIGKILL)
    # The kill takes effect as the kernel tears the process down: until then its listening
    # socket still takes connections (and drops them). Once the port refuses them, nothing is
    # in flight, and every request after that is answered.
    port = int(victim.rpartition(":")[2])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            break
        time.sleep(0.005)
    assert [chat(p.url).status_code for _ in range(10)] == [200] * 10
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{victim}/++/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.2)
    assert "worker0 exited" in p.log() and health["worker"] == victim.partition("//")[2]


def test_record_mode_writes_each_interaction_once(pool):
    with FakeAzure() as upstream:
        p = pool(SIMULATOR_MODE="record", AZURE_OPENAI_ENDPOINT=upstream.url, AZURE_OPENAI_KEY=UPSTREAM_KEY)
        for i in range(6):
            assert chat(p.url, user=f"user-{i}").status_code == 200
        assert len(upstream.requests) == 6
    files = list((p.folder / "recordings").glob("*.yaml"))
    documents = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    assert sorted(d["request"]["body"]["user"] for d in documents) == [f"user-{i}" for i in range(6)]


def test_every_worker_replays_the_recordings(pool, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    body = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 400}
    (recordings / "gpt-4o.chat-completions.yaml").write_text(
        yaml.safe_dump(
            {
                "request": {
                    "method": "POST",
                    "path": "/openai/deployments/gpt-4o/chat/completions",
                    "headers": {"content-type": "application/json"},
                    "body": body,
                },
                "response": {
                    "status": 200,
                    "headers": {"content-type": "application/json"},
                    "body": {
                        "id": "chatcmpl-recorded",
                        "object": "chat.completion",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "From the recording."},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
                    },
                },
                "duration_ms": 0,
            }
        )
    )
    p = pool(SIMULATOR_MODE="replay")
    answers = [chat(p.url) for _ in range(6)]  # fresh connections: both workers answer
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {"From the recording."}
    metrics = scrape(p)
    assert all(value(metrics, "aoai_requests_total", worker=w.partition("//")[2], status="200") >= 1 for w in p.workers)


def test_an_image_url_made_by_one_worker_downloads_through_any(pool):
    p = pool()
    made = httpx.post(
        f"{p.url}/openai/deployments/dall-e-3/images/generations?api-version={API_VERSION}",
        json={"prompt": "A red bicycle", "size": "1024x1024"},
        headers={"api-key": API_KEY},
        timeout=60,
    )
    assert made.status_code == 200, made.text
    url = made.json()["data"][0]["url"]
    assert url.startswith(p.url)
    # Fresh connections: the balancer sends them to both workers; each serves the image.
    downloads = [httpx.get(url, timeout=30) for _ in range(4)]
    assert {d.status_code for d in downloads} == {200}
    assert len({d.content for d in downloads}) == 1 and downloads[0].content.startswith(b"\x89PNG")
