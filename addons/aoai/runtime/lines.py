"""Requests the simulator makes of itself: a batch job's lines, each answered by the same
stages an online request of the same body meets (routing, checks, the content filter, the
declared faults, extensions, replay and the generators), in the same order, on the same
event loop. The stages that belong to a client's connection are left out: intake (the body is
bounded already), the rate limits (a batch never takes the online quota), streaming and pacing
(a line's answer is not paced to anyone), management and metrics (batches count their own).

A line is a flow of its own, marked `BATCH_LINE` in its metadata, made as mitmproxy's reverse
mode hands a request to the addons; it never touches a socket and never appears in mitmweb.
A stage that waits forever (a declared hang) is left after `timeout_s`, as a client would be.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from mitmproxy import connection, http

from .state import context_of

BATCH_LINE = "aoai-batch-line"  # flow metadata: this flow is a batch job's line
DEFAULT_TIMEOUT_S = 600.0
ADDRESS = ("127.0.0.1", 0)


@dataclass(frozen=True)
class LineAnswer:
    status: int
    body: bytes
    request_id: str


def _error(status: int, code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class LineDriver:
    """Answers one request at a time through `stages` (their `request` hooks, in order)."""

    def __init__(self, stages: Sequence[object], api_key: Callable[[], str], timeout_s: float = DEFAULT_TIMEOUT_S):
        self.stages = list(stages)
        self.api_key = api_key  # the simulator's key: a line passes the checks a client's request would
        self.timeout_s = timeout_s

    def flow(self, method: str, path: str, body: bytes) -> http.HTTPFlow:
        now = time.time()
        client = connection.Client(peername=ADDRESS, sockname=ADDRESS, timestamp_start=now)
        client.state = connection.ConnectionState.OPEN  # "connected" until the line is left
        server = connection.Server(address=None)
        request_id = str(uuid.uuid4())
        headers = http.Headers(
            [
                (b"host", b"localhost"),
                (b"api-key", self.api_key().encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-ms-client-request-id", request_id.encode()),
            ]
        )
        request = http.Request(
            "localhost", 443, method.encode(), b"https", b"", path.encode(), b"HTTP/1.1", headers, body, None, now, now
        )
        flow = http.HTTPFlow(client, server, live=True)
        flow.request = request
        flow.metadata[BATCH_LINE] = request_id
        return flow

    async def answer(self, method: str, path: str, body: bytes) -> LineAnswer:
        flow = self.flow(method, path, body)
        request_id = str(flow.metadata[BATCH_LINE])
        try:
            await asyncio.wait_for(self._through(flow), self.timeout_s)
        except TimeoutError:  # the stage waiting was cancelled with it
            return LineAnswer(408, _error(408, "timeout", "The request timed out."), request_id)
        response = flow.response
        if response is None:
            context = context_of(flow)
            if context is not None and context.stream is not None:  # a stream was planned: not for a batch
                return LineAnswer(
                    400, _error(400, "invalid_request", "Streaming is not supported in batch."), request_id
                )
            return LineAnswer(404, _error(404, "not_found", "Nothing answers this request."), request_id)
        if flow.error is not None:
            return LineAnswer(500, _error(500, "server_error", "The server had an error."), request_id)
        return LineAnswer(
            response.status_code, response.content or b"", response.headers.get("apim-request-id", request_id)
        )

    async def _through(self, flow: http.HTTPFlow) -> None:
        for stage in self.stages:
            hook = getattr(stage, "request", None)
            if hook is None:
                continue
            waiting = hook(flow)
            if inspect.isawaitable(waiting):
                await waiting
