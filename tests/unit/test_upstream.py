"""Record mode's upstream: what each fault tells the client, which headers go each way, which
server errors pass as Azure's, and how a live stream is relayed (and broken off)."""

import asyncio
import socket
import ssl

import httpx
import pytest
from mitmproxy import exceptions

from aoai.runtime import upstream
from aoai.runtime.config import SimulatorConfig
from aoai.runtime.startup import Startup
from aoai.runtime.streams import StreamPlan, StreamServer
from aoai.stages.record import ForwardTarget

ENDPOINT = "https://myres.openai.azure.com"


def caused(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


def test_origin_and_endpoint_checks():
    assert upstream.origin("https://myres.openai.azure.com/openai/") == ENDPOINT
    assert upstream.origin(" http://127.0.0.1:9/ ") == "http://127.0.0.1:9"
    assert upstream.is_endpoint("https://myres.openai.azure.com/")
    assert not upstream.is_endpoint("myres.openai.azure.com")
    assert not upstream.is_endpoint("ftp://myres")
    assert not upstream.is_endpoint("https://")


@pytest.mark.parametrize(
    "error, status, message",
    [
        (httpx.ConnectTimeout("timed out"), 504, f"could not connect to {ENDPOINT}: no answer within 60 s"),
        (httpx.ReadTimeout("timed out"), 504, f"{ENDPOINT} did not answer within 60 s"),
        # anyio reports a refused connection as "All connection attempts failed", caused by a group.
        (
            caused(
                httpx.ConnectError("All connection attempts failed"),
                caused(
                    OSError("All connection attempts failed"),
                    ExceptionGroup("attempts", [ConnectionRefusedError(111, "Connect call failed ('1.2.3.4', 443)")]),
                ),
            ),
            502,
            f"could not connect to {ENDPOINT}: connection refused",
        ),
        (
            caused(
                httpx.ConnectError("[Errno -2] Name or service not known"),
                socket.gaierror(-2, "Name or service not known"),
            ),
            502,
            f"could not connect to {ENDPOINT}: name or service not known",
        ),
        (
            caused(
                httpx.ConnectError("[SSL] ..."),
                ssl.SSLCertVerificationError(
                    1,
                    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1000)",
                ),
            ),
            502,
            f"TLS handshake with {ENDPOINT} failed: certificate verify failed: self-signed certificate",
        ),
        (
            caused(
                httpx.ConnectError("[SSL] ..."),
                ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)"),
            ),
            502,
            f"TLS handshake with {ENDPOINT} failed: wrong version number",
        ),
        (
            caused(httpx.ReadError("reset"), ConnectionResetError(104, "Connection reset by peer")),
            502,
            f"{ENDPOINT} broke off the answer: connection reset by peer",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            502,
            f"{ENDPOINT} broke off the answer: it closed the connection",
        ),
    ],
)
def test_each_fault_names_its_cause(error, status, message):
    fault = upstream.failed(error, ENDPOINT, 60)
    assert (fault.status, fault.message) == (status, message)
    assert fault.code == ("GatewayTimeout" if status == 504 else "BadGateway")


def test_a_verify_failure_names_what_was_wrong():
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    fault = upstream.failed(caused(httpx.ConnectError("x"), error), ENDPOINT, 60)
    assert fault.message == f"TLS handshake with {ENDPOINT} failed: certificate verify failed: self-signed certificate"


@pytest.mark.parametrize(
    "status, content_type, body, passes",
    [
        (200, "text/plain", b"fine", True),  # not a server error: not judged
        (404, "text/html", b"<html/>", True),
        (500, "application/json", b'{"error": {"code": "InternalServerError", "message": "x"}}', True),
        (503, "text/html", b"<html>Service Unavailable</html>", False),
        (502, "application/json", b"[1, 2]", False),  # JSON, but not an error object
        (504, "", b"", False),
    ],
)
def test_only_server_errors_that_are_not_json_objects_are_replaced(status, content_type, body, passes):
    fault = upstream.bad_answer(status, content_type, body, ENDPOINT, "Service Unavailable")
    assert (fault is None) == passes
    if fault is not None:
        assert fault.status == 502 and fault.code == "BadGateway"
        assert fault.message.startswith(f"{ENDPOINT} answered {status} Service Unavailable with ")


