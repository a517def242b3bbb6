"""How a request is matched against its recordings: what counts towards its key, what does
not, and what a miss reports."""

import json

import pytest

from aoai.runtime.recording import Interaction, KeyRules, RecordingStore, body_fingerprint, dump_document, request_key
from aoai.runtime.recording.matchers import differing_fields
from aoai.runtime.recording.serialisation import key_of_request_part, load_document

CHAT = "/openai/deployments/gpt-4o/chat/completions"
JSON = "application/json"


def key(body: bytes, query=(("api-version", "2024-10-21"),), rules=None, content_type=JSON, path=CHAT):
    return request_key("POST", path, list(query), body, content_type, rules or KeyRules())


def chat(body: dict, version: str = "2024-10-21", path: str = CHAT) -> Interaction:
    return Interaction(
        "POST", path, [("api-version", version)], {"content-type": JSON}, json.dumps(body).encode(), 200, {}, b"{}"
    )


# --- JSON bodies ---------------------------------------------------------------------------------


def test_json_bodies_match_whatever_their_key_order_and_spacing():
    one = key(b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}')
    assert key(b'{"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o"}') == one
    assert key(b'\n  {\n "messages" : [ {"role":"user", "content":"hi"} ] ,\n "model":"gpt-4o" }\n') == one


