"""Document Intelligence (and Form Recognizer) analyze and poll requests, answered with the
made-up results of aoai/docintel/; `make_generator` gives one with its own store and timings."""

from __future__ import annotations

import random
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from mitmproxy import http

from .. import wire
from ..docintel import service
from ..docintel.layout import MODELS, Analysis
from ..docintel.service import (
    API_VERSIONS,
    MAX_DOCUMENT_BYTES,
    RETRY_AFTER_S,
    STRING_INDEX_TYPES,
    Invalid,
    ResultStore,
    Source,
    estimate_pages,
    model_not_found,
    page_unit,
    parse_pages,
    read_source,
    ready_seconds,
    result_not_found,
    status_body,
    too_large,
)
from ..runtime.analyses import SharedResults
from ..runtime.state import RequestContext
from .common import services_of

Answer = http.Response | Awaitable[http.Response]


def _client_base(flow: http.HTTPFlow) -> str:
    """The scheme and host the client used (the listener keeps the client's Host header)."""
    scheme = "https" if flow.client_conn.tls_established else "http"
    return f"{scheme}://{flow.request.host_header or flow.request.pretty_host}"


def _seed(context: RequestContext, source: Source, model_id: str) -> int:
    """SIMULATOR_SEED makes a document's result reproducible; else every analysis differs."""
    if context.config.seed is None:
        return random.getrandbits(64)
    digest = zlib.crc32(source.data if source.data is not None else (source.url or "").encode())
    return random.Random(f"{context.config.seed}:{digest}:{model_id}").getrandbits(64)


class DocumentIntelligence:
    """Analyze and poll; timings None read aoai.docintel.service's READY_* values at each request."""

    def __init__(
        self,
        store: ResultStore | None = None,
        ready_base_s: float | None = None,
        ready_per_10kb_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store if store is not None else ResultStore()
        self.ready_base_s = ready_base_s
        self.ready_per_10kb_s = ready_per_10kb_s
        self.clock = clock

    def __call__(self, context: RequestContext) -> Answer | None:
        """Answer an analyze or poll request the routing stage matched (path parameters family,
        model and, for polls, result); None for anything else."""
        route, params = context.route, context.params
        if route is None or route.family != "document_intelligence":
            return None
        request = context.request
        family, model_id = params["family"].lower(), params["model"]
        version = request.query.get("api-version")
        if version not in API_VERSIONS[family]:
            return wire.not_found(request)
        try:
            if model_id not in MODELS:
                raise model_not_found()
            if "result" not in params:
                return self.analyze(context, family, model_id, version)
            return self.poll(context, model_id, params["result"])
        except Invalid as e:
            return wire.json_response(e.status, e.body(), request, context.config.region)

    def analyze(self, context: RequestContext, family: str, model_id: str, version: str) -> Answer:
        request = context.request
        body = request.raw_content or b""
        if len(body) > MAX_DOCUMENT_BYTES:
            raise too_large()
        source = read_source(request.headers.get("content-type", ""), request.content or b"")
        if source.data is not None and len(source.data) > MAX_DOCUMENT_BYTES:
            raise too_large()
        pages = request.query.get("pages")
        page_numbers = parse_pages(pages) if pages else list(range(1, estimate_pages(source) + 1))
        index_type = request.query.get("stringIndexType")
        now = self.clock()
        delay = 0.0
        if context.config.latency_enabled:
            base = service.READY_BASE_S if self.ready_base_s is None else self.ready_base_s
            per_10kb = service.READY_PER_10KB_S if self.ready_per_10kb_s is None else self.ready_per_10kb_s
            delay = ready_seconds(source.size, base, per_10kb)
        analysis = Analysis(
            str(uuid.uuid4()),
            family,
            model_id,
            version,
            index_type if index_type in STRING_INDEX_TYPES else "textElements",
            page_numbers,
            page_unit(source),
            _seed(context, source, model_id),
            now,
            now + delay,
        )
        self.store.add(analysis)
        context.extras["result_id"] = analysis.result_id
        location = (
            f"{_client_base(context.flow)}/{family}/documentModels/{quote(model_id, safe='')}"
            f"/analyzeResults/{analysis.result_id}?api-version={quote(version, safe='')}"
        )
        headers = wire.azure_headers(request, context.config.region, "")
        del headers["content-type"]  # the 202 has no body
        headers["Operation-Location"] = location
        headers["Retry-After"] = str(RETRY_AFTER_S)
        answer = http.Response.make(202, b"", headers)
        if isinstance(self.store, SharedResults) and self.store.sharing:
            return self._shared_then(self.store, analysis.result_id, answer)
        return answer

    @staticmethod
    async def _shared_then(store: SharedResults, result_id: str, answer: http.Response) -> http.Response:
        """The 202 once the analysis is in the shared store: a poll reaching another replica finds it."""
        await store.share(result_id)
        return answer

    def poll(self, context: RequestContext, model_id: str, result_id: str) -> Answer:
        analysis = self.store.get(result_id)
        if analysis is None and isinstance(self.store, SharedResults) and self.store.sharing:
            return self._poll_shared(context, self.store, model_id, result_id)
        return self.status(context, analysis, model_id)

    async def _poll_shared(
        self, context: RequestContext, store: SharedResults, model_id: str, result_id: str
    ) -> http.Response:
        """A poll for an analysis another replica made: read from the shared store."""
        analysis = await store.fetch(result_id)
        try:
            return self.status(context, analysis, model_id)
        except Invalid as e:
            return wire.json_response(e.status, e.body(), context.request, context.config.region)

    def status(self, context: RequestContext, analysis: Analysis | None, model_id: str) -> http.Response:
        if analysis is None or analysis.model_id != model_id:
            raise result_not_found()
        # Wall-clock times, the same on every replica: any of them judges the status alike.
        body = status_body(analysis, self.clock())
        headers = {"Retry-After": str(RETRY_AFTER_S)} if body["status"] == "running" else None
        return wire.json_response(200, body, context.request, context.config.region, headers)


def make_generator(
    store: ResultStore | None = None,
    ready_base_s: float | None = None,
    ready_per_10kb_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> Callable[[RequestContext], Answer | None]:
    """A generator with its own store and timings, e.g. for
    `config.replace_generator("document_intelligence", make_generator(ready_base_s=5))`."""
    service = DocumentIntelligence(store, ready_base_s, ready_per_10kb_s, clock)

    def document_intelligence(context: RequestContext) -> Answer | None:
        return service(context)

    document_intelligence.service = service  # type: ignore[attr-defined]
    return document_intelligence


def document_intelligence(context: RequestContext) -> Answer | None:
    """The built-in generator: Document Intelligence analyze and poll requests, else None; the
    analyses are kept in the services' result store (and shared with the other replicas)."""
    route = context.route
    if route is None or route.family != "document_intelligence":
        return None
    return DocumentIntelligence(services_of(context).documents)(context)
