"""Intake: bodies judged from the head, compressed bodies decoded within the limit, and each
client connection read within its bounds (the guard, driven here with mitmproxy's own HTTP
layer and parser, without a proxy)."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import brotli
import pytest
from mitmproxy import http
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode
from mitmproxy.test import taddons, tflow
from unit_support import API_KEY, chat_path, json_of, make_config, make_flow

from aoai.runtime import bounds, intake, internals, routes
from aoai.runtime.intake import zstd
from aoai.stages.auth import Auth
from aoai.stages.intake import Intake

MiB = 1024 * 1024
BODY = b'{"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}'
AUDIO = "/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21"


# -- plain functions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coding, encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda d: zlib.compress(d)[2:-4]),  # bare deflate data, as some clients send it
        ("br", brotli.compress),
        ("zstd", lambda d: zstd.compress(d)),
    ],
)
def test_each_coding_decodes_within_the_limit(coding, encode):
    assert intake.decode(encode(BODY), [coding], len(BODY)) == BODY


@pytest.mark.parametrize(
    "coding, encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", lambda d: brotli.compress(d, quality=5)),
        ("zstd", lambda d: zstd.compress(d)),
    ],
)
def test_a_bomb_stops_at_the_limit_without_inflating(coding, encode):
    bomb = encode(b" " * (16 * MiB))
    assert len(bomb) < MiB
    with pytest.raises(intake.BodyTooLarge):
        intake.decode(bomb, [coding], MiB)
    assert intake.decode(bomb[:0] + encode(b" " * MiB), [coding], MiB) == b" " * MiB  # exactly the limit is fine


def test_layered_codings_and_gzip_members():
    layered = brotli.compress(gzip.compress(BODY))  # gzip applied first, then br
    assert intake.decode(layered, intake.codings_of("gzip, br"), 10_000) == BODY
    assert intake.decode(gzip.compress(BODY) + gzip.compress(BODY), ["gzip"], 10_000) == BODY * 2
    assert intake.decode(gzip.compress(BODY) + b"\0\0\0", ["gzip"], 10_000) == BODY  # zero padding
    assert intake.decode(zstd.compress(BODY) + zstd.compress(BODY), ["zstd"], 10_000) == BODY * 2  # two frames


@pytest.mark.parametrize(
    "coding, data",
    [
        ("gzip", gzip.compress(BODY, mtime=0)[:-12]),
        ("gzip", b"not gzip at all"),
        ("deflate", b"\x00\x01"),
        ("br", brotli.compress(BODY)[:-3]),
        ("zstd", b"not zstd data"),
        ("zstd", zstd.compress(b"x" * 100)[:4] + b"\xff" * 20),
        ("zstd", zstd.compress(BODY)[:-6]),  # cut short mid-frame
    ],
)
def test_data_that_is_not_its_coding_is_undecodable(coding, data):
    with pytest.raises(intake.Undecodable) as caught:
        intake.decode(data, [coding], 10_000)
    assert caught.value.coding == coding


def test_codings_named():
    assert intake.codings_of("gzip") == ["gzip"]
    assert intake.codings_of(" X-GZIP , identity, zstd") == ["gzip", "zstd"]
    assert intake.codings_of("identity") == []
    with pytest.raises(intake.UnsupportedCoding) as caught:
        intake.codings_of("gzip, compress")
    assert caught.value.coding == "compress"


def test_declared_length():
    def request(headers: dict, version: str = "HTTP/1.1", method: str = "POST") -> http.Request:
        r = tflow.treq(method=method.encode(), http_version=version.encode())
        r.headers.clear()
        for k, v in headers.items():
            r.headers[k] = v
        return r

    assert intake.declared_length(request({"Content-Length": "123"})) == 123
    assert intake.declared_length(request({"transfer-encoding": "chunked"})) is None
    assert intake.declared_length(request({})) == 0
    assert intake.declared_length(request({"content-length": "x"})) is None
    assert intake.declared_length(request({}, "HTTP/2.0")) is None  # a stream says it in its frames
    assert intake.declared_length(request({}, "HTTP/2.0", "GET")) == 0
    assert intake.declared_length(request({"content-length": "7"}, "HTTP/2.0")) == 7


def test_limits_by_route():
    table = routes.TABLE
    b = bounds.Bounds(max_body_bytes=1000)
    chat = table.resolve("POST", chat_path()).route
    audio = table.resolve("POST", AUDIO).route
    assert intake.body_limit(chat, b) == 1000
    assert intake.body_limit(audio, b) == audio.max_body == 25 * MiB
    assert intake.body_limit(None, b) == intake.SMALL_BODY
    assert intake.largest_limit(table.routes, b) == max(r.max_body for r in table.routes)
    assert intake.largest_limit(table.routes, bounds.Bounds(max_body_bytes=2**40)) == 2**40


def test_document_intelligence_takes_larger_documents_and_refuses_with_its_own_400():
    analyze = routes.TABLE.resolve("POST", "/documentintelligence/documentModels/prebuilt-read:analyze").route
    b = bounds.Bounds(max_body_bytes=1000, doc_intelligence_body_bytes=5000)
    assert intake.body_limit(analyze, b) == 5000
    assert intake.largest_limit(routes.TABLE.routes, bounds.Bounds(doc_intelligence_body_bytes=2**30)) == 2**30
    refused = intake.too_large(analyze, 5000, None, 6000)
    assert refused.status_code == 400
    assert json_of(refused)["error"]["innererror"]["code"] == "InvalidContentLength"


def test_the_413_speaks_as_the_routes_checks_do():
    chat = routes.TABLE.resolve("POST", chat_path()).route
    audio = routes.TABLE.resolve("POST", AUDIO).route
    assert json_of(intake.too_large(chat, 10, None)) == {
        "error": {"code": "RequestEntityTooLarge", "message": "The request body is larger than the 10 bytes allowed."}
    }
    error = json_of(intake.too_large(audio, 10, None, 25))["error"]
    assert error["message"] == "Maximum content size limit (10) exceeded (25 bytes read)"
    assert error["type"] == "server_error"
    assert intake.unsupported_coding("compress", None).headers["accept-encoding"] == "gzip, deflate, br, zstd"


def test_a_capped_body_keeps_up_to_its_limit_then_drops_the_rest():
    overs = []
    body = internals.CappedBody(10, overs.append)
    body += b"12345"
    body += b"67890"
    assert bytes(body) == b"1234567890" and not overs
    body += b"x"
    assert overs == [11] and len(body) == 0 and not body  # what it held is let go
    body += b"y" * 100
    assert overs == [11] and bytes(body) == b"" and body.read == 111
    dropping = internals.CappedBody(0)
    dropping += b"abc"
    assert bytes(dropping) == b""


# -- the stage and auth, without a proxy ------------------------------------------------------


def head_flow(path: str, length: int | None, key: str | None = API_KEY, **headers: str) -> http.HTTPFlow:
    """A flow as it is at requestheaders: a head, no body yet."""
    f = make_flow(path=path, key=key)
    f.request.headers.clear()
    if key is not None:
        f.request.headers["api-key"] = key
    if length is not None:
        f.request.headers["content-length"] = str(length)
    else:
        f.request.headers["transfer-encoding"] = "chunked"
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    f.request.raw_content = None
    return f


def test_a_declared_length_over_the_limit_is_answered_from_the_head():
    config = make_config()
    stage = Intake(config)
    with taddons.context(stage):
        over = head_flow(chat_path(), config.max_body_bytes + 1)
        stage.requestheaders(over)
        assert over.response.status_code == 413
        assert json_of(over.response)["error"]["code"] == "RequestEntityTooLarge"
        fits = head_flow(chat_path(), config.max_body_bytes)
        stage.requestheaders(fits)
        assert fits.response is None
        unknown = head_flow("/no/such/path", intake.SMALL_BODY + 1)
        stage.requestheaders(unknown)
        assert unknown.response.status_code == 413
        audio = head_flow(AUDIO, 20 * MiB)  # an upload route's own limit
        stage.requestheaders(audio)
        assert audio.response is None


def test_with_extensions_a_path_no_route_has_takes_a_json_body(tmp_path):
    stage = Intake(make_config())
    with taddons.context(stage) as tctx:
        tctx.options.add_option("extension_path", str, "", "")
        tctx.configure(stage, extension_path="my_extension.py")
        flow = head_flow("/custom/path", intake.SMALL_BODY + 1)
        stage.requestheaders(flow)
        assert flow.response is None


def test_mitmproxys_body_size_limit_guards_only_where_the_guard_cannot():
    config = make_config()
    stage = Intake(config)
    assert stage.gone == []  # this mitmproxy has all the guard needs
    with taddons.context(proxyserver.Proxyserver(), stage) as tctx:
        tctx.configure(stage)
        assert tctx.options.body_size_limit is None  # (it would parse every request's length again)
    stage.gone = ["HttpStream.request_body_buf (request bodies capped)"]  # as after a mitmproxy upgrade
    with taddons.context(proxyserver.Proxyserver(), stage) as tctx:
        tctx.configure(stage)
        largest = intake.largest_limit(routes.TABLE.routes, config.bounds)
        assert tctx.options.body_size_limit == str(largest)
        stage.client_connected(tflow.tclient_conn())
        assert stage.guards == {}
        tctx.options.update(body_size_limit="1k")  # the user's smaller limit is kept
        stage.configure({"body_size_limit"})
        assert tctx.options.body_size_limit == "1k"


def test_auth_answers_a_large_unauthenticated_body_from_its_head():
    auth = Auth(make_config())
    with taddons.context(auth):
        large = head_flow(chat_path(), 50 * MiB, key=None)
        auth.requestheaders(large)
        assert large.response.status_code == 401
        chunked = head_flow(chat_path(), None, key="wrong")
        auth.requestheaders(chunked)
        assert chunked.response.status_code == 401
        small = head_flow(chat_path(), 100, key=None)  # judged with the body, as before
        auth.requestheaders(small)
        assert small.response is None
        keyed = head_flow(chat_path(), 50 * MiB)
        auth.requestheaders(keyed)
        assert keyed.response is None
        health = head_flow("/++/health", 50 * MiB, key=None)  # open routes need no key
        health.request.method = "GET"
        auth.requestheaders(health)
        assert health.response is None


@pytest.mark.parametrize(
    "name, value",
    [
        (b"api-key", b"\xff\xfekey"),
        (b"Ocp-Apim-Subscription-Key", b"\xc3\x28"),
        (b"Authorization", b"Bearer \xff\xfe"),
        (b"Authorization", b"Bearer eyJ\xff.eyJ\xfe.sig"),
    ],
)
@pytest.mark.parametrize("entra_mode", ["off", "claims"])
def test_key_headers_that_are_not_utf8_get_azures_401(name, value, entra_mode):
    from aoai.runtime import entra

    auth = Auth(make_config(entra=entra.TokenPolicy(mode=entra_mode)))
    flow = make_flow(path=chat_path(), key=None)
    flow.request.headers.fields = flow.request.headers.fields + ((name, value),)
    with taddons.context(auth):
        auth.request(flow)
    assert flow.response.status_code == 401
    assert flow.response.headers["content-type"] == "application/json"


def decode_flow(stage: Intake, coding: str, raw: bytes, path: str | None = None) -> http.HTTPFlow:
    flow = make_flow(path=path or chat_path(), raw=raw, headers={"content-type": "application/json"})
    flow.request.headers["content-encoding"] = coding
    flow.request.raw_content = raw  # as sent: mitmproxy has not decoded it
    flow.request.headers["content-length"] = str(len(raw))
    pending = stage.request(flow)
    if pending is not None:
        asyncio.run(pending)
    return flow


def test_a_compressed_body_is_decoded_for_the_stages_after():
    stage = Intake(make_config())
    with taddons.context(stage):
        flow = decode_flow(stage, "gzip", gzip.compress(BODY))
        assert flow.response is None
        assert flow.request.raw_content == BODY
        assert "content-encoding" not in flow.request.headers
        assert flow.request.headers["content-length"] == str(len(BODY))
        identity = decode_flow(stage, "identity", BODY)
        assert identity.response is None and identity.request.raw_content == BODY


def test_a_compressed_body_past_the_limit_gets_the_413_and_is_dropped():
    config = make_config()
    config.bounds = bounds.Bounds(max_body_bytes=MiB)
    stage = Intake(config)
    with taddons.context(stage):
        flow = decode_flow(stage, "gzip", gzip.compress(b" " * (8 * MiB)))
        assert flow.response.status_code == 413
        assert json_of(flow.response)["error"]["message"] == f"The request body is larger than the {MiB} bytes allowed."
        assert flow.request.raw_content == b""


def test_unsupported_and_undecodable_codings():
    stage = Intake(make_config())
    with taddons.context(stage):
        unsupported = decode_flow(stage, "compress", BODY)
        assert unsupported.response.status_code == 415
        assert json_of(unsupported.response)["error"]["code"] == "UnsupportedMediaType"
        assert "'compress'" in json_of(unsupported.response)["error"]["message"]
        corrupt = decode_flow(stage, "gzip", b"\x1f\x8b not really")
        assert corrupt.response.status_code == 400
        assert json_of(corrupt.response)["error"]["message"].startswith(
            "We could not decode the body of your request as gzip"
        )


# -- the guard, on mitmproxy's own HTTP layer -------------------------------------------------


class FakeTransport:
    def __init__(self):
        self.written, self.eof, self.aborted, self.closed = b"", False, False, False

    def write(self, data):
        self.written += data

    def write_eof(self):
        self.eof = True

    def can_write_eof(self):
        return True

    def is_closing(self):
        return self.aborted or self.closed

    def abort(self):
        self.aborted = True

    def close(self):
        self.closed = True


class FakeWriter:
    def __init__(self):
        self.transport = FakeTransport()

    def write(self, data):
        self.transport.write(data)

    def close(self):
        self.transport.close()


class Connection:
    """A client connection as the guard sees it: mitmproxy's HTTP layer and HTTP/1 parser (fed
    what the client sends), a reader, a writer."""

    def __init__(self, tctx, tls: bool = False):
        client = tflow.tclient_conn()
        client.tls = tls
        if not tls:
            client.tls_version, client.alpn = None, None
        self.client = client
        context = Context(client, tctx.options)
        context.server.address = ("upstream.invalid", 80)
        self.layer = HttpLayer(context, HTTPMode.transparent)
        list(self.layer.handle_event(events.Start()))
        self.reader = asyncio.StreamReader()
        self.io = type("IO", (), {})()
        self.io.reader, self.io.writer = self.reader, FakeWriter()
        self.handler = type("Handler", (), {})()
        self.handler.client = client
        self.handler.layer = self.layer
        self.handler.server_event = self.server_event
        self.commands: list = []

    async def server_event(self, event):
        self.commands += list(self.layer.handle_event(event))

    def parse(self, data: bytes) -> None:
        """mitmproxy handles what its read returned."""
        self.commands += list(self.layer.handle_event(events.DataReceived(self.client, data)))


def guarded(tctx, tls: bool = False, **limits) -> tuple[Connection, internals.ClientGuard]:
    conn = Connection(tctx, tls)
    guard = internals.ClientGuard(conn.handler, conn.io, internals.GuardLimits(**limits))
    return conn, guard


def test_an_idle_connection_has_no_deadline_and_a_head_starts_its_clock():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx, header_timeout=5)
            conn.reader.feed_data(b"GET /++/health HTTP/1.1\r\nhost: x\r\n\r\n")
            conn.parse(await guard.read(65535))
            assert guard.deadline is not None  # the first bytes began a head
            read = asyncio.ensure_future(guard.read(65535))
            await asyncio.sleep(0)
            assert guard.phase == internals.WAITING and guard.deadline is None  # awaiting its answer
            read.cancel()

    asyncio.run(scenario())


def test_a_slow_head_gets_the_408_written_on_a_plain_connection():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx, header_timeout=5)
            conn.reader.feed_data(b"POST /openai/deployments/gpt-4o/chat/completions HTTP/1.1\r\nhost: x\r\n")
            conn.parse(await guard.read(65535))
            pending = asyncio.ensure_future(guard.read(65535))
            await asyncio.sleep(0)
            assert guard.phase == internals.HEAD
            guard.expire(guard.deadline + 0.1)
            written = conn.io.writer.transport.written
            assert written.startswith(b"HTTP/1.1 408 ") and b'"RequestTimeout"' in written
            assert conn.io.writer.transport.eof  # the answer is complete; the client may close
            conn.reader.feed_eof()
            assert await pending == b""  # mitmproxy sees the end and closes

    asyncio.run(scenario())


def test_a_head_past_its_bound_is_never_read_past_it():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx, max_head=1000)
            head = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n"
            conn.reader.feed_data(head)
            conn.reader.feed_eof()
            total = 0
            for _ in range(10):
                data = await guard.read(65535)
                if not data or conn.io.writer.transport.written:
                    break
                total += len(data)
                conn.parse(data)
                assert total <= 1001  # never more than the bound (and one byte to know it is passed)
            assert conn.io.writer.transport.written.startswith(b"HTTP/1.1 431 ")
            assert guard.discarding

    asyncio.run(scenario())


def test_a_body_too_large_ends_at_the_parser_and_the_answer_leaves_at_once():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx)
            conn.reader.feed_data(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n" + b"a" * 1000)
            conn.parse(await guard.read(65535))
            flow = conn.layer.streams[1].flow
            answer = intake.too_large(None, 10, flow.request)
            await guard.end_body(flow, answer, in_hook=True)
            await asyncio.sleep(0)
            assert flow.response is answer and answer.headers["connection"] == "close"
            assert guard.discarding  # what the client still sends never reaches mitmproxy
            assert conn.layer.connections[conn.client].state.__func__ is internals.Http1Connection.wait
            hooks = [type(c).__name__ for c in conn.commands]
            assert hooks[0] == "HttpRequestHeadersHook"  # (the request hook follows once that completes)

    asyncio.run(scenario())


def test_a_slow_body_is_answered_408_and_ended():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx, body_timeout=5)
            conn.reader.feed_data(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            conn.parse(await guard.read(65535))
            pending = asyncio.ensure_future(guard.read(65535))
            await asyncio.sleep(0)
            assert guard.phase == internals.BODY
            guard.expire(guard.deadline + 0.1)
            await asyncio.sleep(0)
            flow = conn.layer.streams[1].flow
            assert flow.response.status_code == 408
            assert conn.layer.connections[conn.client].state.__func__ is internals.Http1Connection.wait
            pending.cancel()

    asyncio.run(scenario())


def test_a_tls_connection_is_closed_where_nothing_can_be_written():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx, tls=True)
            conn.reader.feed_data(b"GET / HTTP/1.1\r\nhost: x\r\n")
            conn.parse(await guard.read(65535))
            pending = asyncio.ensure_future(guard.read(65535))
            await asyncio.sleep(0)
            guard.expire(guard.deadline + 0.1)
            assert conn.io.writer.transport.aborted and conn.io.writer.transport.written == b""
            pending.cancel()

    asyncio.run(scenario())


def test_a_client_sending_far_ahead_of_its_answer_waits_for_it():
    async def scenario():
        with taddons.context(proxyserver.Proxyserver()) as tctx:
            conn, guard = guarded(tctx, max_head=100)
            conn.reader.feed_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            conn.parse(await guard.read(65535))
            conn.reader.feed_data(b"x" * 500)
            conn.parse(await guard.read(65535))  # sent before its answer: mitmproxy keeps it
            assert guard.phase == internals.WAITING
            pending = asyncio.ensure_future(guard.read(65535))
            conn.reader.feed_data(b"y" * 500)
            await asyncio.sleep(0.1)
            assert not pending.done()  # nothing more is read while 500 bytes wait for the answer
            http1 = conn.layer.connections[conn.client]
            # The answer left: mitmproxy's parser moves on to what was sent ahead (here: consumed).
            http1.buf.maybe_extract_at_most(len(http1.buf))
            http1.state = http1.read_headers
            assert await asyncio.wait_for(pending, 1) == b"y" * 101  # a new head: read within its bound
            assert guard.phase == internals.HEAD

    asyncio.run(scenario())
