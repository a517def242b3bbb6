"""Recording files: what is written reads back the same, appends, broken documents, file
names and the cached index."""

import json
import logging
import pickle
import socket

import pytest
from mitmproxy import hooks
from unit_support import clear_settings_env, settings_context

from aoai.runtime import config as cfg
from aoai.runtime.recording import (
    BrokenRecording,
    Event,
    Interaction,
    KeyRules,
    RecordingStore,
    dump_document,
    file_name_for,
    persistence,
)

CHAT = "/openai/deployments/gpt-4o/chat/completions"
FILE = "gpt-4o.chat-completions.yaml"


def chat(n: int, **more) -> Interaction:
    fields = dict(
        method="POST",
        path=CHAT,
        query=[("api-version", "2024-10-21")],
        request_headers={"content-type": "application/json", "user-agent": "test"},
        request_body=b'{"messages":[{"role":"user","content":"hi"}],"n":%d}' % n,
        status=200,
        response_headers={"content-type": "application/json", "x-request-id": f"r{n}"},
        response_body=b'{"id":"chatcmpl-%d","choices":[]}' % n,
        duration_ms=12.5,
        recorded_at="2025-01-01T00:00:00Z",
    )
    return Interaction(**{**fields, **more})


def kinds() -> list[Interaction]:
    """One of each kind of body a recording keeps."""
    return [
        chat(1),
        chat(2, response_body=b"plain text answer\nover two lines", response_headers={"content-type": "text/plain"}),
        chat(
            3,
            path="/openai/deployments/whisper/audio/transcriptions",
            request_headers={"content-type": "application/octet-stream"},
            request_body=bytes(range(256)),
        ),
        chat(
            4,
            response_body=b"",
            response_headers={"content-type": "text/event-stream"},
            events=[Event(0.0, {"choices": [{"delta": {"content": "h"}}]}), Event(15.5, "[DONE]")],
        ),
        chat(5, status=429, response_body=b'{"error":{"code":"429"}}'),
    ]


def loaded(folder, **settings) -> RecordingStore:
    store = RecordingStore(folder)
    for name, value in settings.items():
        setattr(store, name, value)
    store.load()
    return store


def everything(store: RecordingStore) -> list[Interaction]:
    return [store.get(ref) for refs in store.index.values() for ref in refs]


# --- round trips ---------------------------------------------------------------------------------


def test_what_is_written_reads_back_the_same(tmp_path):
    writer = RecordingStore(tmp_path)
    originals = kinds()
    for interaction in originals:
        assert writer.add(interaction, autosave=True)
    reader = loaded(tmp_path)
    assert reader.count == len(originals)
    for original in originals:
        assert reader.find(original.key(reader.rules)) == original


def test_recordings_kept_until_saved_read_back_the_same(tmp_path):
    writer = RecordingStore(tmp_path)
    originals = kinds()
    for interaction in originals:
        writer.add(interaction, autosave=False)
    assert not list(tmp_path.glob("*.yaml"))
    assert writer.save() == len(originals)
    order = lambda i: (i.path, i.request_body)  # noqa: E731
    assert sorted(everything(loaded(tmp_path)), key=order) == sorted(originals, key=order)


def test_a_document_reads_back_the_same_without_a_store():
    for original in kinds():
        assert Interaction.from_document(persistence.load_document(dump_document(original))) == original


def test_secrets_never_reach_a_file(tmp_path):
    store = RecordingStore(tmp_path)
    store.add(chat(1, query=[("api-version", "v"), ("api-key", "s3cret-in-query")]), autosave=True)
    text = (tmp_path / FILE).read_text()
    assert "s3cret-in-query" not in text and "api-version: v" in text


def test_json_bodies_are_written_as_yaml_structure(tmp_path):
    RecordingStore(tmp_path).add(chat(7), autosave=True)
    text = (tmp_path / FILE).read_text()
    assert "body:\n    messages:\n    - role: user\n      content: hi\n    n: 7\n" in text


# --- appending -----------------------------------------------------------------------------------


def test_recordings_are_appended_to_a_file_that_is_there(tmp_path):
    first = dump_document(chat(1))
    (tmp_path / FILE).write_bytes(first)
    store = loaded(tmp_path)
    store.add(chat(2), autosave=True)
    data = (tmp_path / FILE).read_bytes()
    assert data.startswith(first) and data[len(first) :] == dump_document(chat(2))
    assert [json.loads(i.request_body)["n"] for i in everything(loaded(tmp_path))] == [1, 2]


def test_an_appended_recording_is_found_where_it_was_written(tmp_path):
    store = RecordingStore(tmp_path)
    store.add(chat(1), autosave=True)
    store.add(chat(2), autosave=True)
    (ref,) = store.index[chat(2).key(store.rules)]
    assert ref.offset == len(dump_document(chat(1))) and ref.length == len(dump_document(chat(2)))
    store._cache.clear()  # read from the file, not the copy kept on writing
    assert store.get(ref) == chat(2)