def test_json_bodies_that_differ_in_meaning_do_not_match():
    one = key(b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert key(b'{"messages": [{"role": "user", "content": "hi "}]}') != one  # text inside a value counts
    assert key(b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 0}') != one
    assert key(b'{"n": 1}') != key(b'{"n": 1.5}')


def test_list_order_counts():
    assert key(b'{"stop": ["a", "b"]}') != key(b'{"stop": ["b", "a"]}')


def test_ignored_fields_do_not_count_at_the_top_level_only():
    rules = KeyRules(ignore_fields=("user", "seed"))
    base = key(b'{"messages": [], "user": "alice", "seed": 1}', rules=rules)
    assert key(b'{"messages": [], "user": "bob"}', rules=rules) == base
    assert key(b'{"messages": []}', rules=rules) == base
    assert key(b'{"messages": [], "user": "bob", "temperature": 1}', rules=rules) != base
    # A nested field of the same name is part of the request's meaning.
    assert key(b'{"messages": [{"user": "a"}]}', rules=rules) != key(b'{"messages": [{"user": "b"}]}', rules=rules)
    # Without the rule the field counts.
    assert key(b'{"messages": [], "user": "alice"}') != key(b'{"messages": [], "user": "bob"}')


def test_a_body_that_only_looks_like_json_is_matched_byte_for_byte():
    assert key(b"{not json") == key(b"{not json")
    assert key(b"{not json") != key(b"{not  json")
    assert body_fingerprint(b"{not json", JSON, KeyRules()) == b"{not json"


# --- the query ------------------------------------------------------------------------------------


def test_api_version_is_ignored_unless_asked_for():
    body = b'{"messages": []}'
    assert key(body, [("api-version", "2024-10-21")]) == key(body, [("api-version", "2025-01-01-preview")])
    assert key(body, [("api-version", "2024-10-21")]) == key(body, [])
    strict = KeyRules(match_api_version=True)
    assert key(body, [("api-version", "2024-10-21")], strict) != key(body, [("api-version", "2025-01-01")], strict)
    assert key(body, [("api-version", "2024-10-21")], strict) == key(body, [("api-version", "2024-10-21")], strict)
    assert "api-version=2024-10-21" in key(body, [("api-version", "2024-10-21")], strict)


def test_query_order_does_not_count_its_values_do():
    body = b""
    assert key(body, [("a", "1"), ("b", "2")]) == key(body, [("b", "2"), ("a", "1")])
    assert key(body, [("a", "1")]) != key(body, [("a", "2")])


@pytest.mark.parametrize("name", ["api-key", "subscription-key", "sig", "code", "access_token"])
def test_a_key_like_query_parameter_never_counts_nor_shows_in_the_key(name):
    one = key(b"{}", [("api-version", "v"), (name, "s3cret-value")])
    assert one == key(b"{}", [("api-version", "v"), (name, "another")]) == key(b"{}", [("api-version", "v")])
    assert "s3cret-value" not in one


# --- uploads and binary bodies -------------------------------------------------------------------


def form(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


AUDIO = bytes(range(256)) * 4


def upload_key(upload: tuple[bytes, str], rules=None) -> str:
    body, content_type = upload
    return key(body, content_type=content_type, rules=rules)


def test_an_upload_matches_whatever_its_boundary_and_part_order():
    parts = [("model", None, b"whisper"), ("file", "a.wav", AUDIO)]
    one = upload_key(form("aaaa", parts))
    assert upload_key(form("zzzz-other", parts)) == one
    assert upload_key(form("bbbb", parts[::-1])) == one


def test_an_upload_differs_by_its_fields_and_its_files_names_and_bytes():
    one = upload_key(form("b", [("model", None, b"whisper"), ("file", "a.wav", AUDIO)]))
    assert upload_key(form("b", [("model", None, b"other"), ("file", "a.wav", AUDIO)])) != one
    assert upload_key(form("b", [("model", None, b"whisper"), ("file", "b.wav", AUDIO)])) != one
    assert upload_key(form("b", [("model", None, b"whisper"), ("file", "a.wav", AUDIO[:-1] + b"\x00")])) != one


def test_an_uploads_ignored_fields_do_not_count():
    rules = KeyRules(ignore_fields=("prompt",))
    one = upload_key(form("b", [("prompt", None, b"hello"), ("file", "a.wav", AUDIO)]), rules=rules)
    assert upload_key(form("c", [("prompt", None, b"bye"), ("file", "a.wav", AUDIO)]), rules=rules) == one


def test_other_multipart_is_matched_with_its_boundary_set_aside():
    def mixed(boundary: str) -> tuple[bytes, str]:
        body = f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n".encode()
        return body, f"multipart/mixed; boundary={boundary}"

    assert upload_key(mixed("one")) == upload_key(mixed("two"))
    assert body_fingerprint(*mixed("one"), KeyRules()).count(b"BOUNDARY") == 2


def test_a_broken_form_is_matched_with_its_boundary_set_aside():
    body = b"--xyz\r\nno headers, no end"
    assert key(body, content_type="multipart/form-data; boundary=xyz") == key(
        body.replace(b"xyz", b"abc"), content_type="multipart/form-data; boundary=abc"
    )


def test_binary_bodies_are_matched_byte_for_byte():
    octets = "application/octet-stream"
    assert key(AUDIO, content_type=octets) == key(AUDIO, content_type=octets)
    assert key(AUDIO, content_type=octets) != key(AUDIO[1:], content_type=octets)
    assert body_fingerprint(AUDIO, octets, KeyRules()) == AUDIO


def test_an_empty_body_has_a_key_of_its_own():
    assert key(b"") == key(b"") != key(b"{}")


# --- a live request and its recording ------------------------------------------------------------


def test_a_recording_read_back_has_the_key_the_live_request_had():
    rules = KeyRules(ignore_fields=("user",))
    interaction = chat({"messages": [{"role": "user", "content": "hi"}], "user": "x", "temperature": 0.5})
    live = request_key("POST", CHAT, interaction.query, interaction.request_body, interaction.content_type, rules)
    document = load_document(dump_document(interaction))
    assert Interaction.from_document(document).key(rules) == live
    assert key_of_request_part(document["request"], rules, RecordingStore(".").table) == live


def test_variants_of_a_path_share_a_key_as_their_route_spells_it():
    store = RecordingStore(".")
    rules = store.rules
    assert chat({"a": 1}, path=CHAT + "/").key(rules) == chat({"a": 1}).key(rules)
    assert chat({"a": 1}, path=CHAT).key(rules) != chat({"a": 1}, path=CHAT.replace("gpt-4o", "other")).key(rules)


# --- the miss path --------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    store = RecordingStore(tmp_path)
    for body in ({"messages": [], "temperature": 0}, {"messages": [], "temperature": 0, "n": 2}):
        store.add(chat(body), autosave=True)
    store.add(chat({"input": "x"}, path="/openai/deployments/emb/embeddings"), autosave=True)
    return store


def test_a_request_never_recorded_finds_nothing(store):
    assert store.find(chat({"messages": [], "temperature": 1}).key(store.rules)) is None
    assert store.next_ref("POST /nowhere 0") is None


def test_a_miss_names_the_closest_recording_on_the_same_path_and_the_fields_that_differ(store):
    found = store.closest("POST", CHAT + "?api-version=2024-10-21", b'{"messages": [], "temperature": 1}')
    assert found is not None
    other, fields = found
    assert other.path == CHAT and json.loads(other.request_body) == {"messages": [], "temperature": 0}
    assert fields == ["temperature"]


def test_a_miss_on_a_path_never_recorded_names_one_of_the_same_method(store):
    found = store.closest("POST", "/openai/deployments/gpt-4o/completions", b'{"messages": []}')
    assert found is not None and found[0].path != "/openai/deployments/gpt-4o/completions"
    assert store.closest("DELETE", CHAT, b"") is None


def test_a_miss_does_not_report_ignored_fields(tmp_path):
    store = RecordingStore(tmp_path, KeyRules(ignore_fields=("user",)))
    store.add(chat({"messages": [], "user": "a", "temperature": 0}), autosave=True)
    _, fields = store.closest("POST", CHAT, b'{"messages": [], "user": "b", "temperature": 1}')
    assert fields == ["temperature"]


def test_fields_that_differ_between_bodies():
    rules = KeyRules(ignore_fields=("seed",))
    assert differing_fields({"a": 1, "b": 2, "seed": 1}, {"a": 1, "b": 3, "c": 0, "seed": 2}, rules) == ["b", "c"]
    assert differing_fields(b"raw", {"a": 1}, rules) == ["body"]
    assert differing_fields(b"raw", b"raw", rules) == []
    assert differing_fields(None, None, rules) == []


def test_repeated_requests_replay_in_recorded_order_then_the_last_again(tmp_path):
    store = RecordingStore(tmp_path)
    request = chat({"messages": []})
    for answer in (b'{"n": 1}', b'{"n": 2}'):
        request.response_body = answer
        store.add(Interaction(**{**request.__dict__, "known_key": None}), autosave=True)
    fresh = RecordingStore(tmp_path)
    fresh.load()
    key = request.key(fresh.rules)
    assert [json.loads(fresh.find(key).response_body)["n"] for _ in range(4)] == [1, 2, 2, 2]
