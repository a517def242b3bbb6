"""Record from a fake Azure on loopback through the in-process stack, then replay: a miss names
the closest recording, the miss status, identical requests in recorded order, an edited
recording, no upstream connection in replay, saving with autosave off, an Entra bearer passed
through. (Streams, the SDK, concurrency and kills: tests/e2e/test_e2e_record_replay.py.)"""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import API_VERSION
from fake_azure import UPSTREAM_KEY, FakeAzure, chat_body

MESSAGES = [{"role": "user", "content": "hello there"}]
CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"


def chat(sim, messages=MESSAGES, **body):
    """A chat completion as the openai SDK sends it (the model named in the body too)."""
    return sim.post(CHAT, json={"messages": messages, "model": "gpt-4o", **body})


def answer(sim, **body) -> str:
    r = chat(sim, **body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def record_env(upstream: FakeAzure, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "SIMULATOR_MODE": "record",
        "AZURE_OPENAI_ENDPOINT": upstream.url,
        "AZURE_OPENAI_KEY": UPSTREAM_KEY,
        "RECORDING_DIR": str(folder),
        **extra,
    }


def recorded_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


def test_replay_miss_names_the_closest_recording(stack_factory, tmp_path, caplog):
    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        sim = stack_factory(record_env(upstream, folder))
        answer(sim, max_tokens=10, temperature=0.2)
        sim.stop()
    sim = stack_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    r = chat(sim, max_tokens=10, temperature=0.7)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "RecordingNotFound"
    assert error["closest"]["differs"] == ["temperature"]
    assert error["file"].endswith("gpt-4o.chat-completions.yaml")
    assert "would be recorded in" in caplog.text
    # The proxy keeps serving after a miss, and JSON key order does not matter for a hit.
    body = (
        '{"model": "gpt-4o", "max_tokens": 10, "temperature": 0.2, '
        '"messages": [{"content": "hello there", "role": "user"}]}'
    )
    r = sim.post(
        "/openai/deployments/gpt-4o/chat/completions?api-version=2023-05-15",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text  # api-version is ignored by default


def test_miss_status_is_configurable(stack_factory, tmp_path):
    sim = stack_factory(
        {"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(tmp_path / "empty"), "REPLAY_MISS_STATUS": "501"}
    )
    r = sim.post(CHAT, json={"messages": MESSAGES})
    assert r.status_code == 501
    assert "Nothing like it is recorded" in r.json()["error"]["message"]


def test_identical_requests_replay_in_recorded_order_then_the_last(stack_factory, tmp_path):
    folder = tmp_path / "rec"
    doc = {
        "request": {
            "method": "POST",
            "path": "/openai/deployments/gpt-4o/chat/completions",
            "headers": {"content-type": "application/json"},
            "body": {"messages": MESSAGES, "model": "gpt-4o"},
        },
        "response": {"status": 200, "headers": {"content-type": "application/json"}, "duration_ms": 5},
    }
    docs = []
    for word in ("first", "second"):
        d = yaml.safe_load(yaml.safe_dump(doc))
        d["response"]["body"] = chat_body(word)
        docs.append(d)
    folder.mkdir()
    (folder / "gpt-4o.chat-completions.yaml").write_text(yaml.safe_dump_all(docs, explicit_start=True))
    sim = stack_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    assert [answer(sim) for _ in range(3)] == ["first", "second", "second"]


def test_an_edited_recording_changes_the_replayed_answer(stack_factory, tmp_path):
    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        sim = stack_factory(record_env(upstream, folder))
        original = answer(sim)
        sim.stop()
    path = folder / "gpt-4o.chat-completions.yaml"
    assert original in path.read_text()
    # Start once so the index is cached, then edit: the cache must notice.
    stack_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)}).stop()
    path.write_text(path.read_text().replace(original, "An edited answer."))
    sim = stack_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    assert answer(sim) == "An edited answer."


def test_replay_never_opens_an_upstream_connection(stack_factory, tmp_path):
    with FakeAzure() as upstream:
        sim = stack_factory(
            {
                "SIMULATOR_MODE": "replay",
                "RECORDING_DIR": str(tmp_path / "none"),
                "AZURE_OPENAI_ENDPOINT": upstream.url,
                "AZURE_OPENAI_KEY": UPSTREAM_KEY,
            }
        )
        assert chat(sim).status_code == 404
        assert sim.get("/some/other/path").status_code == 404
        assert upstream.requests == []


def test_autosave_off_saves_on_request_and_at_shutdown(stack_factory, tmp_path):
    folder = tmp_path / "rec"
    with FakeAzure() as upstream:
        sim = stack_factory(record_env(upstream, folder, RECORDING_AUTOSAVE="false"))
        answer(sim)
        assert recorded_files(folder) == []
        r = sim.post("/++/save-recordings")
        assert r.json() == {"saved": 1}
        answer(sim, messages=[{"role": "user", "content": "later"}])
        sim.stop()  # a clean shutdown saves the rest
    docs = list(yaml.safe_load_all((folder / "gpt-4o.chat-completions.yaml").read_text()))
    assert len(docs) == 2


def test_entra_bearer_passes_through_when_no_azure_key(stack_factory, tmp_path):
    with FakeAzure() as upstream:
        sim = stack_factory(
            {"SIMULATOR_MODE": "record", "AZURE_OPENAI_ENDPOINT": upstream.url, "RECORDING_DIR": str(tmp_path / "rec")}
        )
        r = sim.post(CHAT, json={"messages": MESSAGES}, headers={"authorization": "Bearer entra-token-123"}, key=None)
        # The fake Azure wants its api-key, so it refuses; what matters is what it was sent.
        assert r.status_code == 401
        assert upstream.requests[0]["headers"].get("authorization") == "Bearer entra-token-123"
        assert "api-key" not in {k.lower() for k in upstream.requests[0]["headers"]}


def test_files_and_batches_are_forwarded_when_recording_and_replayed_with_the_same_ids(stack_factory, tmp_path):
    from fake_azure import UPSTREAM_RESULTS
    from test_stack_files import upload

    folder = tmp_path / "rec"
    version = f"?api-version={API_VERSION}"

    def session(sim) -> list:
        made = upload(sim, f"/openai/files{version}", {"purpose": "batch"}).json()
        batch = sim.post(
            f"/openai/batches{version}",
            json={"input_file_id": made["id"], "endpoint": "/chat/completions", "completion_window": "24h"},
        ).json()
        polls = [sim.get(f"/openai/batches/{batch['id']}{version}").json()["status"] for _ in range(3)]
        content = sim.get(f"/openai/files/{batch['output_file_id']}/content{version}").content
        return [made["id"], batch["id"], polls, content]

    with FakeAzure() as upstream:
        recorded = session(stack_factory(record_env(upstream, folder)))
        assert recorded == [
            "file-upstream0001",
            "batch_upstream0001",
            ["in_progress", "completed", "completed"],
            UPSTREAM_RESULTS,
        ]
        forwarded = len(upstream.requests)
    sim = stack_factory({"SIMULATOR_MODE": "replay", "RECORDING_DIR": str(folder)})
    assert session(sim) == recorded  # the same ids, the same statuses in order, the same results
    assert forwarded == 6
