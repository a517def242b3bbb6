"""Secrets and access: nothing record mode writes holds a key or a token, the management
endpoints other than health and metrics need the key, and the configuration never shows the
upstream key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import API_VERSION
from fake_azure import UPSTREAM_KEY, FakeAzure
from openai import AzureOpenAI

BEARER = "eyJhbGciOiJub25lIn0.c2VjcmV0LWJlYXJlci10b2tlbg.sig-9c1e"


def test_nothing_record_mode_writes_holds_a_key_or_a_token(simulator_factory, tmp_path):
    folder = tmp_path / "recordings"
    with FakeAzure() as upstream:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
                "RECORDING_DIR": str(folder),
                "LOG_LEVEL": "DEBUG",
            }
        )
        client = AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, max_retries=0)
        messages = [{"role": "user", "content": "Hello!"}]
        client.chat.completions.create(model="gpt-4o", messages=messages)
        list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
        client.embeddings.create(model="text-embedding-3-small", input="hi")
        # A bearer token next to the key, as openai 1.x sends both, and as the only credential.
        url = f"{sim.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
        httpx.post(
            url,
            json={"messages": messages, "user": "u1"},
            headers={"api-key": sim.key, "authorization": f"Bearer {BEARER}"},
        )
        httpx.post(url, json={"messages": messages, "user": "u2"}, headers={"authorization": f"Bearer {BEARER}"})
        httpx.post(f"{sim.url}/++/save-recordings", headers={"api-key": sim.key})
        assert len(upstream.requests) >= 3
        log = sim.log()
    written = [p for p in folder.rglob("*") if p.is_file()]  # recordings and their indexes
    assert any(p.suffix == ".yaml" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (UPSTREAM_KEY, sim.key, BEARER):
            assert secret.encode() not in data, f"{secret!r} is in {path}"
    # The log at DEBUG names requests, never credentials (the start banner shows the simulator's
    # own key on purpose, so a user can paste it: it is the only place).
    assert UPSTREAM_KEY not in log and BEARER not in log
    assert log.count(sim.key) == 2  # the banner's key line and its curl command


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/++/config"),
        ("PATCH", "/++/config"),
        ("GET", "/++/limits"),
        ("POST", "/++/reset-limits"),
        ("POST", "/++/save-recordings"),
    ],
)
def test_management_endpoints_need_the_key(simulator, method, path):
    response = httpx.request(method, simulator.url + path, json={} if method == "PATCH" else None)
    assert response.status_code == 401
    assert (
        httpx.request(
            method, simulator.url + path, headers={"api-key": "wrong"}, json={} if method == "PATCH" else None
        ).status_code
        == 401
    )


@pytest.mark.parametrize("path", ["/++/health", "/++/metrics"])
def test_probes_and_scrapers_need_no_key(simulator, path):
    assert httpx.get(simulator.url + path).status_code == 200


def test_the_configuration_never_shows_the_upstream_key(simulator_factory):
    sim = simulator_factory({"AZURE_OPENAI_KEY": UPSTREAM_KEY, "AZURE_OPENAI_ENDPOINT": "https://example.invalid"})
    shown = httpx.get(f"{sim.url}/++/config", headers={"api-key": sim.key})
    assert shown.status_code == 200 and UPSTREAM_KEY not in shown.text
    patched = httpx.patch(f"{sim.url}/++/config", json={"seed": 3}, headers={"api-key": sim.key})
    assert patched.status_code == 200 and UPSTREAM_KEY not in patched.text


def test_keys_are_compared_in_constant_time():
    source = (Path(__file__).resolve().parents[2] / "addons" / "aoai" / "stages" / "auth.py").read_text()
    assert "hmac.compare_digest" in source and "== config.api_key" not in source
