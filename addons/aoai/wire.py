"""Azure's wire details: JSON, headers every answer carries, and the error bodies.

Every response the simulator makes goes through `json_response` or `error`, so the
request-id headers and the error shapes are the same everywhere.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from mitmproxy import http
from mitmproxy.net.http import status_codes

loads = orjson.loads


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        # A header's bytes that are not UTF-8 reach Python as surrogates, and an answer that
        # quotes them (an error naming the Content-Type sent) cannot be UTF-8: shown replaced.
        return orjson.dumps(_without_surrogates(value))


def _without_surrogates(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if depth > 64:
        return value
    if isinstance(value, dict):
        return {_without_surrogates(k, depth + 1): _without_surrogates(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_surrogates(v, depth + 1) for v in value]
    return value


def new_request_id() -> str:
    """A random (version 4) UUID, as Azure's request ids are: str(uuid.uuid4()) at a third of
    the cost, which every answer pays."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def azure_headers(request: http.Request | None, region: str, content_type: str) -> dict[str, str]:
    request_id = new_request_id()
    headers = {
        "content-type": content_type,
        "apim-request-id": request_id,
        "x-request-id": request_id,
        "x-ms-region": region,
        "x-content-type-options": "nosniff",
        "azureml-model-session": "d-sim-" + time.strftime("%Y%m%d"),
    }
    if request is not None:
        client_id = request.headers.get("x-ms-client-request-id")
        if client_id:
            headers["x-ms-client-request-id"] = client_id
    return headers


def json_response(
    status: int,
    body: Any,
    request: http.Request | None = None,
    region: str = "eastus",
    headers: dict[str, str] | None = None,
) -> http.Response:
    all_headers = azure_headers(request, region, "application/json")
    if headers:
        all_headers.update(headers)
        return http.Response.make(status, dumps(body), all_headers)
    return plain_response(status, dumps(body), all_headers)


def plain_response(status: int, content: bytes, headers: dict[str, str]) -> http.Response:
    """What `http.Response.make` makes for lower-case headers without content-length or any
    encoding, a third cheaper: no per-header type checks, and no re-encoding of the body
    to set content-length. Every generated answer is made here."""
    fields = [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
    fields.append((b"content-length", b"%d" % len(content)))
    now = time.time()
    return http.Response(
        b"HTTP/1.1",
        status,
        status_codes.RESPONSES.get(status, "").encode(),
        http.Headers(fields),
        content,
        None,
        now,
        now,
    )


def openai_error(
    status: int,
    message: str,
    *,
    type: str | None = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    request: http.Request | None = None,
    headers: dict[str, str] | None = None,
) -> http.Response:
    """The OpenAI-style error body Azure returns for request validation failures."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return json_response(status, body, request, headers=headers)


def azure_error(
    status: int,
    code: str,
    message: str,
    request: http.Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> http.Response:
    """The Azure gateway-style error body: {"error": {"code": …, "message": …}}."""
    return json_response(status, {"error": {"code": code, "message": message, **extra}}, request, headers=headers)


def not_found(request: http.Request | None = None) -> http.Response:
    return azure_error(404, "404", "Resource not found", request)


def bad_json(request: http.Request | None = None, detail: str = "") -> http.Response:
    return openai_error(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
        "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
        f"valid JSON.{' ' + detail if detail else ''})",
        request=request,
    )


def sse_body(events: list[Any]) -> bytes:
    """Server-sent events as Azure frames them, ending with [DONE]."""
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
