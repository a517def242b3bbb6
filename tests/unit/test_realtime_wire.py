"""Realtime handshakes before any socket: the two routes, what the checks and auth make of them,
the stage that hands an admitted one to the loopback server, and that server's tickets and
sessions (a stand-in session; the protocol has tests of its own)."""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy.test import taddons
from unit_support import API_KEY, make_config, make_flow
from websockets.asyncio.client import connect

from aoai.openai import catalogue
from aoai.runtime.realtime_server import (
    BETA,
    GA,
    TICKET_HEADER,
    RealtimeServer,
    SessionTicket,
    Tickets,
)
from aoai.runtime.routes import TABLE
from aoai.runtime.state import context_of
from aoai.stages.auth import Auth
from aoai.stages.checks import Checks
from aoai.stages.realtime import LOOPBACK, Realtime, ticket_for
from aoai.stages.routing import Routing

UPGRADE = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13"}
PREVIEW = "/openai/realtime?api-version=2025-04-01-preview&deployment="


def handshake(path: str, headers: dict[str, str] | None = None, key: str | None = API_KEY, config=None):
    """A handshake through routing, auth and the checks, as the stack runs them."""
    config = config or make_config()
    flow = make_flow("GET", path, headers={**UPGRADE, **(headers or {})}, key=key)
    routing, auth, checks = Routing(config), Auth(config), Checks()
    with taddons.context(routing, auth, checks):
        for stage in (routing, auth, checks):
            if flow.response is None:
                stage.request(flow)
    return flow


def error_of(flow) -> tuple[int, str]:
    return flow.response.status_code, json.loads(flow.response.content)["error"]["code"]


def test_the_routes_and_where_they_name_the_deployment():
    preview = TABLE.resolve("GET", "/openai/realtime?api-version=x").route
    v1 = TABLE.resolve("GET", "/openai/v1/realtime/").route
    assert (preview.operation, preview.deployment_query, preview.previews_only) == ("realtime", "deployment", True)
    assert (v1.operation, v1.deployment_query) == ("realtime_v1", "model")
    assert preview.websocket and v1.websocket and preview.model_kind == v1.model_kind == catalogue.REALTIME
    assert TABLE.resolve("POST", "/openai/v1/realtime").allowed == ("GET",)


def test_realtime_models_in_the_catalogue():
    names = {"gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview", "gpt-realtime", "gpt-realtime-mini"}
    assert {m.name for m in catalogue.MODELS.values() if m.kind == catalogue.REALTIME} == names
    model = catalogue.MODELS["gpt-4o-realtime-preview"]
    assert (model.tokens_per_minute, model.requests_per_minute, model.max_output_tokens) == (100_000, 1000, 4096)
    assert catalogue.MODELS["gpt-realtime"].context_window == 28_672 + 4096


def test_admitted_handshakes_carry_their_deployment_and_version():
    flow = handshake(PREVIEW + "voice")
    context = context_of(flow)
    assert flow.response is None and context.api_version == "2025-04-01-preview"
    assert context.deployment.name == "voice" and context.deployment.model.name == "gpt-realtime"
    flow = handshake("/openai/v1/realtime?model=gpt-4o-mini-realtime-preview")
    assert flow.response is None and context_of(flow).deployment.model.name == "gpt-4o-mini-realtime-preview"


def test_the_api_key_query_parameter_is_a_key_here():
    flow = handshake(PREVIEW + f"voice&api-key={API_KEY}", key=None)
    assert flow.response is None and "api-key" not in flow.request.path
    assert error_of(handshake(PREVIEW + "voice&api-key=wrong", key=None)) == (401, "401")
    # The header wins over the query, as it is read first.
    assert handshake(PREVIEW + "voice&api-key=wrong").response is None


def test_a_key_in_the_query_is_no_key_elsewhere():
    flow = make_flow("POST", f"/openai/v1/chat/completions?api-key={API_KEY}", {"model": "gpt-4o"}, key=None)
    config = make_config()
    routing, auth = Routing(config), Auth(config)
    with taddons.context(routing, auth):
        routing.request(flow)
        auth.request(flow)
    assert flow.response.status_code == 401


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/openai/v1/realtime?model=gpt-4o", 400, "OperationNotSupported"),
        (PREVIEW + "text-embedding-3-small", 400, "OperationNotSupported"),
        ("/openai/realtime?deployment=gpt-realtime", 404, "404"),
        ("/openai/realtime?api-version=2024-10-21&deployment=gpt-realtime", 400, "BadRequest"),
        ("/openai/realtime?api-version=2024-09-01-preview&deployment=gpt-realtime", 400, "BadRequest"),
        ("/openai/v1/realtime?model=gpt-realtime&api-version=2025-04-01-preview", 401, "401"),
        ("/openai/v1/realtime", 400, "missing_required_parameter"),
        ("/openai/realtime?api-version=2025-04-01-preview", 400, "missing_required_parameter"),
    ],
)
def test_refused_handshakes(path, status, code):
    assert error_of(handshake(path)) == (status, code)


def test_the_first_preview_version_is_taken():
    assert handshake("/openai/realtime?api-version=2024-10-01-preview&deployment=x").response is None


def test_operation_not_supported_names_the_model():
    flow = handshake("/openai/v1/realtime?model=gpt-4o")
    message = json.loads(flow.response.content)["error"]["message"]
    assert message.startswith("The realtime operation does not work with the specified model, gpt-4o.")


