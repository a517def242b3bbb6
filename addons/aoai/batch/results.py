"""The batch object, the moves between its statuses, the create-body checks, and the lines of
its output and error files.

Every move returns a new dict (the stored one is never changed in place) and refuses a move
Azure does not make with `WrongMove`, a 409. Statuses: validating -> in_progress -> finalizing ->
completed; validating -> failed; in_progress -> expired; validating, in_progress or finalizing ->
cancelling -> cancelled.

Result lines: every answered request gives `{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error": null}`; a 200 goes to the output file, any other status to the error
file with the same shape (its `body` is the error body the online API would have sent). `error` is
set (and `response` null) only for a request that got no answer at all: the batch expired or was
cancelled before it ran. That is OpenAI's documented format; Azure's is unconfirmed, and it keeps
one shape for both files.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from ..openai.validation import Invalid
from .jsonl import ENDPOINTS

DAY = 86_400
COMPLETION_WINDOW = "24h"
STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Every spelling a batch's `endpoint` may take: Azure's dated examples and the SDK's /v1 ones.
ENDPOINT_CHOICES = ENDPOINTS + tuple("/v1" + e for e in ENDPOINTS)
# OpenAI's metadata bounds, which Azure's batch object shares.
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
# Azure: 14 to 30 days (batch-rest, output_expires_after).
OUTPUT_EXPIRY_MIN, OUTPUT_EXPIRY_MAX = 1_209_600, 2_592_000


class WrongMove(Invalid):
    """A status move Azure does not make (cancel of a completed batch, …): a 409 Conflict. Our
    choice of status and text: Azure's answer is undocumented."""

    def __init__(self, message: str):
        super().__init__(message, None, "invalid_request", 409)


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4()}"


def new_request_line_id() -> str:
    return f"batch_req_{os.urandom(16).hex()}"


def counts(total: int = 0, completed: int = 0, failed: int = 0) -> dict[str, int]:
    return {"total": total, "completed": completed, "failed": failed}


def is_terminal(batch: dict[str, Any]) -> bool:
    return batch["status"] in TERMINAL


# --- Create ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateBatch:
    """A create body that passed the checks: what `new_batch` takes."""

    input_file_id: str
    endpoint: str  # as the client spelt it; the batch echoes it
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: dict[str, Any] | None  # {"seconds": n, "anchor": "created_at"}


