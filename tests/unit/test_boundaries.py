"""Boundaries: keys in query strings never reach recordings or logs, a bearer passed through to
Azure reads no recording, and calls between workers need the launch's secret."""

from __future__ import annotations

import pytest
from unit_support import chat_path, make_config, make_flow

from aoai.runtime import peers, redaction
from aoai.runtime.recording import Interaction, KeyRules, RecordingStore, dump_document, request_key
from aoai.runtime.state import context_of
from aoai.runtime.streams import StreamServer
from aoai.stages import routing
from aoai.stages.record import Record
from aoai.stages.replay import Replay
from aoai.stages.routing import Routing

# --- keys in the query --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "api-key",
        "API-KEY",
        "subscription-key",
        "Ocp-Apim-Subscription-Key",
        "sig",
        "code",
        "access_token",
        "token",
        "client_secret",
        "apiKey",
        "x-functions-key",
        "refresh_token",
        "password",
    ],
)
def test_key_like_names_are_secret(name):
    assert redaction.secret_query_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "api-version",
        "limit",
        "after",
        "order",
        "pages",
        "stringIndexType",
        "include[]",
        "$skiptoken",
        "features",
        "locale",
        "output",
    ],
)
def test_the_apis_own_parameters_are_not(name):
    assert not redaction.secret_query_name(name)


def test_query_keys_are_taken_off_the_request_before_anything_else_sees_it():
    flow = make_flow(path=chat_path() + "&api-key=SECRET1&sig=SECRET2&user=u&code=SECRET3")
    Routing(make_config()).request(flow)
    assert "SECRET" not in flow.request.path and "SECRET" not in flow.request.pretty_url
    assert flow.request.query.get("api-version") and flow.request.query.get("user") == "u"
    assert context_of(flow).query_secrets == (("api-key", "SECRET1"), ("sig", "SECRET2"), ("code", "SECRET3"))
    assert context_of(flow).route.operation == "chat"


def test_a_query_without_keys_is_left_as_it_is():
    path = chat_path() + "&include%5B%5D=x&order=desc"
    flow = make_flow(path=path)
    Routing(make_config()).request(flow)
    assert flow.request.path == path and context_of(flow).query_secrets == ()


def test_recordings_never_hold_a_query_key(tmp_path):
    interaction = Interaction(
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        [("api-version", "2024-10-21"), ("api-key", "SECRET"), ("subscription-key", "S2")],
        {"content-type": "application/json"},
        b"{}",
        200,
        {},
        b"{}",
    )
    document = dump_document(interaction)
    assert b"SECRET" not in document and b"S2" not in document and b"api-version" in document
    # A request with a key in its query finds the recording made without it.
    rules = KeyRules()
    assert request_key("POST", "/p", [("api-key", "A")], b"{}", "application/json", rules) == request_key(
        "POST", "/p", [], b"{}", "application/json", rules
    )


def test_record_mode_sends_query_keys_upstream_only_when_the_clients_credentials_go_through():
    for azure_key, expected in (("", "/x?api-version=1&api-key=K"), ("azure", "/x?api-version=1")):
        config = make_config(mode="record", azure_openai_key=azure_key)
        flow = make_flow("POST", "/x?api-version=1&api-key=K")
        Routing(config).request(flow)
        assert Record(config, RecordingStore("unused"))._path(context_of(flow)) == expected


# --- a bearer passed through to Azure reads no recording ---------------------------------------


def recorded_store(tmp_path, flow) -> RecordingStore:
    request = flow.request
    interaction = Interaction(
        "POST",
        request.path.partition("?")[0],
        list(request.query.items(multi=True)),
        {"content-type": "application/json"},
        request.content,
        200,
        {"content-type": "application/json"},
        b'{"recorded": true}',
    )
    (tmp_path / "gpt-4o.chat-completions.yaml").write_bytes(dump_document(interaction))
    store = RecordingStore(tmp_path)
    store.load()
    return store


def test_a_passed_through_bearer_is_forwarded_even_when_recorded_and_not_saved_again(tmp_path):
    config = make_config(mode="record")
    flow = make_flow(
        path=chat_path(),
        body={"messages": [{"role": "user", "content": "hi"}]},
        key=None,
        headers={"Authorization": "Bearer for-azure"},
    )
    routing.resolve(flow, config)
    store = recorded_store(tmp_path, flow)
    replay = Replay(config, store, StreamServer())
    context_of(flow).passed_through = True
    replay.request(flow)
    assert flow.response is None  # left for the record stage: Azure judges the bearer
    assert context_of(flow).recording is False  # and the answer is not recorded a second time
    vouched = make_flow(path=chat_path(), body={"messages": [{"role": "user", "content": "hi"}]})
    routing.resolve(vouched, config)
    replay.request(vouched)
    assert vouched.response is not None and vouched.response.status_code == 200


# --- calls between workers ----------------------------------------------------------------------

SECRET = "0123456789abcdef-secret"


def test_only_the_launch_secret_makes_a_peer():
    assert peers.from_peer({"x-simulator-peer": SECRET}, SECRET)
    assert not peers.from_peer({"x-simulator-peer": "1"}, SECRET)  # what a client may send
    assert not peers.from_peer({"x-simulator-peer": ""}, SECRET)
    assert not peers.from_peer({}, SECRET)
    assert not peers.from_peer({"x-simulator-peer": ""}, "")  # no secret set: nobody is a peer
    assert not peers.from_peer({"x-simulator-peer": "\udcff"}, SECRET)  # undecodable bytes


def test_an_encoded_key_name_is_found_too():
    flow = make_flow(path=chat_path() + "&%61pi-%6Bey=SECRET")
    Routing(make_config()).request(flow)
    assert "SECRET" not in flow.request.path and context_of(flow).query_secrets == (("api-key", "SECRET"),)
