"""Recording files that are hand-broken, torn by a crash, or cannot be written."""

import logging

import pytest
from aoai.runtime.recording import BrokenRecording, Interaction, RecordingStore, dump_document


def interaction(user: str) -> Interaction:
    return Interaction("POST", "/openai/deployments/gpt-4o/chat/completions", [("api-version", "2024-10-21")],
                       {"content-type": "application/json"}, b'{"messages": [], "user": "%s"}' % user.encode(),
                       200, {"content-type": "application/json"}, b'{"id": "x"}')


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
