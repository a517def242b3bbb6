"""Realtime: WebSocket handshakes of the Realtime API that auth, checks, limits and faults have
admitted are handed on instead of answered.

* **Generate and replay modes:** the session runs on the loopback realtime server
  (runtime/realtime_server.py). The stage leaves a one-time ticket there saying what the
  session is for (deployment, beta or GA events, timing, seed) and points the flow at the
  server; mitmproxy relays the WebSocket between the client and the server, so mitmweb (and
  any addon's `websocket_message` hook) sees every event. The session itself comes from
  `config.realtime_sessions` when an extension sets one, else from the simulator's engine;
  in replay mode, from the deployment's recorded sessions (the replay stage's `replayer`),
  and a deployment with none gets the replay miss answer.
* **Record mode:** the handshake goes on to AZURE_OPENAI_ENDPOINT (with AZURE_OPENAI_KEY in
  place of the client's key when it is set) and mitmproxy relays the session to Azure; the
  record stage saves its events with their times when it ends.

A long session's messages would pile up in the flow (mitmproxy keeps every one for its view):
only the newest FLOW_MESSAGE_BYTES of them are kept there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, http

from .. import wire
from ..runtime import latency, redaction
from ..runtime.config import Deployment, SimulatorConfig
from ..runtime.fault_book import FaultBook
from ..runtime.faults import Fault
from ..runtime.options import Option, check, declare, names
from ..runtime.realtime_server import (
    BETA,
    DEFAULT_MAX_SESSION_S,
    DEFAULT_MAX_SESSIONS,
    GA,
    TICKET_HEADER,
    RealtimeServer,
    SessionFactory,
    SessionQuota,
    SessionTicket,
)
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_of

logger = logging.getLogger(__name__)

FLOW_MESSAGE_BYTES = 4 * 1024 * 1024  # of a session's messages, what its flow keeps (the newest)
LOOPBACK, AZURE = "loopback", "azure"
_CREDENTIALS = frozenset({"api-key", "ocp-apim-subscription-key", "authorization", "cookie", TICKET_HEADER})
_NOT_PASSED = _CREDENTIALS | {"connection", "upgrade", "host", "content-length"} | {"sec-websocket-key"}

OPTIONS = (
    Option(
        "REALTIME_MAX_SESSIONS",
        int,
        DEFAULT_MAX_SESSIONS,
        "Realtime sessions (WebSockets) this process runs at once; a handshake past it gets a 429.",
        low=1,
        high=1_000_000,
    ),
    Option(
        "REALTIME_MAX_SESSION_SECONDS",
        float,
        DEFAULT_MAX_SESSION_S,
        "Seconds a realtime session may last (Azure's: 30 minutes); then it gets Azure's session_expired "
        "error event and is closed.",
        low=0.1,
        high=86_400,
    ),
)
NAMES = names(OPTIONS)
# What plays recorded sessions in replay mode: their factory for a handshake, or None when it
# answered the handshake itself (nothing recorded).
Replayer = Callable[[http.HTTPFlow, RequestContext], SessionFactory | None]
TOO_MANY = (
    "This simulator runs at most {most} realtime sessions at once (REALTIME_MAX_SESSIONS); "
    "try again when one has ended."
)
NO_ENDPOINT = (
    "Record mode relays realtime sessions to AZURE_OPENAI_ENDPOINT only; set it to record or relay this session."
)


def ticket_for(
    context: RequestContext,
    config: SimulatorConfig,
    quotas: Callable[[Deployment], SessionQuota | None] | None = None,
    book: FaultBook | None = None,
) -> SessionTicket:
    """What the session of an admitted handshake is built from: with `quotas`, the deployment's
    quota windows; with `book`, its declared faults, drawn for each response."""
    route, deployment, request = context.route, context.deployment, context.request
    assert route is not None and deployment is not None
    draw = count = None
    if book is not None and book.profile_for(deployment, config.default_faults) is not None:

        def draw() -> list[Fault]:
            return book.choose(deployment, config.default_faults, config.seed).shapes

        def count(kind: str) -> None:
            book.count(deployment.label, kind)

    return SessionTicket(
        deployment=deployment,
        flavour=BETA if route.operation == "realtime" else GA,
        api_version=context.api_version,
        latency=latency.profile(deployment, route, config),
        latency_enabled=config.latency_enabled,
        seed=config.seed,
        headers={k: v for k, v in request.headers.items() if k.lower() not in _NOT_PASSED},
        query={k: v for k, v in request.query.items()},
        quota=quotas(deployment) if quotas is not None else None,
        draw_faults=draw,
        count_fault=count,
    )


class Realtime:
    def __init__(
        self,
        config: SimulatorConfig,
        server: RealtimeServer,
        engine: SessionFactory,
        startup: Startup | None = None,
        replayer: Replayer | None = None,
        quotas: Callable[[Deployment], SessionQuota | None] | None = None,
        book: FaultBook | None = None,
    ):
        self.config = config
        self.server = server
        self.engine = engine  # the simulator's sessions, unless an extension sets config.realtime_sessions
        self.replayer = replayer  # replay mode: the recorded sessions (the replay stage's), or a miss answered
        self.startup = startup or Startup()
        self.quotas = quotas  # the deployment's share of the quota windows, for each session
        self.book = book  # declared faults: sessions draw theirs for each response
        self.env_error: str | None = None
        self._kept: dict[str, int] = {}  # flow id -> bytes of messages its flow keeps

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(self._apply, self.env_error)

    def _apply(self) -> None:
        check(ctx.options, OPTIONS, set(NAMES))
        self.server.max_sessions = ctx.options.realtime_max_sessions
        self.server.max_session_s = ctx.options.realtime_max_session_seconds

    async def running(self) -> None:
        if self.config.mode != "record":
            await self.server.start()

    async def done(self) -> None:
        await self.server.stop()

    def request(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if flow.response or context is None or context.route is None or not context.route.websocket:
            return
        if context.deployment is None:
            return  # not admitted by the checks (an extension answered, or none ran)
        if self.config.mode == "record":
            self._to_azure(flow, context)
            return
        if not self.server.running or self.server.full():
            flow.response = wire.azure_error(
                429, "TooManyRequests", TOO_MANY.format(most=self.server.max_sessions), flow.request
            )
            return
        factory = self.config.realtime_sessions or self.engine
        if self.config.mode == "replay" and self.replayer is not None:
            factory = self.replayer(flow, context)
            if factory is None:
                return  # nothing recorded for it: answered as a replay miss
        name = self.server.admit(ticket_for(context, self.config, self.quotas, self.book), factory)
        self.server.to_loopback(flow.request, name)
        context.websocket = LOOPBACK

    def _to_azure(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        endpoint = self.config.azure_openai_endpoint
        if not endpoint:
            flow.response = wire.azure_error(501, "NotImplemented", NO_ENDPOINT, flow.request)
            return
        parts, request = urlsplit(endpoint), flow.request
        request.scheme = "https" if parts.scheme == "https" else "http"
        request.host = parts.hostname or ""
        request.port = parts.port or (443 if request.scheme == "https" else 80)
        request.headers["host"] = parts.netloc
        if self.config.azure_openai_key:
            for name in ("api-key", "ocp-apim-subscription-key", "authorization"):
                request.headers.pop(name, None)
            request.headers["api-key"] = self.config.azure_openai_key
        else:  # the client's own credentials go through, a key in the query too
            request.path = redaction.with_query(request.path, context.query_secrets)
        context.websocket = AZURE

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Keep only the newest FLOW_MESSAGE_BYTES of a session's messages in its flow."""
        data = flow.websocket
        if data is None or not data.messages:
            return
        kept = self._kept.get(flow.id, 0) + len(data.messages[-1].content)
        messages = data.messages
        while kept > FLOW_MESSAGE_BYTES and len(messages) > 1:
            kept -= len(messages.pop(0).content)
        self._kept[flow.id] = kept

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._kept.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        # The handshake failed before reaching the server: its ticket is not waited for.
        name = flow.request.headers.get(TICKET_HEADER)
        if name:
            self.server.tickets.forget(name)
