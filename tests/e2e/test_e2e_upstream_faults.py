"""Record mode when Azure misbehaves: refused, silent, reset mid-stream, a gateway's HTML 503,
Azure's own 500, a certificate nobody vouches for. The client always gets Azure's JSON error
naming the cause (or, mid-stream, a stream that breaks off as it would against Azure), nothing
half-done is recorded, and the next request is forwarded and recorded as usual. (A refused connection,
a compressed answer, a forwarder without an endpoint and switching to record mode without
one: tests/stack/test_stack_upstream_faults.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import API_VERSION, start_simulator
from fake_azure import CUT_STREAM, HANG, HTML_503, JSON_500, UPSTREAM_KEY, FakeAzure, self_signed
from helpers import assert_azure_error, azure, deployment_url

MESSAGES = [{"role": "user", "content": "hello there"}]
TIMEOUT_S = 2


def record_env(endpoint: str, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "SIMULATOR_MODE": "record",
        "AZURE_OPENAI_ENDPOINT": endpoint,
        "AZURE_OPENAI_KEY": UPSTREAM_KEY,
        "RECORDING_DIR": str(folder),
        **extra,
    }


def chat(sim, deployment: str, **body) -> httpx.Response:
    return httpx.post(
        deployment_url(sim, deployment), json={"messages": MESSAGES, **body}, headers={"api-key": sim.key}, timeout=60
    )


def recorded(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.yaml"))


def saved(folder: Path, deployment: str) -> str:
    """The deployment's recording file once it is written (a stream is saved just after the
    client has its end), else ''."""
    path = folder / f"{deployment}.chat-completions.yaml"
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.read_text() if path.exists() else ""


def assert_recorded_after(sim, folder: Path, deployment: str = "gpt-4o") -> None:
    """The next request is forwarded and recorded: the proxy and its upstream pool are fine."""
    answer = azure(sim).chat.completions.create(model=deployment, messages=[{"role": "user", "content": "next"}])
    assert answer.choices[0].message.content == "Upstream says: next"
    assert "Upstream says: next" in saved(folder, deployment)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """A recording simulator in front of a fake Azure that misbehaves for some deployments."""
    folder = tmp_path_factory.mktemp("faults")
    with FakeAzure() as upstream:
        upstream.faults.update({"silent": HANG, "cut": CUT_STREAM, "gateway": HTML_503, "broken": JSON_500})
        sim = start_simulator(
            folder, record_env(upstream.url, folder / "recordings", AZURE_OPENAI_TIMEOUT_SECONDS=str(TIMEOUT_S))
        )
        yield sim, upstream, folder / "recordings"
        sim.stop()


def test_an_azure_that_does_not_answer_is_a_504_after_the_timeout(faulty):
    sim, upstream, folder = faulty
    started = time.perf_counter()
    r = chat(sim, "silent")
    took = time.perf_counter() - started
    error = assert_azure_error(r, 504, "GatewayTimeout")
    assert error["message"] == f"{upstream.url} did not answer within {TIMEOUT_S} s"
    assert TIMEOUT_S - 0.2 <= took < TIMEOUT_S + 8
    assert "silent.chat-completions.yaml" not in recorded(folder)
    assert_recorded_after(sim, folder)


@pytest.mark.parametrize("https", [False, True], ids=["http-client", "https-client"])
def test_a_stream_reset_mid_way_breaks_off_for_the_client_and_is_not_recorded(faulty, https):
    sim, _, folder = faulty
    # An HTTPS client's stream passes through mitmproxy's layers (the loopback stream server);
    # a plain HTTP/1.1 client's is written straight to its socket.
    base = f"https://127.0.0.1:{sim.port}" if https else sim.url
    received = b""
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream(
            "POST",
            f"{base}/openai/deployments/cut/chat/completions?api-version={API_VERSION}",
            json={"messages": MESSAGES, "stream": True},
            headers={"api-key": sim.key},
            timeout=30,
            verify=False,
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_raw():
            received += chunk
    assert b'"content": "Half"' in received and b"[DONE]" not in received
    # The SDK, too, sees the stream fail rather than end.
    stream = azure(sim).chat.completions.create(model="cut", messages=MESSAGES, stream=True)
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        list(stream)
    assert "cut.chat-completions.yaml" not in recorded(folder)
    # A whole stream right after, by the same path, is relayed and recorded, [DONE] included.
    whole = f"streamed-{'https' if https else 'http'}"
    with httpx.stream(
        "POST",
        f"{base}/openai/deployments/{whole}/chat/completions?api-version={API_VERSION}",
        json={"messages": MESSAGES, "stream": True},
        headers={"api-key": sim.key},
        timeout=30,
        verify=False,
    ) as r:
        body = r.read()
    assert body.count(b"data: ") == 7 and body.endswith(b"data: [DONE]\n\n")
    text = saved(folder, whole)
    assert "[DONE]" in text and "content: ' there'" in text


def test_a_gateways_html_error_page_becomes_azures_json_502_naming_the_status(faulty):
    sim, upstream, folder = faulty
    with pytest.raises(openai.InternalServerError) as e:
        azure(sim).chat.completions.create(model="gateway", messages=MESSAGES)
    assert e.value.status_code == 502
    assert e.value.response.headers["content-type"].startswith("application/json")
    assert e.value.body["code"] == "BadGateway"
    assert e.value.body["message"] == (
        f"{upstream.url} answered 503 Service Unavailable with text/html, not Azure's JSON"
    )
    assert "gateway.chat-completions.yaml" not in recorded(folder)
    assert_recorded_after(sim, folder)


def test_azures_own_json_server_error_passes_through_unrecorded(faulty):
    sim, _, folder = faulty
    with pytest.raises(openai.InternalServerError) as e:
        azure(sim).chat.completions.create(model="broken", messages=MESSAGES)
    assert e.value.status_code == 500
    assert e.value.body == {
        "code": "InternalServerError",
        "message": "The server had an error while processing your request. Sorry about that!",
    }
    assert "broken.chat-completions.yaml" not in recorded(folder)
    assert_recorded_after(sim, folder)


def test_a_certificate_nobody_vouches_for_is_a_502_naming_the_tls_failure(simulator_factory, tmp_path):
    folder = tmp_path / "recordings"
    cert, key = self_signed(tmp_path)
    with FakeAzure(tls=(cert, key)) as upstream:
        sim = simulator_factory(record_env(upstream.url, folder))
        error = assert_azure_error(chat(sim, "gpt-4o"), 502, "BadGateway")
        assert error["message"] == (
            f"TLS handshake with {upstream.url} failed: certificate verify failed: self-signed certificate"
        )
        assert recorded(folder) == [] and upstream.requests == []
        assert_azure_error(chat(sim, "gpt-4o"), 502, "BadGateway")  # the same again: nothing wedged
        sim.stop()
        # Trusting that certificate (SSL_CERT_FILE, as for a private CA) makes the same upstream work.
        trusting = simulator_factory(record_env(upstream.url, folder, SSL_CERT_FILE=str(cert)))
        assert_recorded_after(trusting, folder)


def failed_start(tmp_path: Path, env: dict[str, str]) -> str:
    sim = start_simulator(tmp_path, env, wait=False)
    try:
        assert sim.process.wait(timeout=40) != 0
    finally:
        sim.stop()
    lines = [line for line in sim.log().splitlines() if line.strip() and "Loading script" not in line]
    assert len(lines) == 1 and "Traceback" not in sim.log(), sim.log()
    return lines[0]


def test_record_mode_without_an_endpoint_stops_start_up_with_one_line(tmp_path):
    line = failed_start(tmp_path, {"SIMULATOR_MODE": "record"})
    assert line.startswith("Cannot start the simulator: AZURE_OPENAI_ENDPOINT: record mode forwards to Azure OpenAI")


def test_an_endpoint_that_is_not_an_http_url_stops_start_up_with_one_line(tmp_path):
    line = failed_start(tmp_path, {"SIMULATOR_MODE": "record", "AZURE_OPENAI_ENDPOINT": "ftp://myres.example"})
    assert line == (
        "Cannot start the simulator: AZURE_OPENAI_ENDPOINT: expected an http(s) URL such as "
        "https://NAME.openai.azure.com, got 'ftp://myres.example'"
    )
