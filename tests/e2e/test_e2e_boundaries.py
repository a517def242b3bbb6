"""Boundaries end to end, against a real mitmdump: input that used to get a 500 gets Azure's
4xx and every view answers afterwards; in record mode a bearer passed through to Azure opens
no management endpoint and reads no recording; a key in the query string reaches neither the
recordings, nor the log, nor Azure when the simulator sends its own key."""

from __future__ import annotations

import sys

import httpx
import pytest
from conftest import API_KEY, API_VERSION, ROOT
from fake_azure import UPSTREAM_KEY, FakeAzure
from helpers import assert_azure_error, assert_still_serving, deployment_url

sys.path.insert(0, str(ROOT / "addons"))
from aoai.runtime import entra

KEY = {"api-key": API_KEY}
INVALID_TOKEN = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is "
    "incorrect (https://cognitiveservices.azure.com), or have expired.",
}
MESSAGES = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def claims_sim(tmp_path_factory):
    """Generate mode, claims mode with tenants set (where a list-valued tid used to be a 500)."""
    from conftest import start_simulator

    sim = start_simulator(
        tmp_path_factory.mktemp("boundaries"),
        {
            "SIMULATOR_LATENCY": "false",
            "SIMULATOR_ENTRA_TOKENS": "claims",
            "SIMULATOR_ENTRA_TENANTS": entra.DEFAULT_TENANT,
        },
    )
    yield sim
    sim.stop()


def views_answer(sim) -> None:
    for path in ("/++/config", "/++/limits", "/++/faults"):
        response = httpx.get(sim.url + path, headers=KEY)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"deployments": {"big": {"model": "gpt-4o", "tokensPerMinute": 1e300}}}, "deployments.big.tokensPerMinute"),
        ({"deployments": {"big": {"model": "gpt-4o", "tokensPerMinute": 2**63}}}, "deployments.big.tokensPerMinute"),
        ({"deployments": {"big": {"model": "gpt-4o", "requestsPerMinute": -1}}}, "deployments.big.requestsPerMinute"),
        ({"deployments": {"big": {"model": "gpt-4o", "tokensPerMinute": "NaN"}}}, "deployments.big.tokensPerMinute"),
        ({"seed": 2**63}, "seed"),
        ({"latency": {"chatCompletions": {"mean": 1e300}}}, "latency.chatCompletions.mean"),
        (
            {"faults": [{"kind": "quotaCut", "share": 1, "tokensPerMinute": 1e300, "forS": 1}]},
            "faults[0].tokensPerMinute",
        ),
    ],
)
def test_out_of_range_configuration_is_a_400_and_every_view_still_answers(claims_sim, body, field):
    before = httpx.get(claims_sim.url + "/++/config", headers=KEY).json()
    response = httpx.patch(claims_sim.url + "/++/config", json={"seed": 5, **body}, headers=KEY)
    assert_azure_error(response, 400, "BadRequest", field + ":")
    assert httpx.get(claims_sim.url + "/++/config", headers=KEY).json() == before  # nothing applied
    views_answer(claims_sim)
    assert_still_serving(claims_sim)


def test_a_token_body_with_a_claim_of_the_wrong_type_is_a_400(claims_sim):
    for body, field in (
        ({"claims": {"exp": "never"}}, "claims.exp"),
        ({"expiresIn": 1e300}, "expiresIn"),
        ({"claims": {"tid": ["a", "b"]}}, "claims.tid"),
    ):
        response = httpx.post(claims_sim.url + "/++/token", json=body, headers=KEY)
        assert_azure_error(response, 400, "BadRequest", field + ":")
    assert httpx.post(claims_sim.url + "/++/token", json={}, headers=KEY).status_code == 200


@pytest.mark.parametrize(
    "claim, value",
    [
        ("tid", ["a", entra.DEFAULT_TENANT]),
        ("tid", {"id": 1}),
        ("oid", [1]),
        ("aud", [1, 2]),
        ("exp", "never"),
        ("appid", {"x": 1}),
    ],
)
def test_a_token_with_a_claim_of_the_wrong_type_is_azures_401(claims_sim, claim, value):
    claims = entra.token_claims()
    claims[claim] = value
    response = httpx.post(
        deployment_url(claims_sim, "gpt-4o"),
        json={"messages": MESSAGES, "max_tokens": 3},
        headers={"Authorization": f"Bearer {entra.mint(claims)}"},
    )
    assert response.status_code == 401 and response.json() == INVALID_TOKEN


