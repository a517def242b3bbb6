import pytest
from aoai.stages import auth
from aoai.stages.auth import Auth
from mitmproxy import http
from mitmproxy.test import taddons
from unit_support import API_KEY, chat_path, json_of, make_config, make_flow

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
    assert run_auth(make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer entra-token"}),
                    config) is None
    assert run_auth(make_flow(path=chat_path(), key=None, headers={"Authorization": "Bearer other"}),
                    config).status_code == 401


def test_health_is_open_but_the_rest_of_management_is_not():
    assert run_auth(make_flow("GET", "/++/health", key=None)) is None
    assert run_auth(make_flow("GET", "/++/health?verbose=1", key=None)) is None
    assert run_auth(make_flow("GET", "/++/config", key=None)).status_code == 401


def test_a_flow_already_answered_is_left_alone():
    flow = make_flow(path=chat_path(), key="wrong")
    flow.response = http.Response.make(418)
    assert run_auth(flow).status_code == 418