# --- broken files --------------------------------------------------------------------------------

BROKEN = b"---\nrequest:\n  method: POST\n  path: [unclosed\nresponse:\n  status: 200\n"


def write(folder, *documents: bytes) -> None:
    (folder / FILE).write_bytes(b"".join(documents))


def test_a_broken_document_in_the_middle_stops_loading_naming_file_and_line(tmp_path):
    write(tmp_path, dump_document(chat(1)), BROKEN, dump_document(chat(2)))
    with pytest.raises(BrokenRecording) as caught:
        loaded(tmp_path)
    line = dump_document(chat(1)).count(b"\n") + 1
    assert str(caught.value).startswith(f"{tmp_path / FILE}: line {line}: a recorded interaction does not parse (")
    assert str(caught.value).endswith("fix it, or set RECORDING_SKIP_BROKEN=true to skip such documents")


def test_skip_broken_skips_one_in_the_middle_with_a_warning(tmp_path, caplog):
    write(tmp_path, dump_document(chat(1)), BROKEN, dump_document(chat(2)))
    with caplog.at_level(logging.WARNING):
        assert loaded(tmp_path, skip_broken=True).count == 2
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped a recorded interaction that does not parse" in warning
    assert "cut it off" not in warning  # not the last: a bad edit, not a crash


def cut(document: bytes, keep: float = 0.6) -> bytes:
    """A document as a crash leaves it: cut off mid-line while it was written."""
    torn = document[: int(len(document) * keep)]
    assert not torn.endswith(b"\n")
    return torn


def test_a_broken_last_document_is_skipped_with_a_warning_as_a_crash_leaves_it(tmp_path, caplog):
    write(tmp_path, dump_document(chat(1)), cut(dump_document(chat(2))))
    with caplog.at_level(logging.WARNING):
        store = loaded(tmp_path)  # skip_broken is off: the start goes on all the same
    assert store.count == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    line = dump_document(chat(1)).count(b"\n") + 1
    assert warning.startswith(f"{tmp_path / FILE}: line {line}: skipped a recorded interaction that does not parse")
    assert warning.endswith("a crash may have cut it off while it was written")


def test_a_recording_appended_after_a_cut_off_one_is_kept_and_the_cut_off_one_skipped_wherever_it_is(tmp_path, caplog):
    write(tmp_path, dump_document(chat(1)), cut(dump_document(chat(2))))
    store = loaded(tmp_path)
    store.add(chat(3), autosave=True)
    store.add(chat(4), autosave=True)
    data = (tmp_path / FILE).read_bytes()
    assert data.count(persistence.CUT_OFF) == 1  # the cut-off line is ended once, before the first append
    for index in (tmp_path / ".index").iterdir():
        index.unlink()  # as a fresh clone of the folder has it: every file indexed anew
    with caplog.at_level(logging.WARNING):
        fresh = loaded(tmp_path)
    assert [json.loads(i.request_body)["n"] for i in everything(fresh)] == [1, 3, 4]
    assert "a crash may have cut it off" in caplog.text


def test_a_file_that_ends_its_last_line_gets_no_mark(tmp_path):
    write(tmp_path, dump_document(chat(1)).rstrip(b"\n"))  # an editor that leaves no final line break
    RecordingStore(tmp_path).add(chat(2), autosave=True)
    assert persistence.CUT_OFF in (tmp_path / FILE).read_bytes()
    assert loaded(tmp_path).count == 2  # a comment: the document still reads as it was
    write(tmp_path, dump_document(chat(1)))
    RecordingStore(tmp_path).add(chat(2), autosave=True)
    assert persistence.CUT_OFF not in (tmp_path / FILE).read_bytes()


def test_empty_documents_and_a_file_without_a_leading_separator_load(tmp_path):
    write(tmp_path, dump_document(chat(1))[4:], b"---\n---\n\n", dump_document(chat(2)))
    assert loaded(tmp_path).count == 2


# --- file names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/openai/deployments/my-gpt/chat/completions", "my-gpt.chat-completions.yaml"),
        ("/openai/v1/responses", "v1.responses.yaml"),
        ("/formrecognizer/documentModels/prebuilt-read:analyze", "formrecognizer.prebuilt-read.yaml"),
        ("/somewhere/else/entirely/deep", "other.somewhere-else-entirely.yaml"),
        ("/", "other.root.yaml"),
        ("/openai/deployments/a b?c/chat/completions", "a_b_c.chat-completions.yaml"),
    ],
)
def test_a_path_no_route_names_gets_a_file_by_its_parts(path, name):
    assert file_name_for(path) == name


def test_a_file_suffix_goes_before_yaml_and_every_suffix_is_loaded(tmp_path):
    one, two = RecordingStore(tmp_path), RecordingStore(tmp_path)
    one.file_suffix, two.file_suffix = "replica-1", "replica-2"
    assert one.file_for("POST", CHAT) == "gpt-4o.chat-completions.replica-1.yaml"
    one.add(chat(1), autosave=True)
    two.add(chat(2), autosave=True)
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == [
        "gpt-4o.chat-completions.replica-1.yaml",
        "gpt-4o.chat-completions.replica-2.yaml",
    ]
    assert loaded(tmp_path).count == 2