def test_an_unknown_deployment_is_not_found_when_undefined_ones_are_refused():
    config = make_config()
    config.allow_undefined_deployments = False
    assert error_of(handshake("/openai/v1/realtime?model=nope", config=config)) == (404, "DeploymentNotFound")


def test_a_request_that_is_not_an_upgrade_gets_400():
    config = make_config()
    flow = make_flow("GET", "/openai/v1/realtime?model=gpt-realtime")
    routing, checks = Routing(config), Checks()
    with taddons.context(routing, checks):
        routing.request(flow)
        checks.request(flow)
    assert error_of(flow) == (400, "BadRequest") and "WebSocket" in flow.response.text


# --- the stage


class Echo:
    """A stand-in session: session.created, then one event per frame."""

    def __init__(self, ticket: SessionTicket, emit):
        self.ticket, self.emit, self.closed = ticket, emit, False

    async def start(self) -> None:
        await self.emit({"type": "session.created", "flavour": self.ticket.flavour})

    async def receive(self, message: str | bytes) -> None:
        await self.emit({"type": "echo", "size": len(message)})

    async def close(self) -> None:
        self.closed = True


def test_the_stage_points_an_admitted_handshake_at_the_loopback_server():
    config, server = make_config(), RealtimeServer()
    server.port = 4567
    server._server = object()  # running, as far as the stage asks
    stage = Realtime(config, server, Echo)
    flow = handshake(PREVIEW + f"voice&api-key={API_KEY}", key=None, config=config)
    stage.request(flow)
    assert flow.response is None and context_of(flow).websocket == LOOPBACK
    assert (flow.request.host, flow.request.port, flow.request.scheme) == ("127.0.0.1", 4567, "http")
    ticket, factory = server.tickets.take(flow.request.headers[TICKET_HEADER])
    assert ticket.flavour == BETA and ticket.deployment.name == "voice" and factory is Echo
    assert "api-key" not in ticket.query and "api-key" not in ticket.headers


def test_the_stage_refuses_past_the_most_sessions_and_leaves_others_alone():
    config, server = make_config(), RealtimeServer(max_sessions=1)
    server._server = object()
    stage = Realtime(config, server, Echo)
    first, second = handshake(PREVIEW + "a", config=config), handshake(PREVIEW + "b", config=config)
    stage.request(first)
    stage.request(second)
    assert first.response is None and second.response.status_code == 429
    chat = make_flow("POST", "/openai/v1/chat/completions", {"model": "gpt-4o"})
    stage.request(chat)
    assert context_of(chat).websocket is None


def test_an_extension_s_sessions_win():
    config, server = make_config(), RealtimeServer()
    server._server = object()
    config.realtime_sessions = Echo
    Realtime(config, server, object).request(flow := handshake("/openai/v1/realtime?model=x", config=config))
    assert server.tickets.take(flow.request.headers[TICKET_HEADER])[1] is Echo


def test_record_mode_relays_the_handshake_to_azure():
    config = make_config()
    config.mode, config.azure_openai_endpoint, config.azure_openai_key = "record", "https://r.openai.azure.com", "az"
    flow = handshake(PREVIEW + "voice", config=config)
    Realtime(config, RealtimeServer(), Echo).request(flow)
    request = flow.request
    assert (request.scheme, request.host, request.port) == ("https", "r.openai.azure.com", 443)
    assert request.headers["api-key"] == "az" and context_of(flow).websocket == "azure"


# --- tickets and the server


def test_tickets_are_one_time_and_bounded_by_age_and_count():
    now = [0.0]
    tickets = Tickets(ttl_s=5, most=2, clock=lambda: now[0])
    ticket = ticket_for(context_of(handshake(PREVIEW + "a")), make_config())
    a = tickets.issue(ticket, Echo)
    assert tickets.take(a) is not None and tickets.take(a) is None
    b, c, _d = (tickets.issue(ticket, Echo) for _ in range(3))
    assert tickets.take(b) is None and len(tickets) == 2  # the oldest made room
    now[0] = 6
    assert tickets.take(c) is None and len(tickets) == 0


def test_the_server_runs_a_session_and_closes_unknown_tickets():
    async def scenario():
        server = RealtimeServer(max_session_s=5)
        await server.start()
        sessions: list[Echo] = []

        def factory(ticket, emit):
            sessions.append(Echo(ticket, emit))
            return sessions[-1]

        ticket = ticket_for(context_of(handshake("/openai/v1/realtime?model=x")), make_config())
        url = f"ws://127.0.0.1:{server.port}/openai/v1/realtime"
        try:
            async with connect(url, additional_headers={TICKET_HEADER: server.admit(ticket, factory)}) as ws:
                created = json.loads(await ws.recv())
                await ws.send("x" * 10)
                echoed = json.loads(await ws.recv())
                assert server.active == 1
            async with connect(url, additional_headers={TICKET_HEADER: "nope"}) as ws:
                await ws.wait_closed()
                refused = ws.close_code
            for _ in range(50):
                if server.active == 0:
                    break
                await asyncio.sleep(0.02)
            return created, echoed, refused, sessions[0].closed, server.active
        finally:
            await server.stop()

    created, echoed, refused, closed, active = asyncio.run(scenario())
    assert created == {"type": "session.created", "flavour": GA} and echoed == {"type": "echo", "size": 10}
    assert refused == 1008 and closed and active == 0
