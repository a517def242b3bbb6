"""What a request may bring, bounded before it is buffered, against a real mitmdump: bodies
too large answered from the head (declared, chunked, compressed), heads too large or too
slow, bodies trickled, keys without a body read; over plain HTTP/1.1, TLS and HTTP/2. Each
case checks that the simulator's memory stays put and that it answers the next request."""

from __future__ import annotations

import gzip
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest
from conftest import API_VERSION, start_simulator
from helpers import assert_azure_error, assert_still_serving

from aoai.runtime.intake import zstd

MiB = 1024 * 1024
CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}"
HEADER_TIMEOUT, BODY_TIMEOUT = 1, 2  # seconds, small so the slow cases end quickly
GROWTH_MIB = 30  # what one hostile request may add to the simulator's memory, at most


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    started = start_simulator(
        tmp_path_factory.mktemp("intake"),
        {
            "SIMULATOR_LATENCY": "false",
            "SIMULATOR_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "SIMULATOR_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        },
    )
    assert_still_serving(started)  # warm: what the first request loads is not counted below
    yield started
    started.stop()


def rss_mib(sim) -> float:
    for line in Path(f"/proc/{sim.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def bounded(sim) -> Iterator:
    """The simulator, checked after the test: its memory barely grew, and it still answers."""
    before = rss_mib(sim)
    yield sim
    grown = rss_mib(sim) - before
    assert grown < GROWTH_MIB, f"the simulator grew by {grown:.0f} MiB"
    assert_still_serving(sim)


def connect(sim, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", sim.port))
    s.settimeout(timeout)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the simulator sends until it closes the connection."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def read_response(s: socket.socket) -> bytes:
    """One response with a content-length, whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536) or b"!"
    top, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in top.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(65536) or b"!"
    return top + b"\r\n\r\n" + body


def head(path: str = CHAT, key: str | None = "", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: localhost", "content-type: application/json"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if key is not None:
        lines.append(f"api-key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_and_json(raw: bytes) -> tuple[int, dict[str, str], dict]:
    import json

    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_declared_length_over_the_limit_gets_the_413_before_the_body_is_sent(bounded):
    with connect(bounded) as s:
        s.sendall(head(key=bounded.key, content_length=str(50 * MiB)))  # and not one byte of body
        started = time.monotonic()
        status, headers, body = status_and_json(read_until_closed(s))
    assert status == 413 and headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == "RequestEntityTooLarge"
    assert body["error"]["message"] == "The request body is larger than the 10485760 bytes allowed."
    assert time.monotonic() - started < 2  # answered at once, not after a timeout


def test_a_client_still_uploading_gets_the_413(bounded):
    # httpx sends the whole body before it reads; the simulator drops it as it comes.
    response = httpx.post(
        bounded.url + CHAT, headers={"api-key": bounded.key}, content=(b"x" * MiB for _ in range(60)), timeout=30
    )
    assert_azure_error(response, 413, "RequestEntityTooLarge")


def test_a_length_past_every_route_limit_gets_azures_json_too(bounded):
    with connect(bounded) as s:
        s.sendall(head(key=bounded.key, content_length=str(10**12)))
        status, _, body = status_and_json(read_until_closed(s))
    assert status == 413 and body["error"]["code"] == "RequestEntityTooLarge"


def test_a_document_too_large_gets_document_intelligences_400_before_it_is_sent(bounded):
    path = "/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30"
    with connect(bounded) as s:
        s.sendall(
            head(path, key=bounded.key, content_length=str(60 * MiB)).replace(b"application/json", b"application/pdf")
        )
        status, _, body = status_and_json(read_until_closed(s))
    assert status == 400 and body["error"]["innererror"]["code"] == "InvalidContentLength"


def test_a_chunked_body_is_cut_off_at_the_limit(bounded):
    with connect(bounded) as s:
        s.sendall(head(key=bounded.key, transfer_encoding="chunked"))
        chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
        try:
            for _ in range(3200):  # 200 MiB; past the limit what comes is read and dropped, then closed
                s.sendall(chunk)
        except OSError:
            pass
        status, headers, body = status_and_json(read_until_closed(s))
    assert status == 413 and headers["connection"] == "close"
    assert body["error"]["code"] == "RequestEntityTooLarge"


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MiB
    return b"".join(compressor.compress(block) for _ in range(size // MiB)) + compressor.flush()


@pytest.mark.parametrize(
    "coding, bomb",
    [
        ("gzip", lambda: gzip_bomb(200 * MiB)),
        ("br", lambda: brotli.compress(b" " * (200 * MiB), quality=1)),
        ("zstd", lambda: zstd.compress(b" " * (200 * MiB), level=1)),
    ],
)
def test_a_compressed_body_is_bounded_by_its_decoded_size(bounded, coding, bomb):
    data = bomb()
    assert len(data) < MiB  # small on the wire, 200 MiB decoded
    response = httpx.post(
        bounded.url + CHAT,
        content=data,
        timeout=30,
        headers={"api-key": bounded.key, "content-type": "application/json", "content-encoding": coding},
    )
    assert_azure_error(response, 413, "RequestEntityTooLarge")


def test_a_compressed_body_within_the_limit_is_read_and_other_codings_are_refused(bounded):
    body = b'{"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 3}'
    sent = {"api-key": bounded.key, "content-type": "application/json"}
    for coding, data in (
        ("gzip", gzip.compress(body)),
        ("br", brotli.compress(body)),
        ("deflate", zlib.compress(body)),
        ("zstd", zstd.compress(body)),
    ):
        response = httpx.post(bounded.url + CHAT, content=data, headers={**sent, "content-encoding": coding})
        assert response.status_code == 200, (coding, response.text)
    refused = httpx.post(bounded.url + CHAT, content=body, headers={**sent, "content-encoding": "compress"})
    assert_azure_error(refused, 415, "UnsupportedMediaType")
    assert refused.headers["accept-encoding"] == "gzip, deflate, br, zstd"
    broken = httpx.post(
        bounded.url + CHAT, content=b"\x1f\x8b\x08garbage", headers={**sent, "content-encoding": "gzip"}
    )
    assert broken.status_code == 400 and "as gzip" in broken.json()["error"]["message"]


def test_a_head_too_large_gets_the_431_and_is_never_buffered_whole(bounded):
    with connect(bounded) as s:
        try:
            s.sendall(b"GET /++/health HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * (20 * MiB) + b"\r\n\r\n")
        except OSError:
            pass  # the simulator answered and closed while this was still sending
        status, headers, body = status_and_json(read_until_closed(s))
    assert status == 431 and headers["connection"] == "close"
    assert body["error"]["code"] == "RequestHeaderFieldsTooLarge"
    assert "65536 bytes" in body["error"]["message"]


def test_slow_headers_are_closed_after_the_header_timeout(bounded):
    with connect(bounded) as s:
        started = time.monotonic()
        s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nhost: x\r\n")  # never finished
        status, _headers, body = status_and_json(read_until_closed(s))
        waited = time.monotonic() - started
    assert status == 408 and body["error"]["code"] == "RequestTimeout"
    assert HEADER_TIMEOUT <= waited < HEADER_TIMEOUT + 2


def test_a_body_trickled_byte_by_byte_is_closed_after_the_body_timeout(bounded):
    with connect(bounded) as s:
        s.sendall(head(key=bounded.key, content_length="1000"))
        started = time.monotonic()
        answer = b""
        try:
            for _ in range(20):  # one byte every 0.25 s: 1000 bytes would take four minutes
                s.sendall(b"{")
                s.settimeout(0.25)
                try:
                    answer += s.recv(65536)
                except TimeoutError:
                    continue
                if answer:
                    break
        except OSError:
            pass
        s.settimeout(10)
        answer += read_until_closed(s)
        waited = time.monotonic() - started
    status, _, body = status_and_json(answer)
    assert status == 408 and "body" in body["error"]["message"]
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + 2.5


def test_idle_keep_alive_connections_are_not_closed_by_the_header_timeout(sim):
    with connect(sim) as s:
        for pause in (HEADER_TIMEOUT + 0.5, 0):  # idle between requests for longer than a head may take
            s.sendall(b"GET /++/health HTTP/1.1\r\nhost: x\r\n\r\n")
            assert read_response(s).startswith(b"HTTP/1.1 200")
            time.sleep(pause)


def test_an_unauthenticated_large_body_gets_the_401_without_being_read(bounded):
    with connect(bounded) as s:
        s.sendall(head(key=None, content_length=str(200 * MiB)))
        status, headers, body = status_and_json(read_until_closed(s))
    assert status == 401 and headers["connection"] == "close"
    assert body["error"]["message"].startswith("Access denied due to missing subscription key.")
    uploading = httpx.post(
        bounded.url + CHAT, headers={"api-key": "wrong"}, content=(b"x" * MiB for _ in range(60)), timeout=30
    )
    assert_azure_error(uploading, 401, "401")


@pytest.mark.parametrize("header", [b"api-key", b"Ocp-Apim-Subscription-Key", b"Authorization"])
def test_key_headers_that_are_not_utf8_get_the_401(bounded, header):
    value = b"Bearer \xff\xfe\xfd" if header == b"Authorization" else b"\xff\xfe\xfd"
    body = b'{"messages": [{"role": "user", "content": "Hello!"}]}'
    with connect(bounded) as s:
        s.sendall(head(key=None, content_length=str(len(body)))[:-2] + header + b": " + value + b"\r\n\r\n" + body)
        raw = read_response(s)
    assert raw.startswith(b"HTTP/1.1 401 ")


class H2First(ssl.SSLContext):
    """Offers h2 first (httpx lists http/1.1 first, and mitmproxy honours the client's order)."""

    def set_alpn_protocols(self, protocols):
        super().set_alpn_protocols(sorted(protocols, key=lambda p: p != "h2"))


def insecure(h2: bool) -> ssl.SSLContext:
    context = H2First(ssl.PROTOCOL_TLS_CLIENT) if h2 else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("h2", [False, True], ids=["tls-http1.1", "http2"])
def test_tls_and_http2_clients_get_the_413_and_401_too(bounded, h2):
    url = f"https://127.0.0.1:{bounded.port}{CHAT}"
    with httpx.Client(http2=h2, verify=insecure(h2), timeout=30) as client:
        for key, length in ((bounded.key, 50 * MiB), ("wrong", 50 * MiB)):
            response = client.post(
                url,
                headers={"api-key": key, "content-length": str(length)},
                content=(b"x" * MiB for _ in range(length // MiB)),
            )
            assert response.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
            assert_azure_error(response, 413 if key == bounded.key else 401)
        chunked = client.post(url, headers={"api-key": bounded.key}, content=(b"x" * MiB for _ in range(60)))
        assert_azure_error(chunked, 413, "RequestEntityTooLarge")
        huge = client.post(
            url,
            headers={"api-key": bounded.key, "content-length": str(200 * MiB)},
            content=(b"x" * MiB for _ in range(200)),
        )  # past every route's limit
        assert_azure_error(huge, 413, "RequestEntityTooLarge")


def tls_connect(sim) -> ssl.SSLSocket:
    s = insecure(False).wrap_socket(socket.create_connection(("127.0.0.1", sim.port)), server_hostname="localhost")
    s.settimeout(10)
    return s


def test_over_tls_slow_heads_are_closed_and_trickled_bodies_get_the_408(bounded):
    # Without a request there is nothing mitmproxy can answer through TLS: the connection closes.
    with tls_connect(bounded) as s:
        started = time.monotonic()
        s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nhost: x\r\n")
        assert s.recv(65536) == b""
        assert HEADER_TIMEOUT <= time.monotonic() - started < HEADER_TIMEOUT + 2
    with tls_connect(bounded) as s:
        s.sendall(head(key=bounded.key, content_length="1000"))
        started = time.monotonic()
        s.settimeout(0.25)
        answer = b""
        while not answer and time.monotonic() - started < BODY_TIMEOUT + 3:
            s.sendall(b"{")  # each byte a TLS record: the next one after the timeout lets the 408 out
            try:
                answer = s.recv(65536)
            except TimeoutError:
                pass
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert BODY_TIMEOUT <= time.monotonic() - started < BODY_TIMEOUT + 2.5


def test_an_http2_stream_trickling_its_body_closes_the_connection(bounded):
    import h2.config
    import h2.connection

    context = insecure(True)
    context.set_alpn_protocols(["h2"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", bounded.port)), server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "h2"
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1,
            [
                (":method", "POST"),
                (":path", CHAT),
                (":authority", "localhost"),
                (":scheme", "https"),
                ("api-key", bounded.key),
                ("content-length", "1000"),
            ],
        )
        s.sendall(client.data_to_send())
        started = time.monotonic()
        s.settimeout(0.25)
        closed = False
        while not closed and time.monotonic() - started < BODY_TIMEOUT + 3:
            try:
                client.send_data(1, b"{")
                s.sendall(client.data_to_send())
                closed = s.recv(65536) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
    # One stream cannot be reset from outside mitmproxy's HTTP/2 layer: the connection closes.
    assert closed and BODY_TIMEOUT <= time.monotonic() - started < BODY_TIMEOUT + 2.5
