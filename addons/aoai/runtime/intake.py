"""Intake: what a request may bring, judged from its head before its body is read.

Plain functions for the intake stage (stages/intake.py): the body a route takes, the length
a head declares, Azure's answers for a body too large, a head too large or too slow, and a
compressed body decoded within the route's limit (a small gzip body can claim gigabytes).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterable

import brotli

# Python 3.14's zstd module, or its backport (which mitmproxy itself uses) before it.
if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd
from mitmproxy import http

from .. import wire
from ..docintel import service as docintel
from .bounds import Bounds
from .routes import DOCUMENT_INTELLIGENCE, FORM_BODY, Route

KiB, MiB = 1024, 1024 * 1024

# Bodies up to this size are taken without looking anything up: every route takes them, and
# so does a path no route has (it is answered 404; more than this is refused before it is read).
SMALL_BODY = 64 * KiB

CODINGS = ("gzip", "deflate", "br", "zstd")  # the content codings decoded; others get a 415
_ALIASES = {"x-gzip": "gzip"}
_SLICE = 256 * KiB  # decoded bytes produced per step, so the limit is checked as they grow
# zstd frames may ask for a window of up to 128 MiB (the decoder allocates it); a frame whose
# window is larger than this is refused as undecodable. 16 MiB covers zstd's levels up to 19.
ZSTD_MAX_WINDOW_LOG = 24  # 16 MiB


def body_limit(route: Route | None, bounds: Bounds, unknown: int = SMALL_BODY) -> int:
    """The largest body the route takes, in bytes (decoded): an upload route's own limit, the
    configured ones for Document Intelligence and JSON bodies, `unknown` for a path (or
    method) no route has."""
    if route is None:
        return unknown
    if route.family == DOCUMENT_INTELLIGENCE:
        return bounds.doc_intelligence_body_bytes
    return route.max_body or bounds.max_body_bytes


def largest_limit(routes: Iterable[Route], bounds: Bounds) -> int:
    """The largest body any route takes: nothing larger is ever buffered."""
    return max([bounds.max_body_bytes, bounds.doc_intelligence_body_bytes, *(r.max_body for r in routes)])


def header_value(headers: http.Headers, name: bytes) -> bytes | None:
    """The first value of a header (`name` in lower case), read from the raw fields: a tenth of
    what `headers.get` costs, and every request asks."""
    size = len(name)
    for key, value in headers.fields:
        if len(key) == size and key.lower() == name:
            return value
    return None


def declared_length(request: http.Request) -> int | None:
    """The body's length as the head declares it: 0 for none, or None when it is known only
    once the body ends (chunked HTTP/1.1; HTTP/2 without content-length)."""
    length = header_value(request.headers, b"content-length")
    if length is not None:
        try:
            return int(length)
        except ValueError:
            return None  # mitmproxy refuses a malformed length itself (HTTP/1); else unknown
    if request.is_http2 or request.is_http3:
        # A stream says whether a body follows only in its frames; these methods rarely carry one.
        return 0 if request.method in ("GET", "HEAD", "DELETE", "OPTIONS") else None
    return None if header_value(request.headers, b"transfer-encoding") is not None else 0


def too_large(route: Route | None, limit: int, request: http.Request | None, read: int | None = None) -> http.Response:
    """Azure's 413, in the words the route's checks use for a body past `limit` (checks.py);
    Document Intelligence's 400. `read`: the bytes declared or read so far, for upload routes'
    message."""
    if route is not None and route.family == DOCUMENT_INTELLIGENCE:
        error = docintel.too_large()  # Azure's Document Intelligence says it with a 400
        return wire.json_response(error.status, error.body(), request)
    if route is not None and route.body == FORM_BODY:
        size = f"{read} bytes read" if read is not None else "more bytes"
        return wire.openai_error(
            413, f"Maximum content size limit ({limit}) exceeded ({size})", type="server_error", request=request
        )
    return wire.azure_error(
        413, "RequestEntityTooLarge", f"The request body is larger than the {limit} bytes allowed.", request
    )


def head_too_large(limit: int) -> http.Response:
    return wire.azure_error(
        431, "RequestHeaderFieldsTooLarge", f"The request line and headers are larger than the {limit} bytes allowed."
    )


def too_slow(what: str, seconds: float) -> http.Response:
    """Azure's 408 for a request whose `what` ("headers", "body") did not arrive in time."""
    return wire.azure_error(
        408,
        "RequestTimeout",
        f"The request {what} did not arrive within {seconds:g} seconds; the connection is closed.",
    )


def unsupported_coding(coding: str, request: http.Request | None) -> http.Response:
    """415 names the codings taken (RFC 9110 15.5.16: with Accept-Encoding)."""
    return wire.azure_error(
        415,
        "UnsupportedMediaType",
        f"Content-Encoding '{coding[:40]}' is not supported; send the body uncompressed or as {', '.join(CODINGS)}.",
        request,
        headers={"accept-encoding": ", ".join(CODINGS)},
    )