def test_the_hostname_in_a_file_suffix_is_this_machines_name(monkeypatch, tmp_path):
    clear_settings_env(monkeypatch)
    monkeypatch.setattr(socket, "gethostname", lambda: "sim-host-7")
    monkeypatch.setenv("RECORDING_FILE_SUFFIX", "{hostname}")
    config = cfg.SimulatorConfig()
    tctx, _ = settings_context(config)
    with tctx:
        tctx.master.addons.trigger(hooks.ConfigureHook(set(tctx.options.keys())))
    assert config.recording.file_suffix == "sim-host-7"
    store = RecordingStore(tmp_path)
    store.file_suffix = config.recording.file_suffix
    store.add(chat(1), autosave=True)
    assert [p.name for p in tmp_path.glob("*.yaml")] == ["gpt-4o.chat-completions.sim-host-7.yaml"]


# --- the index -----------------------------------------------------------------------------------


@pytest.fixture
def builds(monkeypatch):
    """Each index build: (file name, byte it started from)."""
    seen = []
    build = persistence.build_index

    def watched(path, rules, table, skip_broken=False, start=0):
        seen.append((path.name, start))
        return build(path, rules, table, skip_broken, start)

    monkeypatch.setattr(persistence, "build_index", watched)
    return seen


def test_an_index_is_cached_beside_the_file_and_used_while_the_file_is_unchanged(tmp_path, builds):
    write(tmp_path, dump_document(chat(1)), dump_document(chat(2)))
    first = loaded(tmp_path)
    assert (tmp_path / ".index" / (FILE + ".idx")).is_file() and builds == [(FILE, 0)]
    second = loaded(tmp_path)
    assert builds == [(FILE, 0)] and second.index == first.index


def test_after_appends_only_what_was_appended_is_indexed(tmp_path, builds):
    write(tmp_path, dump_document(chat(1)))
    loaded(tmp_path).add(chat(2), autosave=True)
    store = loaded(tmp_path)
    size = len(dump_document(chat(1)))
    assert builds == [(FILE, 0), (FILE, size)] and store.count == 2


def test_saved_indexes_cover_what_was_appended(tmp_path, builds):
    write(tmp_path, dump_document(chat(1)))
    store = loaded(tmp_path)
    store.add(chat(2), autosave=True)
    store.save_indexes()
    assert loaded(tmp_path).count == 2 and builds == [(FILE, 0)]


def test_an_edited_file_is_indexed_anew(tmp_path, builds):
    write(tmp_path, dump_document(chat(1)), dump_document(chat(2)))
    loaded(tmp_path)
    write(tmp_path, dump_document(chat(3)), dump_document(chat(2)))
    store = loaded(tmp_path)
    assert builds == [(FILE, 0), (FILE, 0)] and store.find(chat(3).key(store.rules)) == chat(3)


def test_other_rules_index_the_file_anew(tmp_path, builds):
    write(tmp_path, dump_document(chat(1)))
    loaded(tmp_path)
    store = RecordingStore(tmp_path, KeyRules(ignore_fields=("n",)))
    store.load()
    assert builds == [(FILE, 0), (FILE, 0)] and store.find(chat(99).key(store.rules)) == chat(1)


@pytest.mark.parametrize(
    "cache",
    [
        b"",
        b"not a pickle",
        pickle.dumps("a string"),
        # A class this version does not have: pickled by name, as an older index would be.
        b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x0faoai.no.such.mod\x94\x8c\x01X\x94\x93\x94.",
    ],
)
def test_an_index_cache_that_cannot_be_read_is_built_anew(tmp_path, builds, cache):
    write(tmp_path, dump_document(chat(1)))
    (tmp_path / ".index").mkdir()
    (tmp_path / ".index" / (FILE + ".idx")).write_bytes(cache)
    assert loaded(tmp_path).count == 1 and builds == [(FILE, 0)]


def test_an_index_cache_that_cannot_be_written_costs_only_a_warning(tmp_path, caplog):
    write(tmp_path, dump_document(chat(1)))
    (tmp_path / ".index").write_text("a file where the folder would be")
    with caplog.at_level(logging.WARNING):
        assert loaded(tmp_path).count == 1
    assert f"cannot cache the index of {FILE}" in caplog.text


def test_only_yaml_files_are_recordings_and_a_missing_folder_holds_none(tmp_path):
    write(tmp_path, dump_document(chat(1)))
    (tmp_path / "notes.txt").write_bytes(dump_document(chat(2)))
    (tmp_path / "folder.yaml").mkdir()
    assert loaded(tmp_path).count == 1
    assert loaded(tmp_path / "missing").count == 0
