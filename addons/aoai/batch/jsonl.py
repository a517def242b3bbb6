"""A batch input file checked as Azure's Global Batch checks it, one line at a time.

`validate` reads the file line by line (never the whole file), so a 200 MB file of 100,000
requests is checked in a worker thread in bounded memory: what it keeps is one line, a 16-byte
digest per `custom_id` and an 8-byte offset per request. `read_lines` reads the requests again
for the job runner, from the start or from a byte offset saved with its progress.

Line numbers are 1-based, as an editor shows them: Azure does not say whether `line` in
`errors.data` counts from 0 or 1, and a person opening the file to find line 3 looks at the third
line. Blank lines (only whitespace) count as lines of the file but are not requests; a file
ending in an empty line is common and is not an error.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import orjson

from ..openai.validation import MAX_NESTING, nested_too_deep

MiB = 1024 * 1024

# The batch endpoints, in the spelling the dated API uses; the v1 spelling adds "/v1".
ENDPOINTS = ("/chat/completions", "/embeddings", "/responses")

BOM = b"\xef\xbb\xbf"

# Azure's documented texts (batch.md, "Error codes" table and "Known issues"); the table gives
# one sentence of definition per code, which we send as the message.
INVALID_JSON_LINE = "A line (or multiple) in your input file wasn't able to be parsed as valid json."
TOO_MANY_TASKS = "The number of requests in the input file exceeds the maximum allowed value of {limit:,}."
URL_MISMATCH = (
    "Either a row in your input file has a URL that doesn't match the rest of the rows, or the URL specified "
    "in the input file doesn't match the expected endpoint URL."
)
MODEL_NOT_FOUND = (
    "The Azure OpenAI model deployment name that was specified in the `model` property of the input file wasn't found."
)
DUPLICATE_CUSTOM_ID = "The custom ID for this request is a duplicate of the custom ID in another request."
MODEL_MISMATCH = (
    "The Azure OpenAI model deployment name that was specified in the `model` property of this request in "
    "the input file doesn't match the rest of the file."
)
INVALID_REQUEST = "The schema of the input line is invalid or the deployment SKU is invalid."
EMPTY_FILE = "The input file is empty. Please ensure that the batch contains at least one request."
BOM_FILE = (
    "Validation failed: A valid model deployment name couldn't be extracted from the input file. Please "
    "ensure that each row in the input file has a valid deployment name specified in the 'model' field, and "
    "that the deployment name is consistent across all rows."
)
# Ours: Azure documents the code `empty_batch` but its table repeats another code's text.
EMPTY_BATCH = "The input file has no requests. Please ensure that the batch contains at least one request."


def endpoint_of(url: Any) -> str | None:
    """The batch endpoint a line's `url` or a batch's `endpoint` names, in the dated spelling
    ("/v1/chat/completions" -> "/chat/completions"); None when it is not one."""
    if not isinstance(url, str):
        return None
    path = url.removeprefix("/v1")
    return path if path in ENDPOINTS else None


@dataclass(frozen=True)
class BatchDeployment:
    """What validation needs to know of a deployment a line's `body.model` names."""

    name: str
    is_global_batch: bool
    model: str
    # Prompt tokens of one line's body, sent to `endpoint` ("/chat/completions", …): the
    # enqueued-token estimate sums them.
    count_tokens: Callable[[str, dict[str, Any]], int]


# A deployment by its name, or None when there is none of that name.
DeploymentLookup = Callable[[str], BatchDeployment | None]


@dataclass(frozen=True)
class Limits:
    max_lines: int = 100_000  # Azure: requests per file
    max_bytes: int = 200 * MiB  # Azure: 200 MB per input file
    max_line_bytes: int = 10 * MiB  # one request, as large as a JSON request body may be
    max_errors: int = 100  # errors kept in `errors.data`; the rest are counted, not listed


AZURE = Limits()


