"""The Files API through the whole stack: uploads, lists, contents and deletions kept in the
data folder, Azure's 200 (v1) and 201 + Location (dated) answers, and its errors."""

from __future__ import annotations

from pathlib import Path

DATED = "/openai/files"
V = "?api-version=2024-10-21"
V1 = "/openai/v1/files"
BOUNDARY = "b0undary"


def multipart(
    fields: dict[str, str], data: bytes = b'{"custom_id":"t"}\n', filename: str = "in.jsonl"
) -> tuple[bytes, dict]:
    parts = []
    for name, value in fields.items():
        parts.append(f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="file"; filename="{filename}"\r\n'
        "content-type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def upload(stack, path: str, fields: dict[str, str], data: bytes = b'{"custom_id":"t"}\n'):
    body, headers = multipart(fields, data)
    return stack.post(path, content=body, headers=headers)


def test_upload_list_retrieve_content_delete(stack_factory):
    stack = stack_factory()
    r = upload(stack, V1, {"purpose": "batch"})
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["object"] == "file" and made["status"] == "processed" and made["bytes"] == 18
    r = upload(
        stack, DATED + V, {"purpose": "batch", "expires_after.seconds": "1209600", "expires_after.anchor": "created_at"}
    )
    assert r.status_code == 201
    dated = r.json()
    assert r.headers["location"].endswith(f"/openai/files/{dated['id']}?api-version=2024-10-21")
    assert dated["expires_at"] == dated["created_at"] + 1_209_600
    listed = stack.get(V1 + "?order=asc").json()
    assert [f["id"] for f in listed["data"]] == [made["id"], dated["id"]] and listed["has_more"] is False
    page = stack.get(DATED + V + "&limit=1").json()
    assert [f["id"] for f in page["data"]] == [dated["id"]] and page["has_more"] is True
    assert stack.get(f"{DATED}/{made['id']}{V}").json() == made
    r = stack.get(f"{V1}/{made['id']}/content")
    assert r.status_code == 200 and r.content == b'{"custom_id":"t"}\n'
    assert r.headers["content-type"] == "application/octet-stream"
    r = stack.delete(f"{V1}/{made['id']}")
    assert r.json() == {"id": made["id"], "object": "file", "deleted": True}
    r = stack.get(f"{V1}/{made['id']}")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    assert stack.delete(f"{V1}/{made['id']}").status_code == 404
    assert stack.get(f"{V1}/{made['id']}/content").status_code == 404
    assert (Path.cwd() / "simulator-data" / "data.sqlite3").exists()  # beside the recordings


def test_azure_refusals(stack_factory):
    stack = stack_factory()
    r = upload(stack, V1, {"purpose": "user_data"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = upload(stack, V1, {"purpose": "batch", "expires_after[seconds]": "60"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "expires_after.seconds"
    assert stack.post(V1, content=b"{}", headers={"content-type": "application/json"}).status_code == 400
    assert stack.get(DATED).status_code == 404  # no api-version
    assert stack.get(DATED + "?api-version=2024-06-01").status_code == 400  # before the Files API
    assert stack.get(V1 + "?limit=0").status_code == 400


def test_file_counts_and_bytes_are_bounded(stack_factory):
    stack = stack_factory({"SIMULATOR_DATA_MAX_BYTES": "30"})
    assert upload(stack, V1, {"purpose": "batch"}).status_code == 200
    r = upload(stack, V1, {"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "quotaExceeded"
    from aoai.stages.batches import Batches

    services_data = stack.addon(Batches).services.data
    services_data.max_files = 1
    services_data.max_bytes = 10_000
    r = upload(stack, V1, {"purpose": "batch"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "The quota for files without expiry is reached. The maximum is 1."


def test_a_body_past_the_upload_limit_gets_413_before_it_is_read(stack_factory):
    stack = stack_factory()
    r = stack.post(
        V1,
        content=b"",
        headers={"content-length": str(201 * 1024 * 1024 + 1), "content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413


def test_files_survive_a_restart_and_are_shared(stack_factory, tmp_path):
    env = {"SIMULATOR_DATA_DIR": str(tmp_path / "shared-data")}
    one, two = stack_factory(env), stack_factory(env)
    made = upload(one, V1, {"purpose": "batch"}).json()
    assert two.get(f"{V1}/{made['id']}").json() == made


def test_replay_mode_answers_from_the_data_folder(stack_factory):
    stack = stack_factory({"SIMULATOR_MODE": "replay"})
    made = upload(stack, V1, {"purpose": "batch"})
    assert made.status_code == 200, made.text
    assert stack.get(f"{V1}/{made.json()['id']}").status_code == 200


def test_the_file_counts_are_settings(stack_factory):
    stack = stack_factory({"FILES_MAX_WITHOUT_EXPIRY": "2", "FILES_MAX": "3"})
    assert upload(stack, V1, {"purpose": "batch"}).status_code == 200
    assert upload(stack, V1, {"purpose": "batch"}).status_code == 200
    r = upload(stack, V1, {"purpose": "batch"})
    assert r.status_code == 400 and "maximum is 2" in r.json()["error"]["message"]
    expiring = {"purpose": "batch", "expires_after[seconds]": "1209600", "expires_after[anchor]": "created_at"}
    assert upload(stack, V1, expiring).status_code == 200
    r = upload(stack, V1, expiring)
    assert r.status_code == 400 and "maximum is 3" in r.json()["error"]["message"]
