"""HTTP/2 over HTTPS, as Azure answers it: a client offering h2 gets it even when it lists
HTTP/1.1 first (httpx and the Python SDKs with http2=True), unless SIMULATOR_HTTP2_PREFERRED
is off; chat completions, streamed and not, over HTTP/2."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import API_KEY, API_VERSION, start_simulator
from openai import AzureOpenAI

CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
HELLO = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}


def https_sim(folder: Path, env: dict[str, str] | None = None):
    """A simulator with its own confdir; returns (simulator, https URL, CA file)."""
    conf = folder / "mitmproxy"
    sim = start_simulator(folder, {"SIMULATOR_LATENCY": "false", **(env or {})}, args=["--set", f"confdir={conf}"])
    return sim, f"https://127.0.0.1:{sim.port}", str(conf / "mitmproxy-ca-cert.pem")


def negotiated(url: str, ca: str, offers: list[str]) -> str | None:
    """The protocol a TLS handshake offering `offers` (in this order of preference) ends on."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(offers)
    address = urlsplit(url)
    raw = socket.create_connection((address.hostname, address.port), timeout=10)
    with context.wrap_socket(raw, server_hostname=address.hostname) as tls:
        return tls.selected_alpn_protocol()


@pytest.fixture(scope="module")
def preferred(tmp_path_factory):
    sim, url, ca = https_sim(tmp_path_factory.mktemp("h2"))
    yield url, ca
    sim.stop()


def test_http2_is_chosen_when_offered_second(preferred):
    url, ca = preferred
    with httpx.Client(http2=True, verify=ca) as client:
        answer = client.get(url + "/++/health")
    assert answer.status_code == 200
    assert answer.http_version == "HTTP/2"


def test_a_client_offering_only_http1_keeps_it(preferred):
    url, ca = preferred
    with httpx.Client(verify=ca) as client:
        assert client.get(url + "/++/health").http_version == "HTTP/1.1"
    assert negotiated(url, ca, ["http/1.1"]) == "http/1.1"
    assert negotiated(url, ca, ["http/1.1", "h2"]) == "h2"
    assert negotiated(url, ca, ["h2", "http/1.1"]) == "h2"


def test_chat_completion_over_http2(preferred):
    url, ca = preferred
    with httpx.Client(http2=True, verify=ca, headers={"api-key": API_KEY}) as client:
        answer = client.post(url + CHAT, json=HELLO)
    assert answer.http_version == "HTTP/2"
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


def test_streamed_chat_completion_over_http2(preferred):
    url, ca = preferred
    with (
        httpx.Client(http2=True, verify=ca, headers={"api-key": API_KEY}) as client,
        client.stream("POST", url + CHAT, json={**HELLO, "stream": True}) as answer,
    ):
        assert answer.http_version == "HTTP/2"
        assert answer.status_code == 200
        events = [line[6:] for line in answer.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)


def test_openai_sdk_over_http2(preferred):
    url, ca = preferred
    http_client = httpx.Client(http2=True, verify=ca)
    client = AzureOpenAI(azure_endpoint=url, api_key=API_KEY, api_version=API_VERSION, http_client=http_client)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", **HELLO)
    assert raw.http_response.http_version == "HTTP/2"
    assert raw.parse().choices[0].message.content
    stream = client.chat.completions.create(model="gpt-4o", stream=True, **HELLO)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    http_client.close()


def test_off_the_client_order_decides(tmp_path):
    sim, url, ca = https_sim(tmp_path, {"SIMULATOR_HTTP2_PREFERRED": "false"})
    try:
        with httpx.Client(http2=True, verify=ca) as client:  # offers http/1.1, then h2
            assert client.get(url + "/++/health").http_version == "HTTP/1.1"
        assert negotiated(url, ca, ["http/1.1", "h2"]) == "http/1.1"
        assert negotiated(url, ca, ["h2", "http/1.1"]) == "h2"
    finally:
        sim.stop()
