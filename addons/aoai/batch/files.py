"""Azure's Files API, apart from where files are kept: what an upload form must hold, how a
list is paged, and the bodies Azure answers with (file objects, lists, deletions, errors).

Uploads are multipart forms: `purpose`, `file`, and optionally `expires_after` with `seconds`
and `anchor`. Azure's own examples spell the nested names `expires_after.seconds`; the openai
SDK sends `expires_after[seconds]`: both are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..openai.forms import Form
from .store import FileRecord

MiB = 1024 * 1024
MAX_FILE_BYTES = 200 * MiB  # Azure's limit on one file; fixed, as Azure's is
FORM_OVERHEAD = MiB  # what the form around the file may add (boundaries, part heads, other fields)
MAX_UPLOAD_BODY = MAX_FILE_BYTES + FORM_OVERHEAD  # larger bodies get the 413 before they are read

# What an upload may name as its purpose (Azure's v1 spec); `user_data` is OpenAI's, not Azure's.
PURPOSES = ("assistants", "batch", "fine-tune", "evals")
EXPIRY_MIN_S, EXPIRY_MAX_S = 1_209_600, 2_592_000  # 14 to 30 days
ANCHOR = "created_at"  # the only anchor Azure takes

LIST_MAX, LIST_DEFAULT = 10_000, 10_000
ORDERS = ("asc", "desc")


class FileError(Exception):
    """What is wrong with a files request, as Azure's OpenAI-style error says it."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": self.code}
        }


@dataclass(frozen=True)
class UploadRequest:
    filename: str
    purpose: str
    data: bytes
    expires_after_s: int | None  # seconds after the upload; None: the file never expires

    def expires_at(self, created_at: int) -> int | None:
        return None if self.expires_after_s is None else created_at + self.expires_after_s


def not_found(file_id: str) -> FileError:
    return FileError(404, f"File with id '{file_id}' was not found.", param="file_id", code="fileNotFound")


def _nested(form: Form, outer: str, inner: str) -> str | None:
    """`outer[inner]` (the SDK's spelling) or `outer.inner` (Azure's examples)."""
    value = form.value(f"{outer}[{inner}]")
    return value if value is not None else form.value(f"{outer}.{inner}")


def check_upload(form: Form) -> UploadRequest:
    """The upload a form asks for; raises FileError with Azure's 400 (or 413) otherwise."""
    upload = form.file("file")
    if upload is None:
        raise FileError(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter")
    purpose = form.value("purpose")
    if purpose is None or purpose == "":
        raise FileError(400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    if purpose not in PURPOSES:
        raise FileError(
            400,
            f"Invalid value for purpose: '{purpose[:64]}'. Supported values are: "
            + ", ".join(f"'{p}'" for p in PURPOSES)
            + ".",
            "purpose",
            "invalid_value",
        )
    if len(upload.data) > MAX_FILE_BYTES:
        raise FileError(
            413,
            f"The file is {len(upload.data)} bytes; files may have at most {MAX_FILE_BYTES} bytes (200 MB).",
            "file",
            "file_too_large",
        )
    return UploadRequest(upload.filename or "file", purpose, upload.data, _expiry(form))


def _expiry(form: Form) -> int | None:
    seconds = _nested(form, "expires_after", "seconds")
    anchor = _nested(form, "expires_after", "anchor")
    if seconds is None:
        if anchor is not None:
            raise FileError(
                400,
                "Missing required parameter: 'expires_after.seconds'.",
                "expires_after.seconds",
                "missing_required_parameter",
            )
        return None
    if anchor is not None and anchor != ANCHOR:
        raise FileError(
            400,
            f"Invalid value for expires_after.anchor: '{anchor[:64]}'. The only supported value is '{ANCHOR}'.",
            "expires_after.anchor",
            "invalid_value",
        )
    try:
        value = int(seconds.strip())
    except ValueError:
        value = None
    if value is None or not EXPIRY_MIN_S <= value <= EXPIRY_MAX_S:
        raise FileError(
            400,
            f"Invalid value for expires_after.seconds: '{seconds[:64]}'. It must be an integer between "
            f"{EXPIRY_MIN_S} (14 days) and {EXPIRY_MAX_S} (30 days).",
            "expires_after.seconds",
            "invalid_value",
        )
    return value


@dataclass(frozen=True)
class ListQuery:
    purpose: str | None = None
    after: str | None = None
    limit: int = LIST_DEFAULT
    order: str = "desc"


def list_query(query: Mapping[str, str]) -> ListQuery:
    """The paging a list request asks for (`purpose`, `after`, `limit`, `order`); raises FileError."""
    limit = LIST_DEFAULT
    text = query.get("limit")
    if text is not None and text != "":
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= LIST_MAX:
            raise FileError(
                400,
                f"Invalid value for limit: '{text[:32]}'. It must be an integer between 1 and {LIST_MAX}.",
                "limit",
                "invalid_value",
            )
    order = (query.get("order") or "desc").lower()
    if order not in ORDERS:
        raise FileError(
            400,
            f"Invalid value for order: '{order[:32]}'. Supported values are: 'asc', 'desc'.",
            "order",
            "invalid_value",
        )
    return ListQuery(query.get("purpose") or None, query.get("after") or None, limit, order)


def list_body(records: list[FileRecord], has_more: bool) -> dict[str, Any]:
    data = [r.to_json() for r in records]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def deleted_body(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}