@dataclass
class Validation:
    """The outcome of validating one input file.

    `errors` are entries of the batch's `errors.data` (`code`, `message`, `line`, `param`; `line`
    is 1-based, None for errors about the whole file). `lines` counts the requests (non-blank
    lines) read; `offsets[i]` is the byte offset where request i starts, `numbers[i]` its line
    number. `tokens` is the enqueued-token estimate (only summed while no error is found)."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    deployment: BatchDeployment | None = None
    tokens: int = 0
    offsets: array[int] = field(default_factory=lambda: array("q"))
    numbers: array[int] = field(default_factory=lambda: array("q"))
    more_errors: int = 0  # errors found beyond `Limits.max_errors`

    @property
    def ok(self) -> bool:
        return not self.errors

    def errors_object(self) -> dict[str, Any] | None:
        """The batch object's `errors`: None when valid, else Azure's list object."""
        return {"object": "list", "data": list(self.errors)} if self.errors else None


def error_entry(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "line": line, "param": param}


class _Checker:
    """The state of one validation as it goes down the file."""

    def __init__(self, endpoint: str, lookup: DeploymentLookup, limits: Limits):
        self.endpoint = endpoint_of(endpoint) or endpoint
        self.lookup = lookup
        self.limits = limits
        self.result = Validation()
        self.seen: set[bytes] = set()
        self.model: str | None = None  # the deployment name the first request named
        self.model_ok = False

    def fail(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(self.result.errors) < self.limits.max_errors:
            self.result.errors.append(error_entry(code, message, line, param))
        else:
            self.result.more_errors += 1

    def schema(self, number: int, param: str | None, why: str) -> None:
        # Azure's documented sentence, then ours naming what is wrong.
        self.fail("invalid_request", f"{INVALID_REQUEST} {why}", number, param)

    def line(self, number: int, raw: bytes) -> None:
        """Checks one request line; each line reports at most one error, its first."""
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.fail("invalid_json_line", INVALID_JSON_LINE, number)
            return
        if not isinstance(request, dict):
            self.schema(number, None, "Each line must be a JSON object.")
            return
        if nested_too_deep(raw, request, MAX_NESTING + 1):
            self.schema(number, "body", f"The request nests objects and arrays more than {MAX_NESTING} deep.")
            return
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id.strip():
            self.schema(number, "custom_id", "'custom_id' is required and must be a non-empty string.")
            return
        if request.get("method") != "POST":
            self.schema(number, "method", "'method' must be 'POST'.")
            return
        url = request.get("url")
        if not isinstance(url, str):
            self.schema(number, "url", "'url' is required and must be a string.")
            return
        if endpoint_of(url) != self.endpoint:
            self.fail("url_mismatch", URL_MISMATCH, number, "url")
            return
        body = request.get("body")
        if not isinstance(body, dict):
            self.schema(number, "body", "'body' is required and must be an object.")
            return
        if not self.deployment_named(number, body.get("model")):
            return
        digest = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if digest in self.seen:
            self.fail("duplicate_custom_id", DUPLICATE_CUSTOM_ID, number, "custom_id")
            return
        self.seen.add(digest)
        if not self.result.errors and self.result.deployment is not None:
            self.result.tokens += self.tokens(self.result.deployment, body, raw)

    def deployment_named(self, number: int, model: Any) -> bool:
        """Whether `model` names the file's one Global Batch deployment. A deployment that is
        missing or of another SKU is reported once, on the first line naming it."""
        if not isinstance(model, str) or not model:
            self.fail("model_not_found", MODEL_NOT_FOUND, number, "body.model")
            return False
        if self.model is None:
            self.model = model
            found = self.lookup(model)
            if found is None:
                self.fail("model_not_found", MODEL_NOT_FOUND, number, "body.model")
            elif not found.is_global_batch:
                self.schema(number, "body.model", f"The deployment '{model}' is not of SKU 'globalbatch'.")
            else:
                self.result.deployment = found
                self.model_ok = True
            return self.model_ok
        if model != self.model:
            self.fail("model_mismatch", MODEL_MISMATCH, number, "body.model")
            return False
        return self.model_ok

    def tokens(self, deployment: BatchDeployment, body: dict[str, Any], raw: bytes) -> int:
        # Azure does not check a body's own fields until the line runs (a wrong one becomes a
        # line of the error file), so a counter that meets one falls back to a rough estimate.
        try:
            return max(0, int(deployment.count_tokens(self.endpoint, body)))
        except (TypeError, ValueError, AttributeError, KeyError):
            return len(raw) // 4


def validate(file: IO[bytes], endpoint: str, lookup: DeploymentLookup, limits: Limits = AZURE) -> Validation:
    """Validates the batch input `file` (binary, read from where it stands) for a batch created
    for `endpoint`. Blocking: call it in a worker thread."""
    check = _Checker(endpoint, lookup, limits)
    result = check.result
    offset = number = 0
    while raw := file.readline(limits.max_line_bytes + 1):
        number += 1
        if number == 1 and raw.startswith(BOM):
            # Azure answers a BOM with its generic message, naming no line (batch.md, Known issues).
            check.fail("invalid_json_line", BOM_FILE, None)
            return result
        size = len(raw)
        too_long = size > limits.max_line_bytes and not raw.endswith(b"\n")
        rest = raw
        while too_long and rest and not rest.endswith(b"\n") and offset + size <= limits.max_bytes:
            rest = file.readline(MiB)  # the rest of an over-long line, a piece at a time
            size += len(rest)
        if offset + size > limits.max_bytes:
            message = f"The input file is larger than the maximum allowed size of {limits.max_bytes:,} bytes."
            check.fail("invalid_request", message, None)  # ours: Azure refuses such files at upload
            return result
        if too_long or raw.strip():
            result.lines += 1
            if result.lines > limits.max_lines:
                check.fail("too_many_tasks", TOO_MANY_TASKS.format(limit=limits.max_lines), number)
                return result
            result.offsets.append(offset)
            result.numbers.append(number)
            if too_long:
                check.schema(number, "body", f"The line is larger than {limits.max_line_bytes:,} bytes.")
            else:
                check.line(number, raw)
        offset += size
    if number == 0:
        check.fail("empty_file", EMPTY_FILE, None)
    elif result.lines == 0:
        check.fail("empty_batch", EMPTY_BATCH, None)
    return result


class Line(NamedTuple):
    number: int  # 1-based line number in the file
    offset: int  # byte offset where the line starts
    end: int  # byte offset just past it: where reading goes on after a restart
    request: dict[str, Any]  # the parsed line: custom_id, method, url, body


def read_lines(
    file: IO[bytes], start_line: int = 1, offset: int = 0, max_line_bytes: int = AZURE.max_line_bytes
) -> Iterator[Line]:
    """The requests of a validated input file, from line `start_line` on. `offset` is the byte
    offset of `start_line` when known (saved progress); otherwise the file is read from its start.
    Blank lines are skipped; a line that does not parse (the file changed since) raises ValueError."""
    number = start_line if offset else 1
    file.seek(offset)
    while raw := file.readline(max_line_bytes + 1):
        start, offset = offset, offset + len(raw)
        here, number = number, number + 1
        if here < start_line or not raw.strip():
            continue
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            raise ValueError(f"line {here} is larger than {max_line_bytes} bytes")
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"line {here} is not JSON: {error}") from None
        if not isinstance(request, dict):
            raise ValueError(f"line {here} is not a JSON object")
        yield Line(here, start, offset, request)
