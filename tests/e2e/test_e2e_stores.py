"""Stores bounded in bytes, end to end: a real mitmdump with small bounds, sent many requests
with large distinct paths, large stored responses, long request ids and endless deployment
names; its memory (VmRSS from /proc) and /++/metrics stay small, and /++/limits shows what
each store holds against its bound.

Each burst sends several times more than what is measured may grow, so a store that keeps
what it is sent fails clearly, while the allocator's own noise passes.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest
from conftest import API_KEY, API_VERSION, start_simulator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")

MiB = 1024 * 1024
HEADERS = {"api-key": API_KEY}
DEPLOYMENTS = {
    "gpt-4o": {"model": "gpt-4o"},
    # Two requests of 419 tokens fit a minute; every later one is throttled.
    "tight": {"model": "gpt-4o", "tokensPerMinute": 1000, "requestsPerMinute": 6000},
}
RESPONSES_BYTES = 4 * MiB


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    (folder / "deployments.json").write_text(json.dumps(DEPLOYMENTS))
    s = start_simulator(
        folder,
        {
            "SIMULATOR_LATENCY": "false",
            "OPENAI_DEPLOYMENT_CONFIG_PATH": str(folder / "deployments.json"),
            "RESPONSES_STORED_MAX_BYTES": str(RESPONSES_BYTES),
            "METRICS_MAX_DEPLOYMENT_LABELS": "20",
            # Large request lines and headers are what these tests send.
            "SIMULATOR_MAX_HEADER_BYTES": str(4 * MiB),
        },
    )
    yield s
    s.stop()


@pytest.fixture
def client(sim):
    with httpx.Client(base_url=sim.url, timeout=30) as c:
        yield c


def rss(sim) -> int:
    """The simulator's resident memory now, in bytes."""
    for line in Path(f"/proc/{sim.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def grows_by(sim, send) -> int:
    """How much the simulator's memory grew over `send(100)`, measured after `send(40)` has let
    its allocator reach a steady state for requests of that kind (it keeps some tens of MiB
    freed by the first large requests for the next ones)."""
    send(40)
    before = rss(sim)
    send(100)
    return rss(sim) - before


class RawClient:
    """HTTP/1.1 on one kept-alive socket, for request lines and headers larger than HTTP
    client libraries send or read."""

    def __init__(self, sim):
        self.socket = socket.create_connection(("127.0.0.1", sim.port), timeout=30)
        self.reader = self.socket.makefile("rb")

    def send(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> int:
        head = [
            f"{method} {target} HTTP/1.1",
            "host: 127.0.0.1",
            f"content-length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.socket.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status = int(self.reader.readline().split()[1])
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        self.reader.read(length)
        return status

    def close(self) -> None:
        self.reader.close()
        self.socket.close()


@pytest.fixture
def raw(sim):
    c = RawClient(sim)
    yield c
    c.close()


def test_large_distinct_paths_are_not_remembered(sim, raw):
    size = 256 * 1024
    sent = iter(range(10**6))

    def send(count: int) -> None:
        for n in itertools.islice(sent, count):
            target = f"/openai/deployments/{n:08d}{'d' * size}/chat/completions?api-version={API_VERSION}"
            assert raw.send("POST", target, {"content-type": "application/json"}, b"{}") == 401  # no key

    grown = grows_by(sim, send)
    # Kept whole, 100 paths of 256 KiB would be 25 MiB (twice that with their parameters).
    assert grown < 10 * MiB, f"grew {grown / MiB:.1f} MiB"


def responses_request(client, image_bytes: int, previous: str | None = None) -> httpx.Response:
    image = "data:image/png;base64," + base64.b64encode(os.urandom(image_bytes)).decode()
    body = {
        "model": "gpt-4o",
        "max_output_tokens": 16,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in it?"},
                    {"type": "input_image", "image_url": image},
                ],
            }
        ],
    }
    if previous is not None:
        body["previous_response_id"] = previous
    return client.post("/openai/v1/responses", json=body, headers=HEADERS)


def test_stored_responses_stay_within_their_bytes(sim, client):
    ids: list[str] = []

    def send(count: int) -> None:
        for _ in range(count):
            r = responses_request(client, 768 * 1024)  # 1 MiB as base64
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])

    grown = grows_by(sim, send)
    # All kept would be 100 MiB; the store may hold 4 MiB (and the allocator keeps some slack).
    assert grown < 40 * MiB, f"grew {grown / MiB:.1f} MiB"
    assert client.get(f"/openai/v1/responses/{ids[0]}", headers=HEADERS).status_code == 404  # the oldest left
    newest = client.get(f"/openai/v1/responses/{ids[-1]}", headers=HEADERS)
    assert newest.status_code == 200 and newest.json()["id"] == ids[-1]
    stored = client.get("/++/limits", headers=HEADERS).json()["stores"]["responses"]
    assert 0 < stored["bytes"] <= stored["maxBytes"] == RESPONSES_BYTES and stored["count"] <= 4


