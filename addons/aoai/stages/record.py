"""Record: in record mode, forward what is not yet recorded to Azure OpenAI (or to an
extension's forwarder) and save each complete exchange. Streamed answers reach the client
live and are saved with each event's arrival time.

The stage forwards to Azure itself (runtime/upstream.py) rather than letting mitmproxy do
it, so that a fault upstream (refused, unreachable, too slow, reset, TLS, a gateway's HTML
page) reaches the client as Azure's JSON error naming the cause, never as mitmproxy's HTML
page. A stream relayed live that breaks off breaks off for the client too, and is not saved.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from mitmproxy import ctx, http

from .. import wire
from ..openai import content_filter as filters
from ..runtime import offload, redaction
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.failures import describe
from ..runtime.options import Option, check, declare, names
from ..runtime.realtime_server import BETA, GA
from ..runtime.recording import (
    SKIP_RESPONSE_HEADERS,
    Event,
    Interaction,
    RecordedSession,
    RecordingStore,
    SessionRecorder,
    clean_headers,
    parse_sse,
)
from ..runtime.recording.sessions import Budget
from ..runtime.routes import MANAGEMENT
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_for, context_of
from ..runtime.streams import StreamPlan, StreamServer
from ..runtime.upstream import (
    Fault,
    Upstream,
    bad_answer,
    failed,
    is_endpoint,
    origin,
    request_headers,
    response_headers,
)

logger = logging.getLogger(__name__)

# The client's credentials (Azure gets its own) and the simulator's own headers.
_NOT_FOR_AZURE = ("api-key", "ocp-apim-subscription-key", "authorization", filters.HEADER)


def _save_unless_recorded(context: RequestContext, persist: bool = True) -> None:
    """Mark a forwarded exchange for saving, unless the replay stage found it recorded already
    (a passed-through bearer's request is forwarded all the same, and saved once)."""
    context.recording = persist and context.recording is not False


# What a streamed event adds to an exchange's YAML, about, in bytes (its JSON and keys).
_EVENT_BYTES = 256


def _large(interaction: Interaction) -> bool:
    """Whether writing the exchange takes long enough to belong in a worker thread."""
    size = len(interaction.request_body) + len(interaction.response_body)
    return size + _EVENT_BYTES * len(interaction.events or ()) > offload.OFF_LOOP_BYTES


class StreamCapture:
    """Notes when each chunk of a stream came (called with each chunk as it passes)."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []

    def __call__(self, data: bytes) -> bytes:
        if data:
            self.chunks.append((time.time(), data))
        return data

    def events(self, started: float) -> list[Event]:
        """Complete SSE events, each stamped with the arrival of the chunk that completed it."""
        events: list[Event] = []
        buffer = b""
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
    headers = [
        (k, v)
        for k, v in result.headers.items()
        if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")
    ]
    return http.Response.make(status, result.content, headers), persist


class Relayed:
    """Azure's stream being relayed to the client (a `StreamPlan` source): its chunks as they
    arrive, each noted for the recording; `ended` is called once Azure's stream is complete."""

    def __init__(self, answer: httpx.Response, endpoint: str, timeout_s: float, ended: Callable[[Relayed], None]):
        self.answer = answer
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.ended = ended
        self.capture = StreamCapture()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.answer.aiter_bytes():
                self.capture(chunk)
                yield chunk
        except httpx.HTTPError as e:
            logger.warning(
                "the stream from %s broke off (%s); the client's stream ends there, unrecorded",
                self.endpoint,
                failed(e, self.endpoint, self.timeout_s).message,
            )
            raise
        # Saved here, not in the response hook: a client that closes as soon as it reads [DONE]
        # ends its flow before mitmproxy would call that hook, yet the exchange is complete.
        self.ended(self)

    async def aclose(self) -> None:
        await self.answer.aclose()


def _endpoint(endpoint: str | None) -> None:
    if endpoint and endpoint.strip() and not is_endpoint(endpoint.strip()):
        raise ConfigError(
            f"AZURE_OPENAI_ENDPOINT: expected an http(s) URL such as https://NAME.openai.azure.com, got {endpoint!r}"
        )


def _above_zero(seconds: float) -> None:
    if seconds <= 0:
        raise ConfigError("AZURE_OPENAI_TIMEOUT_SECONDS: must be above 0")


OPTIONS = (
    Option(
        "AZURE_OPENAI_ENDPOINT",
        str | None,
        None,
        "The Azure OpenAI endpoint to record from (https://NAME.openai.azure.com).",
        check=_endpoint,
    ),
    Option("AZURE_OPENAI_KEY", str | None, None, "The Azure OpenAI key used when recording."),
    Option(
        "AZURE_OPENAI_TIMEOUT_SECONDS",
        float,
        SimulatorConfig.azure_openai_timeout_s,
        "Record mode: seconds Azure may take to accept the connection, and then to send each part of "
        "its answer, before the client gets a 504.",
        check=_above_zero,
    ),
)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check where record mode forwards to and copy it into `config`; raises ConfigError."""
    check(options, OPTIONS, updated)
    config.azure_openai_endpoint = (options.azure_openai_endpoint or "").strip()
    config.azure_openai_key = options.azure_openai_key or ""
    config.azure_openai_timeout_s = float(options.azure_openai_timeout_seconds)


class ForwardTarget:
    """Record mode needs somewhere to forward to: AZURE_OPENAI_ENDPOINT, or an extension's
    forwarder. Without either it refuses to start, or to switch to record mode at run time.
    Placed right after the extensions stage: forwarders registered in initialize(config)
    count, and the refusal comes before the recordings are loaded (one line, nothing before)."""

    def __init__(self, config: SimulatorConfig, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def settle(self) -> None:
        """Copy these settings into the config now (for extensions, configured before this stage)."""
        apply(ctx.options, self.config, set(NAMES))

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)
        if not updated & {"simulator_mode", "azure_openai_endpoint", "extension_path"}:
            return
        if (
            self.config.mode == "record"
            and not self.config.azure_openai_endpoint
            and not self.config.recording.forwarders
        ):
            self.startup.refuse(
                "AZURE_OPENAI_ENDPOINT: record mode forwards to Azure OpenAI; set it to the "
                "resource's endpoint, such as https://NAME.openai.azure.com"
            )


class Record:
    def __init__(self, config: SimulatorConfig, store: RecordingStore, streams: StreamServer | None = None):
        self.config = config
        self.store = store
        self.streams = streams or StreamServer()
        self.upstream = Upstream()
        self._saving: set[asyncio.Task] = set()  # pending recordings being written past their bound
        # Realtime sessions relayed to Azure, by flow id: their frames until they end.
        self._sessions: dict[str, SessionRecorder] = {}
        self._session_budget = Budget(self.store.pending_max_bytes)

    def configure(self, updated: set[str]) -> None:
        bounds = self.config.bounds
        self.store.pending_max_bytes = bounds.recording_pending_bytes
        self.store.cache_max_bytes = bounds.recording_cache_bytes
        self._session_budget.most = bounds.recording_pending_bytes

    def running(self) -> None:
        if self.config.mode == "record" and self.config.azure_openai_endpoint:
            self.upstream.warm()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Synchronous outside record mode, so other modes pay no coroutine for this stage.
        if flow.response or self.config.mode != "record":
            return None
        context = context_for(flow, self.config)
        if (context.route is not None and context.route.family == MANAGEMENT) or context.websocket is not None:
            return None
        context.recording_file = self.store.file_for(flow.request.method, flow.request.path.partition("?")[0])
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
                logger.warning(
                    "forwarder %s failed on %s %.200s", where, flow.request.method, flow.request.path, exc_info=True
                )
                flow.response = wire.azure_error(
                    500, "InternalServerError", f"The forwarder {where} failed: {type(e).__name__}: {e}", flow.request
                )
                return
            if response is not None:
                flow.response = response
                _save_unless_recorded(context, persist)
                return
        await self._to_azure(context)

    async def _to_azure(self, context: RequestContext) -> None:
        flow = context.flow
        if not self.config.azure_openai_endpoint:
            flow.response = wire.azure_error(
                502,
                "NoUpstream",
                "Record mode needs AZURE_OPENAI_ENDPOINT: the Azure OpenAI endpoint to forward to.",
                flow.request,
            )
            return
        endpoint = origin(self.config.azure_openai_endpoint)
        timeout_s = self.config.azure_openai_timeout_s
        request = flow.request
        try:
            answer = await self.upstream.send(
                request.method,
                endpoint + self._path(context),
                self._headers(request),
                request.raw_content or b"",
                timeout_s,
            )
        except httpx.HTTPError as e:
            self._fail(flow, failed(e, endpoint, timeout_s))
            return
        if answer.status_code < 500 and "text/event-stream" in answer.headers.get("content-type", ""):
            self._relay(context, answer, endpoint, timeout_s)
            return
        try:
            raw = b"".join([chunk async for chunk in answer.aiter_raw()])
        except httpx.HTTPError as e:
            self._fail(flow, failed(e, endpoint, timeout_s))
            return
        finally:
            await answer.aclose()
        response = http.Response.make(answer.status_code, b"", http.Headers(response_headers(answer.headers.raw)))
        response.raw_content = raw
        response.headers["content-length"] = str(len(raw))
        fault = bad_answer(
            answer.status_code,
            answer.headers.get("content-type", ""),
            response.get_content(strict=False) or b"",
            endpoint,
            answer.reason_phrase,
        )
        if fault is not None:
            self._fail(flow, fault)
            return
        flow.response = response
        _save_unless_recorded(context)

    def _path(self, context: RequestContext) -> str:
        """The request's path and query for Azure: keys the client put in the query go along
        only when its credentials do (no AZURE_OPENAI_KEY in their place)."""
        path = context.flow.request.path
        return path if self.config.azure_openai_key else redaction.with_query(path, context.query_secrets)

    def _headers(self, request: http.Request) -> list[tuple[str, str]]:
        """The client's headers with Azure's key in place of the simulator's."""
        headers = request_headers(request.headers.items(multi=True), _NOT_FOR_AZURE)
        if self.config.azure_openai_key:
            headers.append(("api-key", self.config.azure_openai_key))
        elif request.headers.get("authorization"):
            headers.append(("authorization", request.headers["authorization"]))  # Entra ID: Azure checks it
        return headers

    def _relay(self, context: RequestContext, answer: httpx.Response, endpoint: str, timeout_s: float) -> None:
        """Hand Azure's stream to the streaming stage, which passes each chunk on as it comes."""
        # The chunks are relayed decoded, so the encoding header goes.
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in response_headers(answer.headers.raw, decoded=True)
        }
        plan = StreamPlan(headers=headers, frames=[], status=answer.status_code)
        plan.source = Relayed(answer, endpoint, timeout_s, lambda relayed: self._stream_ended(context, plan, relayed))
        self.streams.route(plan)
        context.stream = plan
        _save_unless_recorded(context)

    def _stream_ended(self, context: RequestContext, plan: StreamPlan, relayed: Relayed) -> None:
        if not context.recording:
            return
        request = context.flow.request
        self._save(
            request,
            plan.status,
            list(plan.headers.items()),
            b"",
            relayed.capture.events(request.timestamp_start),
            time.time(),
            context.recording_key,
            context.recording_file,
        )

    @staticmethod
    def _fail(flow: http.HTTPFlow, fault: Fault) -> None:
        logger.warning("%s %.200s: %s", flow.request.method, flow.request.path.partition("?")[0], fault.message)
        flow.response = wire.azure_error(fault.status, fault.code, fault.message, flow.request)

    def response(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is None or not context.recording:
            return
        if context.stream is not None and isinstance(context.stream.source, Relayed):
            return  # saved when Azure's stream ended, if it did
        response = flow.response
        self._save(
            flow.request,
            response.status_code,
            list(response.headers.items(multi=True)),
            response.content or b"",
            None,
            response.timestamp_end or time.time(),
            context.recording_key,
            context.recording_file,
        )

    def _save(
        self,
        request: http.Request,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        events: list[Event] | None,
        ended: float,
        key: str | None = None,
        file: str | None = None,
    ) -> None:
        """Keep the exchange (`key`: the request's, as the replay stage worked it out) in
        `file`, the one chosen when the request came."""
        # Throttling and server errors are moments, not answers worth replaying; a refused
        # credential says who asked, not what was asked.
        if status in (401, 403, 429) or status >= 500:
            return
        started = request.timestamp_start
        interaction = Interaction(
            method=request.method,
            path=request.path.partition("?")[0],
            query=list(request.query.items(multi=True)),
            request_headers={k: v for k, v in (("content-type", request.headers.get("content-type")),) if v},
            request_body=request.raw_content or b"",
            status=status,
            response_headers=clean_headers(headers, SKIP_RESPONSE_HEADERS),
            response_body=body,
            events=events,
            duration_ms=(ended - started) * 1000,
            recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            known_key=(self.store.rules, self.store.table, key) if key is not None else None,
        )
        autosave = self.config.recording.autosave
        file = file or self.store.file_for(interaction.method, interaction.path)
        if autosave and _large(interaction):
            # Its YAML takes milliseconds to write (3 MB of embeddings, half a second): appended
            # from a worker thread, as soon as it is free.
            self._save_off_the_loop([(file, interaction)])
            logger.info("recorded %s %.200s (%d)", request.method, interaction.path, status)
        elif self.store.add(interaction, autosave, file):
            logger.info("recorded %s %.200s (%d)", request.method, interaction.path, status)
        batch = self.store.overflow()
        if batch:
            self._save_off_the_loop(batch)

    def _save_off_the_loop(self, batch: list) -> None:
        """Write recordings in a worker thread (pending ones past their bound, or a large one):
        tens of MiB of YAML take seconds, which the event loop must not wait."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the proxy's loop (tests): at once
            self.store.save(batch)
            return
        task = loop.create_task(asyncio.to_thread(self.store.save, batch))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    # Realtime sessions relayed to Azure (the realtime stage pointed their handshakes there).

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if self.config.mode != "record" or context is None or context.websocket != "azure":
            return
        head = RecordedSession(
            deployment=context.deployment.name,
            flavour=BETA if context.route.operation == "realtime" else GA,
            path=flow.request.path.partition("?")[0],
            query={k: v for k, v in flow.request.query.items() if not redaction.secret_query_name(k)},
        )
        self._sessions[flow.id] = SessionRecorder(head, time.time(), self._session_budget)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        recorder = self._sessions.get(flow.id)
        if recorder is None or flow.websocket is None or not flow.websocket.messages:
            return
        message = flow.websocket.messages[-1]
        recorder.add(message.from_client, message.timestamp, message.content, message.is_text)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        recorder = self._sessions.pop(flow.id, None)
        if recorder is not None:
            self._save_session(recorder)

    def _save_session(self, recorder: SessionRecorder) -> None:
        if not recorder.frames:
            recorder.release()
            return

        def write() -> None:
            try:
                session = recorder.finish(time.time())
                if self.store.sessions.save(session) is not None:
                    logger.info(
                        "recorded a realtime session of %s (%d events)", session.deployment, len(session.messages)
                    )
            finally:
                recorder.release()

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the proxy's loop (tests): at once
            write()
            return
        # Its YAML may hold minutes of audio: written from a worker thread.
        task = loop.create_task(asyncio.to_thread(write))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def done(self) -> None:
        for recorder in list(self._sessions.values()):  # sessions still open at shutdown
            self._save_session(recorder)
        self._sessions.clear()
        if self._saving:
            await asyncio.gather(*self._saving)
        saved = self.store.save()
        if saved:
            logger.info("saved %d recorded interactions", saved)
        self.store.save_indexes()
        await self.upstream.close()