@pytest.mark.parametrize(
    "source",
    [
        {"urlSource": "http://[::1"},
        {"urlSource": "https://host:99999/a.pdf"},
        {"urlSource": ["https://host/a.pdf"]},
        {"base64Source": 12},
    ],
)
def test_a_malformed_document_source_is_azures_400(claims_sim, source):
    response = httpx.post(
        f"{claims_sim.url}/documentintelligence/documentModels/prebuilt-layout:analyze?api-version=2024-11-30",
        json=source,
        headers=KEY,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidArgument"


# --- record mode: a bearer passed through to Azure ------------------------------------------


def test_a_passed_through_bearer_opens_no_management_endpoint_and_reads_no_recording(simulator_factory, tmp_path):
    folder = tmp_path / "recordings"
    azure_token = entra.mint(entra.token_claims())
    with FakeAzure(bearer=azure_token) as upstream:
        sim = simulator_factory(
            {
                "SIMULATOR_MODE": "record",
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "RECORDING_DIR": str(folder),
                "SIMULATOR_LATENCY": "false",
            }
        )
        for method, path in (
            ("GET", "/++/config"),
            ("PATCH", "/++/config"),
            ("GET", "/++/limits"),
            ("GET", "/++/faults"),
            ("POST", "/++/reset-limits"),
            ("POST", "/++/save-recordings"),
        ):
            for token in ("anything", azure_token):
                response = httpx.request(
                    method,
                    sim.url + path,
                    json={"seed": 1} if method == "PATCH" else None,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 401, (method, path, response.text)
        url = deployment_url(sim, "gpt-4o")
        body = {"messages": MESSAGES, "user": "recorded-once"}
        # Azure's own token records the exchange; the same request then replays for the key.
        first = httpx.post(url, json=body, headers={"Authorization": f"Bearer {azure_token}"})
        assert first.status_code == 200 and len(upstream.requests) == 1
        replayed = httpx.post(url, json=body, headers=KEY)
        assert replayed.status_code == 200 and len(upstream.requests) == 1
        # A stranger's bearer is not answered from that recording: Azure judges it, and refuses.
        stranger = httpx.post(url, json=body, headers={"Authorization": "Bearer anything"})
        assert stranger.status_code == 401 and len(upstream.requests) == 2
        assert stranger.json()["error"]["message"] == "Access denied due to invalid subscription key."
        # Azure's token again: forwarded, answered by Azure, and not recorded a second time.
        again = httpx.post(url, json=body, headers={"Authorization": f"Bearer {azure_token}"})
        assert again.status_code == 200 and len(upstream.requests) == 3
        # A stranger first on a new request: Azure's 401 is not recorded for the key to replay.
        fresh = {"messages": MESSAGES, "user": "stranger-first"}
        assert httpx.post(url, json=fresh, headers={"Authorization": "Bearer anything"}).status_code == 401
        assert httpx.post(url, json=fresh, headers=KEY).status_code == 401  # forwarded: no Azure key here
        assert len(upstream.requests) == 5
    documents = [p.read_text() for p in folder.glob("*.yaml")]
    assert sum(d.count("recorded-once") for d in documents) == 1
    assert not any("stranger-first" in d for d in documents)


# --- keys in the query string ---------------------------------------------------------------


def test_a_query_key_reaches_neither_the_recording_nor_the_log_nor_azure(simulator_factory, tmp_path):
    folder = tmp_path / "recordings"
    secret = "query-secret-5a1b"
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
        url = (
            f"{sim.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
            f"&api-key={secret}&subscription-key={secret}&sig={secret}"
        )
        answer = httpx.post(url, json={"messages": MESSAGES}, headers=KEY)
        assert answer.status_code == 200, answer.text
        assert (
            httpx.post(url, json={"messages": MESSAGES, "user": "u"}, headers={"api-key": "wrong"}).status_code == 401
        )
        # Recorded without the key: the same request replays, whatever key its query carried.
        replayed = httpx.post(url.replace(secret, "another"), json={"messages": MESSAGES}, headers=KEY)
        assert replayed.status_code == 200 and len(upstream.requests) == 1
        (received,) = upstream.requests
        log = sim.log()
    assert secret not in received["path"] and "api-version=" in received["path"]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and all(secret.encode() not in p.read_bytes() for p in files)
    assert "chat/completions" in log and secret not in log and "another" not in log
