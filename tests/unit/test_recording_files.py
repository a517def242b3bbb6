"""Recording files that are hand-broken, torn by a crash, or cannot be written; recordings of large
bodies, written and read without holding the event loop or memory."""

import asyncio
import base64
import json
import logging
import os
import threading
import weakref

import pytest
import yaml
from mitmproxy.test import tflow
from unit_support import VERSION, chat_path, make_config, make_flow

from aoai.openai import forms
from aoai.runtime import recording
from aoai.runtime.recording import BrokenRecording, Interaction, RecordingStore, dump_document, persistence
from aoai.runtime.routes import TABLE
from aoai.runtime.state import context_of
from aoai.runtime.streams import StreamServer
from aoai.stages import routing
from aoai.stages.record import Record
from aoai.stages.replay import Replay


def interaction(user: str) -> Interaction:
    return Interaction(
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        [("api-version", "2024-10-21")],
        {"content-type": "application/json"},
        b'{"messages": [], "user": "%s"}' % user.encode(),
        200,
        {"content-type": "application/json"},
        b'{"id": "x"}',
    )


def write(folder, *documents: bytes) -> None:
    (folder / "gpt-4o.chat-completions.yaml").write_bytes(b"".join(documents))


BROKEN = b"---\nrequest:\n  method: POST\n  path: [unclosed\nresponse:\n  status: 200\n"


def test_a_broken_document_before_the_last_stops_loading_naming_file_and_line(tmp_path):
    write(tmp_path, dump_document(interaction("a")), BROKEN, dump_document(interaction("b")))
    store = RecordingStore(tmp_path)
    with pytest.raises(BrokenRecording) as caught:
        store.load()
    first_lines = dump_document(interaction("a")).count(b"\n")
    assert f"gpt-4o.chat-completions.yaml: line {first_lines + 1}: " in str(caught.value)
    assert "RECORDING_SKIP_BROKEN=true" in str(caught.value)


def test_skipping_broken_documents_keeps_the_others(tmp_path, caplog):
    write(tmp_path, dump_document(interaction("a")), BROKEN, dump_document(interaction("b")))
    store = RecordingStore(tmp_path)
    store.skip_broken = True
    with caplog.at_level(logging.WARNING):
        assert store.load() == 2
    assert "skipped a recorded interaction that does not parse" in caplog.text


def test_a_torn_last_document_is_skipped_as_a_crash_leaves_it(tmp_path, caplog):
    write(tmp_path, dump_document(interaction("a")), BROKEN)  # the kill came while it was written
    with caplog.at_level(logging.WARNING):
        assert RecordingStore(tmp_path).load() == 1
    assert "skipped a recorded interaction that does not parse" in caplog.text


def test_a_file_that_cannot_be_written_is_said_once_and_costs_nothing_else(tmp_path, caplog):
    store = RecordingStore(tmp_path)
    (tmp_path / "gpt-4o.chat-completions.yaml").mkdir()  # where the file should be: every write fails
    with caplog.at_level(logging.INFO, logger="aoai"):
        assert store.add(interaction("a"), autosave=True) is False
        assert store.add(interaction("b"), autosave=True) is False
    assert caplog.text.count("cannot write recordings to") == 1
    (tmp_path / "gpt-4o.chat-completions.yaml").rmdir()
    with caplog.at_level(logging.INFO, logger="aoai"):
        assert store.add(interaction("c"), autosave=True) is True
    assert "writing recordings to" in caplog.text
    assert RecordingStore(tmp_path).load() == 1


# --- large bodies ------------------------------------------------------------------------------


def upload(n: int, size: int = 3 * 1024 * 1024) -> Interaction:
    """A transcription of `size` bytes of audio (binary: base64 in its document)."""
    audio = bytes([n]) * 8 + os.urandom(size)
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + audio + b"\r\n--b--\r\n"
    return Interaction(
        "POST",
        "/openai/deployments/whisper/audio/transcriptions",
        [("api-version", "2024-10-21")],
        {"content-type": "multipart/form-data; boundary=b"},
        body,
        200,
        {"content-type": "application/json"},
        b'{"text": "hello"}',
    )