def test_a_response_larger_than_the_budget_is_not_kept_and_answers_404(sim, client):
    r = responses_request(client, 3 * MiB)  # 4 MiB as base64: more than the whole budget
    assert r.status_code == 200, r.text
    gone = client.get(f"/openai/v1/responses/{r.json()['id']}", headers=HEADERS)
    assert gone.status_code == 404
    assert gone.json()["error"]["message"] == f"Response with id '{r.json()['id']}' not found."
    # A conversation continuing from it gets Azure's 400 for an unknown previous response.
    follow = client.post(
        "/openai/v1/responses",
        headers=HEADERS,
        json={"model": "gpt-4o", "input": "and?", "previous_response_id": r.json()["id"]},
    )
    assert follow.status_code == 400 and follow.json()["error"]["code"] == "previous_response_not_found"


def test_long_request_ids_of_throttled_clients_leave_no_memory_behind(sim, raw, client):
    size = 256 * 1024
    target = f"/openai/deployments/tight/chat/completions?api-version={API_VERSION}"
    body = json.dumps({"messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 400}).encode()
    sent = iter(range(10**6))

    def send(count: int) -> None:
        for n in itertools.islice(sent, count):
            headers = {**HEADERS, "content-type": "application/json", "x-ms-client-request-id": f"{n:08d}" + "i" * size}
            assert raw.send("POST", target, headers, body) in (200, 429)

    grown = grows_by(sim, send)
    # Each 429 leaves a hint for its client: with the ids kept whole, 25 MiB.
    assert grown < 10 * MiB, f"grew {grown / MiB:.1f} MiB"
    hints = client.get("/++/limits", headers=HEADERS).json()["stores"]["retryHints"]
    assert hints["count"] >= 100 and hints["bytes"] <= hints["maxBytes"]


def test_metrics_stay_small_after_many_undefined_deployments(sim, client):
    for n in range(500):
        name = f"undefined-{n:04d}-" + "n" * 20_000
        r = client.post(
            f"/openai/deployments/{name}/chat/completions?api-version={API_VERSION}",
            headers=HEADERS,
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        )
        assert r.status_code == 200, r.text
    assert (
        client.post(
            f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            headers=HEADERS,
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        ).status_code
        == 200
    )
    metrics = httpx.get(f"{sim.url}/++/metrics").text  # no key needed
    assert len(metrics) < 2 * MiB, f"/++/metrics is {len(metrics) / MiB:.1f} MiB"
    deployments = {
        line.partition('deployment="')[2].partition('"')[0]
        for line in metrics.splitlines()
        if line.startswith("aoai_requests_total{")
    }
    # 20 undefined names, the rest under (other), the defined ones and "" (requests refused before routing).
    assert {"(other)", "gpt-4o"} <= deployments and len(deployments - {"", "gpt-4o", "tight"}) == 20 + 1
    assert max(len(d) for d in deployments) <= 128
    labels = client.get("/++/limits", headers=HEADERS).json()["stores"]["undefinedDeploymentLabels"]
    assert labels["count"] == labels["maxCount"] == 20


def test_limits_shows_every_store_with_its_bound(sim, client):
    stores = client.get("/++/limits", headers=HEADERS).json()["stores"]
    assert set(stores) == {
        "responses",
        "images",
        "documentIntelligenceResults",
        "promptCache",
        "routeCache",
        "undefinedDeploymentLabels",
        "retryHints",
        "pendingRecordings",
        "recordingCache",
        "dataFolder",
    }
    for name, store in stores.items():
        assert store["count"] <= store.get("maxCount", store["count"]), name
        if "maxBytes" in store:
            assert 0 <= store["bytes"] <= store["maxBytes"], name
            assert store["settings"]["maxBytes"].endswith("_MAX_BYTES"), name
    assert stores["responses"]["settings"] == {"maxCount": "RESPONSES_STORED", "maxBytes": "RESPONSES_STORED_MAX_BYTES"}
    assert stores["images"]["maxBytes"] == 64 * MiB  # the default


def test_recordings_waiting_past_their_bound_are_saved_not_lost(tmp_path):
    from fake_azure import UPSTREAM_KEY, FakeAzure

    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        s = start_simulator(
            tmp_path,
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                "RECORDING_DIR": str(folder),
                "RECORDING_AUTOSAVE": "false",
                "RECORDING_PENDING_MAX_BYTES": "20000",
            },
        )
        try:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                for n in range(12):
                    r = c.post(
                        f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
                        headers={"api-key": s.key},
                        json={"messages": [{"role": "user", "content": f"{n} " + "w" * 4000}]},
                    )
                    assert r.status_code == 200, r.text
                pending = c.get("/++/limits", headers={"api-key": s.key}).json()["stores"]["pendingRecordings"]
                saved = c.post("/++/save-recordings", headers={"api-key": s.key}).json()["saved"]
        finally:
            s.stop()
        log = s.log()
    assert pending["bytes"] <= pending["maxBytes"] == 20000 and pending["count"] < 5  # each is over 4 KB
    documents = (folder / "gpt-4o.chat-completions.yaml").read_text().count("\nrecorded_at:")
    assert documents == 12 and saved == pending["count"]  # every one saved: before the bound was passed, or after
    assert log.count("RECORDING_PENDING_MAX_BYTES") == 1
