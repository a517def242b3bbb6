"""The recording store with a cassette in: one file for every route, the folder's index kept
aside and back when it is taken out, and a recording that keeps the file chosen when its
request came (a switch meanwhile does not move it, nor index it in the new cassette)."""

from __future__ import annotations

import json

from aoai.runtime.recording import Interaction, RecordingStore

CHAT = "/openai/deployments/gpt-4o/chat/completions"
EMBED = "/openai/deployments/text-embedding-3-small/embeddings"


def interaction(path: str, user: str) -> Interaction:
    return Interaction(
        "POST",
        path,
        [("api-version", "2024-10-21")],
        {"content-type": "application/json"},
        b'{"input": "x", "user": "%s"}' % user.encode(),
        200,
        {"content-type": "application/json"},
        b'{"id": "%s"}' % user.encode(),
    )


def key(store: RecordingStore, item: Interaction) -> str:
    return item.key(store.rules, store.table)


def test_every_route_goes_to_the_cassette_and_the_folder_comes_back(tmp_path):
    folder = tmp_path / "recordings"
    store = RecordingStore(folder)
    home = interaction(CHAT, "home")
    store.add(home, autosave=True)
    cassette = tmp_path / "c" / "test.yaml"
    store.use_cassette(cassette, store.read_cassette(cassette))
    assert store.count == 0 and store.find(key(store, home)) is None
    store.add(interaction(CHAT, "a"), autosave=True)
    store.add(interaction(EMBED, "b"), autosave=True)
    assert store.count == 2 and store.file_for("POST", CHAT) == str(cassette)
    assert len(store.read_cassette(cassette)[key(store, interaction(EMBED, "b"))]) == 1
    assert [p.name for p in folder.glob("*.yaml")] == ["gpt-4o.chat-completions.yaml"]
    store.use_cassette(None)
    assert store.count == 1 and json.loads(store.find(key(store, home)).response_body) == {"id": "home"}


def test_a_recording_keeps_the_cassette_its_request_came_under(tmp_path):
    store = RecordingStore(tmp_path / "recordings")
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    store.use_cassette(first)
    chosen = store.file_for("POST", CHAT)  # the request came
    store.use_cassette(second)  # the next test's cassette went in before its answer ended
    late = interaction(CHAT, "late")
    store.add(late, autosave=False, file=chosen)
    assert store.save() == 1
    assert store.count == 0 and not second.exists()
    assert len(store.read_cassette(first)[key(store, late)]) == 1
    # Back to the folder: a cassette's recording is never indexed among its files.
    store.use_cassette(None)
    assert store.count == 0
