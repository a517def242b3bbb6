"""The streaming stage: a plan played onto the client's own connection, or handed to the
loopback server when only mitmproxy's layers can carry it."""

import asyncio
import socket
import time
from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons
from unit_support import chat_path, make_flow, run

from aoai.runtime.state import context_for, context_of
from aoai.runtime.streams import PLAN_HEADER, StreamPlan, StreamServer
from aoai.stages import streaming
from aoai.stages.streaming import Streaming

FRAMES = [
    (0.0, b'data: {"a":1}\n\n'),
    (0.05, b'data: {"b":2}\n\n'),
    (0.10, b'data: {"c":3}\n\n'),
    (0.10, b"data: [DONE]\n\n"),
]


def planned_flow(server: StreamServer, frames=FRAMES) -> tuple:
    flow = make_flow("POST", chat_path(), {"messages": [], "stream": True})
    plan = StreamPlan({"content-type": "text/event-stream; charset=utf-8", "apim-request-id": "r1"}, list(frames))
    server.route(plan)
    context_for(flow).stream = plan
    return flow, plan


_OPEN: list = []  # the unused halves: a StreamWriter closes its socket when collected


async def connected_pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The client's end (a reader) and the proxy's end (a writer) of one real socket pair."""
    client, proxy = socket.socketpair()
    reader, client_writer = await asyncio.open_connection(sock=client)
    proxy_reader, writer = await asyncio.open_connection(sock=proxy)
    _OPEN[:] = [client_writer, proxy_reader]
    return reader, writer


def test_a_plan_is_written_to_the_clients_connection_frame_by_frame(monkeypatch):
    server = StreamServer()
    stage = Streaming(server)
    flow, plan = planned_flow(server)
    context_of(flow).quota_headers = {"x-ratelimit-remaining-requests": "9"}

    async def main():
        reader, writer = await connected_pair()
        io = SimpleNamespace(writer=writer)
        monkeypatch.setattr(streaming, "client_connection", lambda f: io)
        received: list[tuple[float, bytes]] = []

        async def read():
            while not received or not received[-1][1].endswith(b"0\r\n\r\n"):
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data, "the connection closed before the end of the body"
                received.append((time.monotonic(), data))
                first_seen.append(time.time())

        with taddons.context(stage):
            await asyncio.gather(stage.request(flow), read())
        return io, writer, received

    first_seen: list[float] = []  # wall-clock time of each read, as mitmproxy stamps flows
    before = time.time()
    io, writer, received = run(main())
    wire = b"".join(data for _, data in received)
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head and b"apim-request-id: r1" in head
    assert b"x-ratelimit-remaining-requests: 9" in head  # the quota headers, as mitmproxy would add them
    assert body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    # The last frame left no sooner than it was due (deadlines count from routing here, as the
    # request arrived then): paced, not sent at once.
    last = next(t for t, data in received if b'"c":3' in data)
    assert last - plan.routed_at >= 0.099
    # The flow holds what was sent, for mitmweb and the hooks after this one.
    assert flow.response.status_code == 200
    assert flow.response.content == b"".join(data for _, data in FRAMES)
    assert flow.response.headers["x-ratelimit-remaining-requests"] == "9"
    assert plan.completed and server.active == 0 and not server.plans
    # mitmproxy runs responseheaders for an addon's response and restamps its start then.
    flow.response.timestamp_start = time.time() + 5
    stage.responseheaders(flow)
    # The stream's start: stamped before its first bytes reached the client. (Not compared with
    # the end: on a loaded machine a stream that starts late catches up and ends at once.)
    assert flow.response.timestamp_start == context_of(flow).played_at
    assert before <= flow.response.timestamp_start <= first_seen[0]
    assert flow.response.timestamp_start <= flow.response.timestamp_end
    assert not flow.response.stream
    # mitmproxy's own copy of the response is dropped until the client's next request.
    assert io.writer is not writer and io.writer.is_closing()
    io.writer.write(b"HTTP/1.1 200 OK\r\n")  # dropped, not sent
    following = make_flow("GET", "/")
    following.client_conn = flow.client_conn
    stage.requestheaders(following)
    assert io.writer is writer


def test_a_client_that_goes_away_ends_its_stream_early(monkeypatch):
    server = StreamServer()
    stage = Streaming(server)
    frames = [(i * 0.02, b'data: {"n":%d}\n\n' % i) for i in range(50)]
    flow, plan = planned_flow(server, frames)

    async def main():
        reader, writer = await connected_pair()
        monkeypatch.setattr(streaming, "client_connection", lambda f: SimpleNamespace(writer=writer))
        played = asyncio.ensure_future(stage.request(flow))
        await reader.read(65536)
        writer.transport.close()  # as when mitmproxy sees the client's socket close
        started = time.monotonic()
        await played
        return time.monotonic() - started

    took = run(main())
    assert took < 0.2  # not the 1 s the rest of the stream would have taken
    assert not plan.completed and 0 < plan.sent < len(frames)
    assert server.active == 0
    assert flow.response.content == b"".join(data for _, data in frames[: plan.sent])


def test_without_a_plain_client_connection_the_flow_goes_to_the_loopback_server():
    server = StreamServer()
    server.port = 12345
    stage = Streaming(server)
    flow, plan = planned_flow(server)
    with taddons.context(stage):  # no running proxy: no client socket to write to
        assert stage.request(flow) is None
    assert (flow.request.scheme, flow.request.host, flow.request.port) == ("http", "127.0.0.1", 12345)
    assert server.plans[flow.request.headers[PLAN_HEADER]] is plan


def test_an_extension_watching_responseheaders_keeps_streams_in_mitmproxys_layers(monkeypatch):
    server = StreamServer()
    stage = Streaming(server, lambda: True)
    flow, _ = planned_flow(server)
    monkeypatch.setattr(streaming, "client_connection", lambda f: pytest.fail("must not write directly"))
    with taddons.context(stage):
        assert stage.request(flow) is None
    assert PLAN_HEADER in flow.request.headers


@pytest.mark.parametrize("change", ["none", "tls", "http2"])
def test_only_plain_http1_connections_are_written_directly(change, monkeypatch):
    socket_record = object()  # as if the proxy held this client's socket
    monkeypatch.setattr(streaming.internals, "client_io", lambda f: socket_record)
    flow = make_flow("POST", chat_path())
    if change == "tls":
        flow.client_conn.tls = True
    elif change == "http2":
        flow.request.http_version = "HTTP/2.0"
    expected = socket_record if change == "none" else None
    assert streaming.client_connection(flow) is expected


def test_answered_or_unplanned_flows_are_left_alone():
    server = StreamServer()
    stage = Streaming(server)
    assert stage.request(make_flow("POST", chat_path())) is None


def play_and_read(monkeypatch, plan_frames, cut=False) -> tuple[bytes, StreamPlan]:
    """Play a plan straight onto a socket pair; everything the client got before the end."""
    server = StreamServer()
    stage = Streaming(server)
    flow, plan = planned_flow(server, plan_frames)
    plan.cut = cut

    async def main():
        reader, writer = await connected_pair()
        monkeypatch.setattr(streaming, "client_connection", lambda f: SimpleNamespace(writer=writer))
        played = asyncio.ensure_future(stage.request(flow))
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            try:
                data = await asyncio.wait_for(reader.read(65536), 5)
            except ConnectionError:
                break
            if not data:
                break
            received += data
        await played
        return received

    return run(main()), plan


def test_a_plan_without_frames_is_an_empty_chunked_body(monkeypatch):
    received, plan = play_and_read(monkeypatch, [])
    assert received.endswith(b"\r\n\r\n0\r\n\r\n") and plan.completed


def test_a_cut_stream_breaks_off_without_ending_its_body(monkeypatch):
    received, plan = play_and_read(monkeypatch, FRAMES[:2], cut=True)
    assert b'"b":2' in received and not received.endswith(b"0\r\n\r\n")
    assert not plan.completed and plan.sent == 2


def test_a_client_gone_before_its_stream_ends_is_not_remembered(monkeypatch):
    """mitmproxy says client_disconnected while the stream still plays; the stage must not then
    keep that connection's writer for a next request that never comes (a leak per such client)."""
    from mitmproxy.connection import ConnectionState

    server = StreamServer()
    stage = Streaming(server)
    flow, _plan = planned_flow(server)

    async def main():
        reader, writer = await connected_pair()
        io = SimpleNamespace(writer=writer)
        monkeypatch.setattr(streaming, "client_connection", lambda f: io)
        played = asyncio.ensure_future(stage.request(flow))
        await reader.read(100)  # the head: the stream has begun
        flow.client_conn.state = ConnectionState.CLOSED  # the client left ...
        stage.client_disconnected(flow.client_conn)  # ... and mitmproxy said so
        await played
        return io

    run(main())
    assert flow.client_conn.id not in stage._silenced
    assert flow.response is not None  # what was sent is still the flow's, for mitmweb
