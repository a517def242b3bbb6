"""Record mode when Azure is not there or answers compressed, through the in-process stack with
a fake Azure on loopback: a refused connection is Azure's JSON 502 and recording resumes when
Azure is back; a compressed answer reaches the client as sent and is recorded decoded; a
forwarder without an endpoint, and switching to record mode without one. (Silent, reset and
broken upstreams, TLS and start-up: tests/e2e/test_e2e_upstream_faults.py.)"""

from __future__ import annotations

import time
from pathlib import Path

from conftest import ROOT, free_port
from fake_azure import UPSTREAM_KEY, FakeAzure
from helpers import assert_azure_error, deployment_path

MESSAGES = [{"role": "user", "content": "hello there"}]


def record_env(endpoint: str, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "SIMULATOR_MODE": "record",
        "AZURE_OPENAI_ENDPOINT": endpoint,
        "AZURE_OPENAI_KEY": UPSTREAM_KEY,
        "RECORDING_DIR": str(folder),
        **extra,
    }


def chat(sim, deployment: str, headers: dict[str, str] | None = None, **body):
    return sim.post(deployment_path(deployment), json={"messages": MESSAGES, **body}, headers=headers)


def recorded(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.yaml"))


def saved(folder: Path, deployment: str) -> str:
    """The deployment's recording file once it is written, else ''."""
    path = folder / f"{deployment}.chat-completions.yaml"
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text() if path.exists() else ""


def assert_recorded_after(sim, folder: Path, deployment: str = "gpt-4o") -> None:
    """The next request is forwarded and recorded: the proxy and its upstream pool are fine."""
    r = sim.post(deployment_path(deployment), json={"messages": [{"role": "user", "content": "next"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Upstream says: next"
    assert "Upstream says: next" in saved(folder, deployment)


def test_a_refused_connection_is_a_502_and_recording_resumes_when_azure_is_back(stack_factory, tmp_path):
    folder = tmp_path / "recordings"
    port = free_port()  # nothing listens here yet
    sim = stack_factory(record_env(f"http://127.0.0.1:{port}", folder))
    error = assert_azure_error(chat(sim, "gpt-4o"), 502, "BadGateway")
    assert error["message"] == f"could not connect to http://127.0.0.1:{port}: connection refused"
    assert recorded(folder) == []
    with FakeAzure(port=port):
        assert_recorded_after(sim, folder)


def test_a_compressed_answer_reaches_the_client_as_sent_and_is_recorded_decoded(stack_factory, tmp_path):
    folder = tmp_path / "recordings"
    with FakeAzure() as upstream:
        upstream.compress = True
        sim = stack_factory(record_env(upstream.url, folder))
        r = chat(sim, "gpt-4o", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"  # relayed as Azure sent it
        assert r.json()["choices"][0]["message"]["content"] == "Upstream says: hello there"
        # A client that asks for no encoding gets none, whatever the upstream client would like.
        r = chat(sim, "gpt-4o", headers={"accept-encoding": "identity"}, user="plain")
        assert "content-encoding" not in r.headers and r.json()["object"] == "chat.completion"
        sent = [{k.lower(): v for k, v in req["headers"].items()} for req in upstream.requests]
        assert [h.get("accept-encoding") for h in sent] == ["gzip", "identity"]
    text = saved(folder, "gpt-4o")
    assert "content: 'Upstream says: hello there'" in text and "gzip" not in text


def test_an_extension_with_its_own_forwarder_records_without_an_endpoint(stack_factory, tmp_path):
    sim = stack_factory(
        {
            "SIMULATOR_MODE": "record",
            "RECORDING_DIR": str(tmp_path / "recordings"),
            "EXTENSION_PATH": str(ROOT / "examples" / "docintel_forwarder.py"),
        }
    )
    assert sim.get("/++/health", key=None).json()["mode"] == "record"
    # What no forwarder takes has nowhere to go: Azure's JSON error says why.
    assert_azure_error(chat(sim, "gpt-4o"), 502, "NoUpstream")


def test_switching_to_record_mode_without_an_endpoint_is_refused(stack_factory):
    sim = stack_factory({"SIMULATOR_LATENCY": "false"})
    r = sim.patch("/++/config", json={"mode": "record"})
    error = assert_azure_error(r, 400, "BadRequest")
    assert error["message"].startswith("AZURE_OPENAI_ENDPOINT: record mode forwards to Azure OpenAI")
    assert sim.get("/++/config").json()["mode"] == "generate"
    assert chat(sim, "gpt-4o", max_tokens=3).status_code == 200  # still generating
