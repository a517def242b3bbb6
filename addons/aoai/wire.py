"""Azure's wire details: JSON, headers every answer carries, and the error bodies.

Every response the simulator makes goes through `json_response` or `error`, so the
request-id headers and the error shapes are the same everywhere.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from mitmproxy import http

loads = orjson.loads


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def azure_headers(request: http.Request | None, region: str, content_type: str) -> dict[str, str]:
    request_id = str(uuid.uuid4())
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


def json_response(status: int, body: Any, request: http.Request | None = None, region: str = "eastus",
                  headers: dict[str, str] | None = None) -> http.Response:
    all_headers = azure_headers(request, region, "application/json")
    if headers:
        all_headers.update(headers)
    return http.Response.make(status, dumps(body), all_headers)


def openai_error(status: int, message: str, *, type: str | None = "invalid_request_error",
                 param: str | None = None, code: str | None = None, request: http.Request | None = None,
                 headers: dict[str, str] | None = None) -> http.Response:
    """The OpenAI-style error body Azure returns for request validation failures."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return json_response(status, body, request, headers=headers)


def azure_error(status: int, code: str, message: str, request: http.Request | None = None,
                headers: dict[str, str] | None = None, **extra: Any) -> http.Response:
    """The Azure gateway-style error body: {"error": {"code": …, "message": …}}."""
    return json_response(status, {"error": {"code": code, "message": message, **extra}}, request,
                         headers=headers)


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
