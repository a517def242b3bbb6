import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons
from unit_support import API_KEY, chat_path, json_of, make_config, make_flow

from aoai.runtime import entra
from aoai.runtime.state import context_of
from aoai.stages import auth
from aoai.stages.auth import Auth

INVALID_KEY = {"error": {"code": "401", "message": auth.INVALID_KEY}}


def run_auth(flow, config=None):
    addon = Auth(config or make_config())
    with taddons.context(addon):
        addon.request(flow)
    return flow.response


@pytest.mark.parametrize("header", ["api-key", "Ocp-Apim-Subscription-Key"])
def test_the_key_in_either_header_passes(header):
    assert run_auth(make_flow(path=chat_path(), key=None, headers={header: API_KEY})) is None


def test_a_bearer_key_passes():
    assert run_auth(make_flow(path=chat_path(), key=None, headers={"Authorization": f"Bearer {API_KEY}"})) is None
    assert run_auth(make_flow(path=chat_path(), key=None, headers={"authorization": f"bearer {API_KEY}"})) is None


@pytest.mark.parametrize("header", ["api-key", "Ocp-Apim-Subscription-Key"])
def test_a_wrong_key_gets_azures_401(header):
    response = run_auth(make_flow(path=chat_path(), key=None, headers={header: "wrong"}))
    assert response.status_code == 401
    assert json_of(response) == INVALID_KEY
    assert response.headers["content-type"] == "application/json"
    assert response.headers["apim-request-id"]


def test_a_missing_key_gets_the_missing_key_401():
    response = run_auth(make_flow(path=chat_path(), key=None))
    assert response.status_code == 401
    assert json_of(response) == {"error": {"code": "401", "message": auth.MISSING_KEY}}
    assert json_of(response)["error"]["message"].startswith("Access denied due to missing subscription key.")


def test_a_wrong_bearer_token_gets_the_token_401():
    response = run_auth(make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer nope"}))
    assert response.status_code == 401
    assert json_of(response) == {"statusCode": 401, "message": auth.INVALID_TOKEN}


def test_the_api_key_decides_when_both_are_sent():
    # openai 1.x sends the key as api-key and as a Bearer token.
    ok = make_flow(path=chat_path(), headers={"Authorization": "Bearer something-else"})
    assert run_auth(ok) is None
    bad = make_flow(path=chat_path(), key="wrong", headers={"Authorization": f"Bearer {API_KEY}"})
    assert json_of(run_auth(bad)) == INVALID_KEY


def test_tokens_added_by_extensions_pass():
    config = make_config()
    config.auth_bearer_token("entra-token")
    assert (
        run_auth(make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer entra-token"}), config) is None
    )
    assert (
        run_auth(make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer other"}), config).status_code
        == 401
    )


def test_health_is_open_but_the_rest_of_management_is_not():
    assert run_auth(make_flow("GET", "/++/health", key=None)) is None
    assert run_auth(make_flow("GET", "/++/health?verbose=1", key=None)) is None
    assert run_auth(make_flow("GET", "/++/config", key=None)).status_code == 401


def test_a_flow_already_answered_is_left_alone():
    flow = make_flow(path=chat_path(), key="wrong")
    flow.response = http.Response.make(418)
    assert run_auth(flow).status_code == 418


# The management endpoints take only the simulator's key (or a signed token of a named principal).

MANAGED = [
    ("GET", "/++/config"),
    ("PATCH", "/++/config"),
    ("GET", "/++/limits"),
    ("GET", "/++/faults"),
    ("POST", "/++/reset-limits"),
    ("POST", "/++/save-recordings"),
    ("PUT", "/++/cassette"),
    ("POST", "/++/token"),
]


@pytest.mark.parametrize("method, path", MANAGED)
def test_management_takes_the_key_in_any_of_its_headers(method, path):
    for headers in (
        {"api-key": API_KEY},
        {"Ocp-Apim-Subscription-Key": API_KEY},
        {"Authorization": f"Bearer {API_KEY}"},
    ):
        assert run_auth(make_flow(method, path, key=None, headers=headers)) is None


@pytest.mark.parametrize("method, path", MANAGED)
@pytest.mark.parametrize(
    "changes", [{}, {"mode": "record"}, {"mode": "replay"}], ids=["generate", "record-without-azure-key", "replay"]
)
def test_management_refuses_any_other_bearer(method, path, changes):
    config = make_config(**changes)
    config.auth_bearer_token("registered-for-the-api")
    for bearer in ("anything", "registered-for-the-api", f"{API_KEY}x"):
        response = run_auth(make_flow(method, path, key=None, headers={"Authorization": f"Bearer {bearer}"}), config)
        assert response.status_code == 401
        assert json_of(response)["error"]["message"] == auth.MANAGEMENT_ONLY
    assert run_auth(make_flow(method, path, key="wrong"), config).status_code == 401
    assert json_of(run_auth(make_flow(method, path, key=None), config))["error"]["message"] == auth.MISSING_KEY


def test_management_takes_a_signed_token_of_a_named_principal_only(tmp_path):
    private = entra.load_private_key(entra.new_private_key_pem())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(entra.jwks_of(private)))
    keys = entra.load_jwks(str(jwks))
    signed = entra.mint(entra.token_claims(oid="admin"), private)
    stranger = entra.mint(entra.token_claims(oid="someone"), private)

    def managed(token, policy):
        return run_auth(
            make_flow("GET", "/++/config", key=None, headers={"Authorization": f"Bearer {token}"}),
            make_config(entra=policy),
        )

    named = entra.TokenPolicy(mode="signature", keys=keys, principals=frozenset({"admin"}))
    assert managed(signed, named) is None
    assert managed(stranger, named).status_code == 401
    # Any principal (none named), or claims mode (no signature: anyone can write any oid): no.
    assert managed(signed, entra.TokenPolicy(mode="signature", keys=keys)).status_code == 401
    unsigned = entra.mint(entra.token_claims(oid="admin"))
    assert managed(unsigned, entra.TokenPolicy(mode="claims", principals=frozenset({"admin"}))).status_code == 401


def test_a_bearer_passed_through_to_azure_is_marked(monkeypatch):
    flow = make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer for-azure"})
    assert run_auth(flow, make_config(mode="record")) is None
    assert context_of(flow).passed_through
    keyed = make_flow(path=chat_path())
    assert run_auth(keyed, make_config(mode="record")) is None and not context_of(keyed).passed_through
    # With AZURE_OPENAI_KEY the simulator answers for every credential: a stranger is a 401.
    assert (
        run_auth(
            make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer for-azure"}),
            make_config(mode="record", azure_openai_key="k"),
        ).status_code
        == 401
    )


def test_undecodable_key_bytes_are_a_wrong_key():
    flow = make_flow(path="/++/config", key=None)
    flow.request.headers.fields = ((b"api-key", b"\xff\xfe-not-utf8"),)
    assert run_auth(flow).status_code == 401
