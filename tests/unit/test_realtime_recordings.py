"""Recorded realtime sessions: their document, the recording budget, and how client events match."""

from __future__ import annotations

import yaml

from aoai.runtime.recording.sessions import Budget, RecordedSession, SessionRecorder, SessionRecordings
from aoai.runtime.recording.sessions_replay import differences


def head() -> RecordedSession:
    return RecordedSession("gpt-realtime", "ga", "/openai/v1/realtime", {"model": "gpt-realtime", "api-key": "s3cret"})


def test_a_session_is_written_and_read_back_without_secrets(tmp_path):
    recorder = SessionRecorder(head(), started=100.0, budget=Budget(1 << 20))
    recorder.add(False, 100.2, b'{"type":"session.created","session":{"client_secret":{"value":"ek_1"}}}', True)
    recorder.add(True, 100.5, b'{"type":"response.create"}', True)
    recorder.add(True, 100.6, b"\x00\x01", False)
    recorder.add(True, 100.7, b"not json", True)
    store = SessionRecordings(tmp_path)
    ref = store.save(recorder.finish(101.0))
    recorder.release()
    assert ref is not None and ref.file == "gpt-realtime.realtime.yaml" and recorder.budget.used == 0
    text = (tmp_path / ref.file).read_text()
    assert "s3cret" not in text and "ek_1" not in text
    doc = yaml.safe_load(text)
    assert doc["realtime"]["query"] == {"model": "gpt-realtime"} and doc["realtime"]["duration_ms"] == 1000.0
    assert [e["at_ms"] for e in doc["events"]] == [200.0, 500.0, 600.0, 700.0]
    fresh = SessionRecordings(tmp_path)
    assert fresh.load() == 1 and fresh.deployments() == ["gpt-realtime"]
    (ref,) = fresh.refs("gpt-realtime", "ga")
    messages = fresh.get(ref).messages
    assert [m.side for m in messages] == ["server", "client", "client", "client"]
    assert messages[2].data == b"\x00\x01" and messages[3].data == "not json"


def test_past_the_budget_a_recording_is_cut_short():
    budget = Budget(300)
    recorder = SessionRecorder(head(), started=0.0, budget=budget)
    recorder.add(False, 0.1, b"{}" * 50, True)
    recorder.add(False, 0.2, b"{}" * 100, True)  # would pass 300 bytes
    recorder.add(False, 0.3, b"{}", True)
    assert recorder.head.cut_short and len(recorder.frames) == 1
    session = recorder.finish(1.0)
    recorder.release()
    assert session.to_document()["realtime"]["cut_short"] is True and budget.used == 0


def test_client_events_match_but_for_event_ids_and_audio_bytes():
    recorded = {"type": "input_audio_buffer.append", "event_id": "a", "audio": "AAAA"}
    assert differences(recorded, {**recorded, "event_id": "b", "audio": "BBBB"}) == []
    assert differences(recorded, {**recorded, "audio": "BBBBBBBB"}) == ["audio"]
    update = {"type": "session.update", "session": {"instructions": "be brief"}}
    assert differences(update, {"type": "session.update", "session": {"instructions": "be long"}}) == ["session"]
    assert differences(update, {**update, "note": 1}, ignore_fields=("note",)) == []
    assert differences("text", "text") == [] and differences("text", "other") == ["body"]
