"""Upload forms, list paging and the bodies of the Files API."""

from __future__ import annotations

import pytest

from aoai.batch import files
from aoai.openai.forms import Form, Upload


def form(fields: dict[str, str], data: bytes | None = b"{}\n") -> Form:
    made = Form(fields={k: [v] for k, v in fields.items()})
    if data is not None:
        made.files["file"] = [Upload("file", "in.jsonl", "application/octet-stream", data)]
    return made


@pytest.mark.parametrize("purpose", files.PURPOSES)
def test_azure_purposes_are_taken(purpose):
    upload = files.check_upload(form({"purpose": purpose}))
    assert upload.purpose == purpose and upload.filename == "in.jsonl" and upload.expires_after_s is None


@pytest.mark.parametrize("purpose", ["user_data", "vision", "batch_output", ""])
def test_other_purposes_are_refused(purpose):
    with pytest.raises(files.FileError) as e:
        files.check_upload(form({"purpose": purpose}))
    assert e.value.status == 400 and e.value.param == "purpose"


def test_a_file_and_a_purpose_are_required():
    with pytest.raises(files.FileError, match="'file'"):
        files.check_upload(form({"purpose": "batch"}, data=None))
    with pytest.raises(files.FileError, match="'purpose'"):
        files.check_upload(form({}))


@pytest.mark.parametrize("spelling", ["expires_after[{}]", "expires_after.{}"])
def test_expiry_in_either_spelling(spelling):
    upload = files.check_upload(
        form({"purpose": "batch", spelling.format("seconds"): "1209600", spelling.format("anchor"): "created_at"})
    )
    assert upload.expires_after_s == 1_209_600 and upload.expires_at(100) == 1_209_700


@pytest.mark.parametrize("seconds", ["1209599", "2592001", "ten", "-1"])
def test_expiry_outside_14_to_30_days_is_refused(seconds):
    with pytest.raises(files.FileError) as e:
        files.check_upload(form({"purpose": "batch", "expires_after[seconds]": seconds}))
    assert e.value.param == "expires_after.seconds" and "1209600" in e.value.message


def test_only_the_created_at_anchor():
    with pytest.raises(files.FileError, match="anchor"):
        files.check_upload(
            form({"purpose": "batch", "expires_after[seconds]": "1209600", "expires_after[anchor]": "x"})
        )
    with pytest.raises(files.FileError, match="seconds"):
        files.check_upload(form({"purpose": "batch", "expires_after[anchor]": "created_at"}))


def test_files_past_200_mb_are_refused(monkeypatch):
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 3)
    with pytest.raises(files.FileError) as e:
        files.check_upload(form({"purpose": "batch"}, b"1234"))
    assert e.value.status == 413


def test_list_paging():
    assert files.list_query({}) == files.ListQuery(None, None, 10_000, "desc")
    assert files.list_query({"limit": "5", "order": "asc", "after": "file-1", "purpose": "batch"}) == files.ListQuery(
        "batch", "file-1", 5, "asc"
    )
    for bad in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}, {"order": "up"}):
        with pytest.raises(files.FileError):
            files.list_query(bad)


def test_bodies():
    assert files.list_body([], False) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert files.deleted_body("file-1") == {"id": "file-1", "object": "file", "deleted": True}
    assert files.not_found("file-1").body()["error"]["type"] == "invalid_request_error"