def _listed(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _invalid_value(value: Any, param: str, values: tuple[str, ...]) -> Invalid:
    # OpenAI's text for a value outside an enumeration, which Azure's validation sends too.
    return Invalid(f"Invalid value: '{value}'. Supported values are: {_listed(values)}.", param, "invalid_value")


def _required(name: str) -> Invalid:
    return Invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")


def check_create(body: Any) -> CreateBatch:
    """The checks of a batch create body, raising `Invalid` (400) with OpenAI-style texts (ours:
    Azure documents none for these). Whether the input file exists is the caller's check."""
    if not isinstance(body, dict):
        raise Invalid("Invalid type for request body: expected an object.", None, "invalid_type")
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise _required("input_file_id")
    endpoint = body.get("endpoint")
    if endpoint is None:
        raise _required("endpoint")
    if not isinstance(endpoint, str) or endpoint not in ENDPOINT_CHOICES:
        raise _invalid_value(endpoint, "endpoint", ENDPOINT_CHOICES)
    window = body.get("completion_window")
    if window is None:
        raise _required("completion_window")
    if window != COMPLETION_WINDOW:
        raise _invalid_value(window, "completion_window", (COMPLETION_WINDOW,))
    return CreateBatch(
        input_file_id,
        endpoint,
        COMPLETION_WINDOW,
        check_metadata(body.get("metadata")),
        check_output_expires_after(body.get("output_expires_after"), body.get("anchor")),
    )


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """At most 16 pairs of strings, keys up to 64 characters and values up to 512 (OpenAI's rules and
    its texts)."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise Invalid("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(metadata) > METADATA_PAIRS:
        raise Invalid(
            f"Invalid 'metadata': too many properties. Expected an object with at most {METADATA_PAIRS} "
            f"properties, but got an object with {len(metadata)} properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            raise Invalid(
                f"Invalid 'metadata': string too long. Expected a string with maximum length "
                f"{METADATA_KEY_CHARS}, but got a string with length {len(key)} instead.",
                "metadata",
                "string_above_max_length",
            )
        if not isinstance(value, str):
            raise Invalid(f"Invalid type for 'metadata.{key}': expected a string.", f"metadata.{key}", "invalid_type")
        if len(value) > METADATA_VALUE_CHARS:
            raise Invalid(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"{METADATA_VALUE_CHARS}, but got a string with length {len(value)} instead.",
                f"metadata.{key}",
                "string_above_max_length",
            )
    return dict(metadata)


def check_output_expires_after(value: Any, top_anchor: Any = None) -> dict[str, Any] | None:
    """`{seconds: 1,209,600–2,592,000, anchor: "created_at"}`. Azure's REST page puts `anchor` beside
    `output_expires_after` rather than in it: `top_anchor` takes that spelling. A missing anchor
    means created_at, the only one there is."""
    if value is None:
        return None
    param = "output_expires_after"
    if not isinstance(value, dict):
        raise Invalid(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    seconds = value.get("seconds")
    if seconds is None:
        raise _required(f"{param}.seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise Invalid(f"Invalid type for '{param}.seconds': expected an integer.", f"{param}.seconds", "invalid_type")
    if seconds < OUTPUT_EXPIRY_MIN:
        raise Invalid(
            f"Invalid '{param}.seconds': integer below minimum value. Expected a value >= {OUTPUT_EXPIRY_MIN}, "
            f"but got {seconds} instead.",
            f"{param}.seconds",
            "integer_below_min_value",
        )
    if seconds > OUTPUT_EXPIRY_MAX:
        raise Invalid(
            f"Invalid '{param}.seconds': integer above maximum value. Expected a value <= {OUTPUT_EXPIRY_MAX}, "
            f"but got {seconds} instead.",
            f"{param}.seconds",
            "integer_above_max_value",
        )
    anchor = value.get("anchor", top_anchor if top_anchor is not None else "created_at")
    if anchor != "created_at":
        raise _invalid_value(anchor, f"{param}.anchor", ("created_at",))
    return {"seconds": seconds, "anchor": "created_at"}


def new_batch(
    batch_id: str,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    output_expires_after: dict[str, Any] | None,
    created_at: int,
) -> dict[str, Any]:
    """A batch just created: `validating`, due 24 hours after `created_at`. `output_expires_after`
    is kept on the object only when given (the output files' expiry needs it)."""
    batch: dict[str, Any] = {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": completion_window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created_at,
        "in_progress_at": None,
        "expires_at": created_at + DAY,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": counts(),
        "metadata": metadata,
    }
    if output_expires_after is not None:
        batch["output_expires_after"] = dict(output_expires_after)
    return batch


def output_file_expires_at(batch: dict[str, Any], file_created_at: int) -> int | None:
    """When an output or error file of `batch` made at `file_created_at` expires (None: never)."""
    after = batch.get("output_expires_after")
    return file_created_at + int(after["seconds"]) if after else None


# --- Moves -------------------------------------------------------------------------------------


def _move(batch: dict[str, Any], sources: tuple[str, ...], status: str, now: int, **fields: Any) -> dict[str, Any]:
    if batch["status"] not in sources:
        raise WrongMove(f"Cannot move a batch with status '{batch['status']}' to '{status}'.")
    return {**batch, "status": status, f"{status}_at": now, **fields}


def to_in_progress(batch: dict[str, Any], now: int, total: int) -> dict[str, Any]:
    return _move(batch, ("validating",), "in_progress", now, request_counts=counts(total))


def to_finalizing(batch: dict[str, Any], now: int, request_counts: dict[str, int] | None = None) -> dict[str, Any]:
    return _move(
        batch, ("in_progress",), "finalizing", now, request_counts=dict(request_counts or batch["request_counts"])
    )


def to_completed(
    batch: dict[str, Any], now: int, output_file_id: str, error_file_id: str, request_counts: dict[str, int]
) -> dict[str, Any]:
    """Azure always names an error file, empty (0 bytes) when no request failed."""
    return _move(
        batch,
        ("finalizing",),
        "completed",
        now,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        request_counts=dict(request_counts),
    )


def to_failed(batch: dict[str, Any], now: int, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Validation failed (or the enqueued-token quota was full): `errors` become `errors.data`.
    From in_progress too (ours): a job whose input file vanished cannot go on; and from
    finalizing (ours): its results could not be stored (the data folder is full)."""
    return _move(
        batch,
        ("validating", "in_progress", "finalizing"),
        "failed",
        now,
        errors={"object": "list", "data": list(errors)},
    )


def to_cancelling(batch: dict[str, Any], now: int) -> dict[str, Any]:
    return _move(batch, ("validating", "in_progress", "finalizing"), "cancelling", now)


def to_cancelled(
    batch: dict[str, Any],
    now: int,
    output_file_id: str | None = None,
    error_file_id: str | None = None,
    request_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Work finished before the cancel is kept: the partial output and error files."""
    return _move(
        batch,
        ("cancelling",),
        "cancelled",
        now,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        request_counts=dict(request_counts or batch["request_counts"]),
    )


def to_expired(
    batch: dict[str, Any],
    now: int,
    output_file_id: str | None = None,
    error_file_id: str | None = None,
    request_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    return _move(
        batch,
        ("in_progress",),
        "expired",
        now,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        request_counts=dict(request_counts or batch["request_counts"]),
    )


def cancel(batch: dict[str, Any], now: int) -> dict[str, Any]:
    """What `POST …/batches/{id}/cancel` does: a running batch starts cancelling; one already
    cancelling or cancelled is answered as it is (a repeated cancel is harmless); a completed,
    failed or expired one is refused with a 409 (ours: Azure's answer is undocumented)."""
    if batch["status"] in ("cancelling", "cancelled"):
        return batch
    if batch["status"] in TERMINAL:
        raise WrongMove(f"Cannot cancel a batch with status '{batch['status']}'.")
    return to_cancelling(batch, now)


# --- Output and error files ----------------------------------------------------------------------


def result_line(custom_id: str, status_code: int, request_id: str, body: Any) -> dict[str, Any]:
    """One answered request: a 200 belongs in the output file, any other status in the error file."""
    return {
        "id": new_request_line_id(),
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }


def goes_to_error_file(line: dict[str, Any]) -> bool:
    response = line.get("response")
    return response is None or response.get("status_code") != 200


def unanswered_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A request that never ran: `response` null, `error` says why (error file)."""
    return {
        "id": new_request_line_id(),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


# OpenAI's codes and texts for requests a batch never ran; Azure's are unconfirmed.
BATCH_EXPIRED = ("batch_expired", "This request could not be executed before the completion window expired.")
BATCH_CANCELLED = ("batch_cancelled", "This request could not be executed because the batch was cancelled.")


def token_limit_exceeded(deployment: str, limit: int, enqueued: int, requested: int) -> dict[str, Any]:
    """The `errors.data` entry of a batch refused because its deployment's enqueued-token quota is
    full. The text follows OpenAI's (Azure's wording is unconfirmed), naming the deployment rather
    than an organization, and what is already enqueued."""
    message = (
        f"Enqueued token limit reached for {deployment}. Limit: {limit:,} enqueued tokens; "
        f"{enqueued:,} already enqueued and this batch needs {requested:,}. "
        "Please try again once some in_progress batches have been completed."
    )
    return {"code": "token_limit_exceeded", "message": message, "line": None, "param": None}