def undecodable(coding: str, detail: str, request: http.Request | None) -> http.Response:
    return wire.openai_error(
        400, f"We could not decode the body of your request as {coding}: {detail}.", request=request
    )


class BodyTooLarge(Exception):
    """The decoded body passed the limit (decoding stopped there)."""


class UnsupportedCoding(Exception):
    def __init__(self, coding: str):
        super().__init__(coding)
        self.coding = coding


class Undecodable(Exception):
    def __init__(self, coding: str, detail: str):
        super().__init__(f"{coding}: {detail}")
        self.coding, self.detail = coding, detail


def codings_of(value: str) -> list[str]:
    """The content codings a Content-Encoding value names, in the order they were applied
    (identity dropped); raises UnsupportedCoding for one not decoded here."""
    codings = []
    for part in value.split(","):
        coding = part.strip().lower()
        coding = _ALIASES.get(coding, coding)
        if coding in ("", "identity"):
            continue
        if coding not in CODINGS:
            raise UnsupportedCoding(part.strip())
        codings.append(coding)
    return codings


def decode(data: bytes, codings: list[str], limit: int) -> bytes:
    """The body with its content codings undone, last applied first, never holding more than
    `limit` decoded bytes (plus one slice): raises BodyTooLarge past it, Undecodable for data
    that is not what its coding says."""
    for coding in reversed(codings):
        data = _DECODERS[coding](data, limit)
    return data


def _grown(parts: list[bytes], size: int, chunk: bytes, limit: int) -> int:
    size += len(chunk)
    if size > limit:
        raise BodyTooLarge
    parts.append(chunk)
    return size


def _zlib(data: bytes, limit: int, wbits: int, coding: str, members: bool) -> bytes:
    parts: list[bytes] = []
    size = 0
    pending = data
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            while pending:
                size = _grown(parts, size, decoder.decompress(pending, _SLICE), limit)
                pending = decoder.unconsumed_tail
            while not decoder.eof:
                chunk = decoder.decompress(b"", _SLICE)  # what the decoder still holds
                if not chunk:
                    break
                size = _grown(parts, size, chunk, limit)
        except zlib.error as e:
            raise Undecodable(coding, str(e)) from None
        if not decoder.eof:
            raise Undecodable(coding, "the data ends before the end of the compressed stream")
        pending = decoder.unused_data
        if not pending.strip(b"\0"):  # some writers pad the end with zeros
            return b"".join(parts)
        if not members:  # gzip allows several members one after another; other codings, one stream
            raise Undecodable(coding, "data follows the end of the compressed stream")


def _gzip(data: bytes, limit: int) -> bytes:
    return _zlib(data, limit, 16 + zlib.MAX_WBITS, "gzip", members=True)


def _deflate(data: bytes, limit: int) -> bytes:
    # HTTP's "deflate" is the zlib format; some clients send bare deflate data (as browsers accept).
    try:
        return _zlib(data, limit, zlib.MAX_WBITS, "deflate", members=False)
    except Undecodable:
        return _zlib(data, limit, -zlib.MAX_WBITS, "deflate", members=False)


def _brotli(data: bytes, limit: int) -> bytes:
    decoder = brotli.Decompressor()
    parts: list[bytes] = []
    size = 0
    try:
        # The output limit is approximate (the buffer grows in steps past it); what is held back
        # comes with further calls without input, until the stream ends or nothing more comes.
        chunk = decoder.process(data, output_buffer_limit=_SLICE)
        while chunk:
            size = _grown(parts, size, chunk, limit)
            chunk = decoder.process(b"", output_buffer_limit=_SLICE) if not decoder.is_finished() else b""
    except brotli.error as e:
        raise Undecodable("br", str(e) or "invalid data") from None
    if not decoder.is_finished():
        raise Undecodable("br", "the data ends before the end of the compressed stream")
    return b"".join(parts)


def _zstd(data: bytes, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    pending = data
    try:
        while True:  # one frame after another, as zstd allows
            decoder = zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: ZSTD_MAX_WINDOW_LOG})
            chunk = decoder.decompress(pending, max_length=_SLICE)
            while True:
                size = _grown(parts, size, chunk, limit)
                if decoder.eof or decoder.needs_input:
                    break
                chunk = decoder.decompress(b"", max_length=_SLICE)
            if not decoder.eof:
                raise Undecodable("zstd", "the data ends before the end of the compressed stream")
            pending = decoder.unused_data
            if not pending:
                return b"".join(parts)
    except zstd.ZstdError as e:
        raise Undecodable("zstd", str(e)) from None


_DECODERS = {"gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd}
