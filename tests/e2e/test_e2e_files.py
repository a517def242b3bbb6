"""The Files API end to end, through a real mitmdump with the openai SDK: upload, list,
retrieve, content and delete on the dated and the v1 paths, expiry, and Azure's limits."""

from __future__ import annotations

import openai
import pytest
from helpers import azure, v1

LINES = b'{"custom_id":"task-0","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o","messages":[]}}\n'


def test_upload_list_retrieve_content_delete_with_azure_openai(simulator):
    client = azure(simulator)
    made = client.files.create(file=("input.jsonl", LINES), purpose="batch")
    assert made.id.startswith("file-") and made.status == "processed" and made.bytes == len(LINES)
    assert made.filename == "input.jsonl" and made.purpose == "batch"
    assert client.files.retrieve(made.id).id == made.id
    assert made.id in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.content(made.id).content == LINES
    assert client.files.delete(made.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)


def test_a_large_file_downloads_whole_from_disk_on_both_paths(simulator):
    data = LINES * 40_000  # about 4 MB: sent from disk in pieces
    made = azure(simulator).files.create(file=("big.jsonl", data), purpose="batch")
    assert azure(simulator).files.content(made.id).content == data
    assert v1(simulator).files.content(made.id).content == data


def test_the_v1_client_sees_the_same_files_and_expiry(simulator):
    made = azure(simulator).files.create(file=("a.jsonl", LINES), purpose="batch")
    client = v1(simulator)
    assert client.files.retrieve(made.id).id == made.id
    expiring = client.files.create(
        file=("b.jsonl", LINES), purpose="batch", expires_after={"anchor": "created_at", "seconds": 1_209_600}
    )
    assert expiring.expires_at == expiring.created_at + 1_209_600
    page = client.files.list(limit=1, order="asc")
    assert len(page.data) == 1 and page.has_more
    assert [f.id for f in client.files.list(order="desc", limit=100)][:2] == [expiring.id, made.id]
    assert client.files.content(expiring.id).read() == LINES


def test_azure_refusals(simulator):
    client = v1(simulator)
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("a.jsonl", LINES), purpose="user_data")
    assert e.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError):
        client.files.create(
            file=("a.jsonl", LINES), purpose="batch", expires_after={"anchor": "created_at", "seconds": 60}
        )
    with pytest.raises(openai.NotFoundError):
        client.files.delete("file-00000000000000000000000000000000")


def test_the_data_folder_is_bounded_and_survives_a_restart(simulator_factory, tmp_path):
    env = {"SIMULATOR_DATA_DIR": str(tmp_path / "data"), "SIMULATOR_DATA_MAX_BYTES": str(len(LINES) * 2)}
    sim = simulator_factory(env)
    client = azure(sim)
    kept = client.files.create(file=("a.jsonl", LINES), purpose="batch")
    client.files.create(file=("b.jsonl", LINES), purpose="batch")
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("c.jsonl", LINES), purpose="batch")
    assert e.value.code == "quotaExceeded"
    sim.stop()
    again = simulator_factory(env)
    assert azure(again).files.retrieve(kept.id).filename == "a.jsonl"