def test_the_yaml_emitter_never_sees_a_long_value(monkeypatch):
    # libyaml's emitter held the GIL ~7 ms a MiB of one value: such values are written by hand.
    emitted = []
    dump = yaml.dump
    monkeypatch.setattr(yaml, "dump", lambda doc, **kw: emitted.append(doc) or dump(doc, **kw))
    image = "data:image/png;base64," + base64.b64encode(os.urandom(200_000)).decode()
    responses = Interaction(
        "POST",
        "/openai/v1/responses",
        [],
        {"content-type": "application/json"},
        json.dumps({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": image}]}]}).encode(),
        200,
        {"content-type": "application/json"},
        b'{"id": "resp_1"}',
    )
    for interaction in (upload(1), responses):
        document = dump_document(interaction)
        assert max(_longest_string(doc) for doc in emitted) < recording.LARGE_SCALAR_CHARS
        back = Interaction.from_document(recording._load_plain(document))
        assert back.request_body == interaction.request_body or json.loads(back.request_body) == json.loads(
            interaction.request_body
        )


def _longest_string(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((_longest_string(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest_string(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize(
    "text",
    [
        "x" * 70_000 + '"quoted" and \\ back',  # needs escapes: the emitter writes it
        "line one\nline two\t" * 5_000,
        "é" * 70_000,  # not ASCII: the emitter writes it
        "plain " * 20_000,  # spaces only: written by hand on one line
        "LARGE-SCALAR-" + "0" * 70_000,  # looks like a placeholder, is text
    ],
)
def test_long_values_of_every_kind_read_back_as_they_were(text):
    body = json.dumps({"messages": [{"role": "user", "content": text}], "list": [text, "short"]}).encode()
    interaction = Interaction(
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        [],
        {"content-type": "application/json"},
        body,
        200,
        {"content-type": "text/plain"},
        text.encode(),
    )
    back = Interaction.from_document(recording._load_plain(dump_document(interaction)))
    assert json.loads(back.request_body) == json.loads(body) and back.response_body == text.encode()


def test_large_and_small_recordings_saved_together_each_read_back_from_where_it_was_written(tmp_path):
    store = RecordingStore(tmp_path)
    batch = [
        ("whisper.audio-transcriptions.yaml", upload(n, 300_000 + n) if n % 3 == 0 else interaction(str(n)))
        for n in range(12)
    ]
    batch = [(store.file_for(i.method, i.path), i) for _, i in batch]
    kept = [i for _, i in batch]
    assert store.save(batch) == 12 and batch == []  # each let go once written
    fresh = RecordingStore(tmp_path)
    assert fresh.load() == 12
    for original in kept:
        (ref,) = fresh.index[original.key(fresh.rules)]
        body = fresh.get(ref).request_body
        assert (
            body == original.request_body
            if b"form-data" in body
            else json.loads(body) == json.loads(original.request_body)
        )


def test_a_large_upload_just_written_is_not_kept_parsed_in_memory(tmp_path):
    store = RecordingStore(tmp_path)
    large = upload(1)
    store.add(large, autosave=True)
    store.add(interaction("small"), autosave=True)
    refs = {ref.length > recording.REMEMBER_WRITTEN_BYTES: ref for refs in store.index.values() for ref in refs}
    assert store.parsed(refs[False]) and not store.parsed(refs[True])
    assert store.usage()["cache"]["count"] == 1
    assert store.get(refs[True]).request_body == large.request_body  # read back from its file when asked


def test_saving_lets_each_recording_go_once_written(tmp_path, monkeypatch):
    store = RecordingStore(tmp_path)
    uploads = [upload(n, 2 * 1024 * 1024) for n in range(3)]
    alive = [weakref.ref(i) for i in uploads]
    seen = []
    pieces = recording.document_pieces

    def watched(interaction):
        seen.append([ref() is not None for ref in alive])
        return pieces(interaction)

    monkeypatch.setattr(persistence, "document_pieces", watched)
    batch = [(store.file_for(i.method, i.path), i) for i in uploads]
    del uploads
    assert store.save(batch) == 3
    assert seen[-1] == [False, False, True]  # the first two were written and let go before the last


def test_a_key_worked_out_before_is_not_worked_out_again(monkeypatch):
    one = upload(1)
    rules = recording.KeyRules()
    key = one.key(rules)
    one.known_key = (rules, TABLE, key)
    parsed = []
    parse = forms.parse
    monkeypatch.setattr(forms, "parse", lambda *a: parsed.append(1) or parse(*a))
    assert one.key(rules) == key and parsed == []
    one.key(recording.KeyRules(ignore_fields=("user",)))  # other rules: worked out again
    assert parsed == [1]


def test_an_uploads_key_is_the_same_from_its_parsed_form():
    one = upload(1)
    rules = recording.KeyRules()
    form = forms.parse(one.request_body, one.content_type)
    assert recording.request_key(
        "POST", one.path, one.query, one.request_body, one.content_type, rules, form
    ) == one.key(rules)


# --- replaying and recording large requests ------------------------------------------------------


def recorded(tmp_path, body: bytes, answer: bytes) -> RecordingStore:
    request = Interaction(
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        [("api-version", VERSION)],
        {"content-type": "application/json"},
        body,
        200,
        {"content-type": "application/json"},
        answer,
    )
    (tmp_path / "gpt-4o.chat-completions.yaml").write_bytes(dump_document(request))
    store = RecordingStore(tmp_path)
    store.load()
    return store


def replayed(store: RecordingStore, body: bytes, threads: list):
    config = make_config(mode="replay")
    flow = make_flow(path=chat_path(), raw=body, headers={"content-type": "application/json"})
    routing.resolve(flow, config)
    get = store.get
    store.get = lambda ref: threads.append(threading.current_thread()) or get(ref)
    pending = Replay(config, store, StreamServer()).request(flow)
    return flow, pending


def test_a_large_request_is_looked_up_in_a_worker_thread(tmp_path):
    body = json.dumps({"messages": [{"role": "user", "content": "word " * 40_000}]}).encode()
    store, threads = recorded(tmp_path, body, b'{"answer": 1}'), []
    flow, pending = replayed(store, body, threads)
    assert pending is not None and flow.response is None  # its key (sorted JSON) is worked out off the loop
    asyncio.run(pending)
    assert flow.response.status_code == 200 and json.loads(flow.response.content) == {"answer": 1}
    assert threads and threads[0] is not threading.main_thread()
    assert context_of(flow).recording_key == next(iter(store.index))


def test_a_large_recording_not_in_memory_is_read_in_a_worker_thread(tmp_path):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    answer = json.dumps({"text": "x" * 200_000}).encode()
    store, threads = recorded(tmp_path, body, answer), []
    flow, pending = replayed(store, body, threads)
    assert pending is not None
    asyncio.run(pending)
    assert json.loads(flow.response.content) == json.loads(answer)
    assert threads[0] is not threading.main_thread()
    flow, pending = replayed(store, body, threads)  # parsed now: answered at once
    assert pending is None and flow.response.status_code == 200


def test_a_small_request_is_answered_where_it_is(tmp_path):
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    store, threads = recorded(tmp_path, body, b'{"answer": 1}'), []
    flow, pending = replayed(store, body, threads)
    assert pending is None and flow.response.status_code == 200 and threads == [threading.main_thread()]


def test_a_recorded_exchange_carries_the_key_the_replay_stage_worked_out(tmp_path):
    config = make_config(mode="record")
    config.recording.autosave = False
    store = RecordingStore(tmp_path)
    stage = Record(config, store)
    flow = tflow.tflow(resp=True)
    stage._save(flow.request, 200, [], b"{}", None, flow.request.timestamp_start + 1, "POST /x 0123")
    ((_, saved),) = store.pending
    assert saved.key(store.rules, store.table) == "POST /x 0123"


def test_record_mode_makes_its_upstream_client_at_start():
    for mode, made in (("record", True), ("generate", False)):
        stage = Record(
            make_config(mode=mode, azure_openai_endpoint="https://example.openai.azure.com"), RecordingStore("unused")
        )
        stage.running()
        assert (stage.upstream._client is not None) is made


def test_the_form_the_checks_read_gives_the_key_only_for_the_bytes_it_was_read_from(tmp_path, monkeypatch):
    from aoai.stages.replay import key_of

    one = upload(1)
    config = make_config(mode="record")
    flow = make_flow(
        "POST",
        "/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21",
        raw=one.request_body,
        headers={"content-type": one.content_type},
    )
    routing.resolve(flow, config)
    context_of(flow).form = forms.parse(flow.request.content, one.content_type)
    store = RecordingStore(tmp_path)
    expected = one.key(store.rules)
    parsed = []
    parse = forms.parse
    monkeypatch.setattr(forms, "parse", lambda *a: parsed.append(1) or parse(*a))
    assert key_of(flow, store) == expected and parsed == []  # not read again
    flow.request.content = one.request_body.replace(b"a.wav", b"b.wav")  # an extension changed it
    assert key_of(flow, store) != expected and parsed == [1]


def test_with_autosave_a_large_exchange_is_written_from_a_worker_thread_a_small_one_at_once(tmp_path):
    config = make_config(mode="record")
    store = RecordingStore(tmp_path)
    stage = Record(config, store)
    writers = []
    append = store._append
    store._append = lambda file, interactions: writers.append(threading.current_thread()) or append(file, interactions)

    async def main():
        flow = tflow.tflow(resp=True)
        stage._save(flow.request, 200, [], b'{"small": true}', None, flow.request.timestamp_start + 1)
        assert writers == [threading.main_thread()]  # written before the answer leaves, as before
        answer = json.dumps({"data": [[0.5] * 1536 for _ in range(20)]}).encode()  # 3 MB of YAML
        stage._save(flow.request, 200, [], answer, None, flow.request.timestamp_start + 1)
        assert len(writers) == 1 and stage._saving
        await stage.done()

    asyncio.run(main())
    assert writers[1] is not threading.main_thread() and RecordingStore(tmp_path).load() == 2