def test_an_html_gateway_page_is_named_by_status_and_type():
    fault = upstream.bad_answer(503, "text/html; charset=utf-8", b"<html/>", ENDPOINT, "Service Unavailable")
    assert fault.message == f"{ENDPOINT} answered 503 Service Unavailable with text/html, not Azure's JSON"


def test_request_headers_drop_credentials_and_framing_and_keep_the_clients_encoding():
    sent = [
        ("Host", "localhost:8000"),
        ("api-key", "simulator-key"),
        ("Authorization", "Bearer t"),
        ("Content-Type", "application/json"),
        ("Content-Length", "12"),
        ("Connection", "keep-alive"),
        ("x-ms-client-request-id", "abc"),
        ("Accept-Encoding", "gzip"),
    ]
    out = upstream.request_headers(sent, ("api-key", "authorization"))
    assert out == [("Content-Type", "application/json"), ("x-ms-client-request-id", "abc"), ("accept-encoding", "gzip")]
    # No accept-encoding from the client: ask for none, rather than httpx's default gzip.
    assert upstream.request_headers([("content-type", "application/json")]) == [
        ("content-type", "application/json"),
        ("accept-encoding", "identity"),
    ]


def test_response_headers_drop_framing_and_with_decoded_bodies_the_encoding():
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Encoding", b"gzip"),
        (b"apim-request-id", b"r1"),
        (b"Connection", b"close"),
    ]
    assert upstream.response_headers(raw) == [
        (b"Content-Type", b"application/json"),
        (b"Content-Encoding", b"gzip"),
        (b"apim-request-id", b"r1"),
    ]
    assert upstream.response_headers(raw, decoded=True) == [
        (b"Content-Type", b"application/json"),
        (b"apim-request-id", b"r1"),
    ]


class Source:
    """A live source yielding `chunks`, then raising `error` if given."""

    def __init__(self, chunks, error=None):
        self.chunks, self.error, self.closed = chunks, error, False

    async def __aiter__(self):
        for chunk in self.chunks:
            await asyncio.sleep(0.01)
            yield chunk
        if self.error is not None:
            raise self.error

    async def aclose(self):
        self.closed = True


async def relay(source: Source) -> tuple[StreamPlan, bytes]:
    """Play a plan with a live source onto one end of a socket pair; what the other end got."""
    client, proxy = socket.socketpair()
    reader, client_writer = await asyncio.open_connection(sock=client)
    proxy_reader, writer = await asyncio.open_connection(sock=proxy)
    plan = StreamPlan({"content-type": "text/event-stream"}, [], source=source)
    await StreamServer()._play(plan, writer, "direct")
    writer.close()
    received = await asyncio.wait_for(reader.read(), 5)
    client_writer.close()
    proxy_reader.feed_eof()
    return plan, received


def test_a_live_source_is_relayed_chunk_by_chunk_and_noted():
    source = Source([b"data: 1\n\n", b"data: [DONE]\n\n"])
    plan, received = asyncio.run(relay(source))
    assert received.startswith(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream")
    assert received.endswith(b"9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
    assert plan.completed and source.closed
    assert [data for _, data in plan.frames] == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    assert plan.frames[0][0] <= plan.frames[1][0]


def test_a_source_that_breaks_breaks_the_clients_stream_off():
    source = Source([b"data: 1\n\n"], error=httpx.ReadError("reset"))
    plan, received = asyncio.run(relay(source))
    assert b"data: 1" in received and not received.endswith(b"0\r\n\r\n")
    assert not plan.completed and source.closed


def test_record_mode_needs_an_endpoint_or_a_forwarder():
    config = SimulatorConfig(mode="record")
    startup = Startup()
    startup.running = True  # at run time a refusal is an option error (PATCH /++/config: 400)
    target = ForwardTarget(config, startup)
    with pytest.raises(exceptions.OptionsError, match=r"^AZURE_OPENAI_ENDPOINT: record mode forwards"):
        target.configure({"simulator_mode"})
    target.configure({"log_level"})  # unrelated options: not checked
    config.recording.forwarders.append(lambda context: None)
    target.configure({"simulator_mode"})
    config.recording.forwarders.clear()
    config.azure_openai_endpoint = ENDPOINT
    target.configure({"simulator_mode"})
    config.azure_openai_endpoint, config.mode = "", "generate"
    target.configure({"simulator_mode"})
