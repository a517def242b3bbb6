"""Record: in record mode, forward what is not yet recorded to Azure OpenAI (or to an
extension's forwarder) and save each exchange. Streamed answers reach the client live and
are saved with each event's arrival time."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import http

from .. import wire
from ..runtime.config import SimulatorConfig
from ..runtime.failures import describe
from ..runtime.recording import SKIP_RESPONSE_HEADERS, Event, Interaction, RecordingStore, clean_headers, parse_sse
from ..runtime.routes import MANAGEMENT
from ..runtime.state import RequestContext, context_for, context_of

logger = logging.getLogger(__name__)

_CLIENT_AUTH = ("api-key", "ocp-apim-subscription-key", "authorization")


class StreamCapture:
    """`flow.response.stream` callable: passes each chunk on at once and notes when it came."""

    def __init__(self):
        self.chunks: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> bytes:
        if data:
            self.chunks.append((time.time(), data))
        return data

    def events(self, started: float) -> list[Event]:
        """Complete SSE events, each stamped with the arrival of the chunk that completed it."""
        events, buffer = [], b""
        for arrived, data in self.chunks:
            buffer += data.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                block, _, buffer = buffer.partition(b"\n\n")
                events.extend(Event((arrived - started) * 1000, p) for p in parse_sse(block))
        return events


def as_response(result: Any) -> tuple[http.Response | None, bool]:
    """A forwarder's answer as a mitmproxy response, and whether to record it. Forwarders may
    return a mitmproxy response, a requests or httpx response, {"response": …, "persist": bool},
    or None to pass."""
    persist = True
    if isinstance(result, dict):
        persist = bool(result.get("persist", True))
        result = result.get("response")
    if result is None or isinstance(result, http.Response):
        return result, persist
    status = getattr(result, "status_code", None)
    if status is None:
        raise TypeError(f"a forwarder returned {type(result).__name__}, not a response")
    headers = [(k, v) for k, v in result.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")]
    return http.Response.make(status, result.content, headers), persist


class Record:
    def __init__(self, config: SimulatorConfig, store: RecordingStore):
        self.config = config
        self.store = store

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Synchronous outside record mode, so other modes pay no coroutine for this stage.
        if flow.response or self.config.mode != "record":
            return None
        context = context_for(flow, self.config)
        if context.route is not None and context.route.family == MANAGEMENT:
            return None
        return self._forward(context)

    async def _forward(self, context: RequestContext) -> None:
        flow = context.flow
        for forwarder in self.config.recording.forwarders:
            try:
                result = forwarder(context)
                if inspect.isawaitable(result):
                    result = await result
                response, persist = as_response(result)
            except Exception as e:
                # A broken forwarder costs one request a 500, never the proxy.
                where = describe(forwarder)
                logger.warning("forwarder %s failed on %s %s", where, flow.request.method, flow.request.path,
                               exc_info=True)
                flow.response = wire.azure_error(500, "InternalServerError",
                                                 f"The forwarder {where} failed: {type(e).__name__}: {e}", flow.request)
                return
            if response is not None:
                flow.response = response
                context.recording = persist
                return
        self._to_azure(context)

    def _to_azure(self, context: RequestContext) -> None:
        flow = context.flow
        endpoint = self.config.azure_openai_endpoint
        if not endpoint:
            flow.response = wire.azure_error(502, "NoUpstream", "Record mode needs AZURE_OPENAI_ENDPOINT: the Azure "
                                                                "OpenAI endpoint to forward to.", flow.request)
            return
        target = urlsplit(endpoint)
        request = flow.request
        request.scheme = target.scheme or "https"
        request.host = target.hostname or ""
        request.port = target.port or (443 if request.scheme == "https" else 80)
        request.host_header = target.netloc
        bearer = request.headers.get("authorization", "")
        for name in _CLIENT_AUTH:
            request.headers.pop(name, None)
        if self.config.azure_openai_key:
            request.headers["api-key"] = self.config.azure_openai_key
        elif bearer:
            request.headers["authorization"] = bearer  # an Entra ID token, checked by Azure itself
        context.recording = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is not None and context.recording and \
                "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = StreamCapture()

    def response(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is None or not context.recording:
            return
        response = flow.response
        # Throttling and server errors are moments, not answers worth replaying.
        if response.status_code == 429 or response.status_code >= 500:
            return
        started = flow.request.timestamp_start
        request = flow.request
        capture = response.stream if isinstance(response.stream, StreamCapture) else None
        events = capture.events(started) if capture else None
        ended = response.timestamp_end or time.time()
        interaction = Interaction(
            method=request.method,
            path=request.path.partition("?")[0],
            query=list(request.query.items(multi=True)),
            request_headers={k: v for k, v in (("content-type", request.headers.get("content-type")),) if v},
            request_body=request.raw_content or b"",
            status=response.status_code,
            response_headers=clean_headers(list(response.headers.items(multi=True)), SKIP_RESPONSE_HEADERS),
            response_body=b"" if events is not None else (response.content or b""),
            events=events,
            duration_ms=(ended - started) * 1000,
            recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        )
        if self.store.add(interaction, self.config.recording.autosave):
            logger.info("recorded %s %s (%d)", request.method, interaction.path, response.status_code)

    def done(self) -> None:
        saved = self.store.save()
        if saved:
            logger.info("saved %d recorded interactions", saved)
        self.store.save_indexes()
