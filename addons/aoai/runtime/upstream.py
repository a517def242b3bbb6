"""Upstream: record mode's connection pool to Azure OpenAI, and what its faults look like to
a client.

mitmproxy answers a failed upstream with its own HTML page, which no SDK can read, and no
hook replaces that page. So the record stage sends requests itself, through one pooled httpx
client, and turns every fault into Azure's JSON error naming the cause: 502 when Azure cannot
be reached or answers something that is not Azure's, 504 when it does not answer in time.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

# httpx logs every request at INFO; mitmproxy's own line for the flow says it already.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Headers about one connection, not the message: never passed on in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the upstream client sets itself.
_SET_BY_CLIENT = HOP_BY_HOP | {"host", "content-length", "accept-encoding"}


@dataclass(frozen=True)
class Fault:
    """What the client is told instead of an answer."""

    status: int
    code: str
    message: str


def origin(endpoint: str) -> str:
    """scheme://host[:port] of an endpoint URL: requests keep their own path."""
    parts = urlsplit(endpoint.strip())
    return f"{parts.scheme}://{parts.netloc}"


def is_endpoint(value: str) -> bool:
    """An http(s) URL with a host."""
    parts = urlsplit(value.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def request_headers(headers: Iterable[tuple[str, str]], drop: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The client's headers as they go upstream: without hop-by-hop headers, those the
    upstream client sets, and `drop` (the client's credentials). The client's own
    accept-encoding is kept, else identity: what reaches the client is what Azure sent."""
    dropped = _SET_BY_CLIENT | {name.lower() for name in drop}
    out, encoding = [], "identity"
    for name, value in headers:
        lower = name.lower()
        if lower == "accept-encoding":
            encoding = value
        elif lower not in dropped:
            out.append((name, value))
    out.append(("accept-encoding", encoding))
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]], decoded: bool = False) -> list[tuple[bytes, bytes]]:
    """Azure's response headers for the client: without hop-by-hop ones and content-length
    (the body's framing is redone); with `decoded`, without content-encoding too."""
    skip = HOP_BY_HOP | {"content-length"} | ({"content-encoding"} if decoded else set())
    return [(k, v) for k, v in raw if k.decode("latin-1").lower() not in skip]


def failed(error: BaseException, endpoint: str, timeout_s: float) -> Fault:
    """The fault for an exception raised while forwarding to `endpoint` (its origin)."""
    if isinstance(error, httpx.ConnectTimeout):
        return Fault(504, "GatewayTimeout", f"could not connect to {endpoint}: no answer within {timeout_s:g} s")
    if isinstance(error, httpx.TimeoutException):
        return Fault(504, "GatewayTimeout", f"{endpoint} did not answer within {timeout_s:g} s")
    tls = _tls_reason(error)
    if tls is not None:
        return Fault(502, "BadGateway", f"TLS handshake with {endpoint} failed: {tls}")
    if isinstance(error, httpx.ConnectError):
        return Fault(502, "BadGateway", f"could not connect to {endpoint}: {_os_reason(error) or error}")
    if isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        reason = _os_reason(error) or "it closed the connection"
        return Fault(502, "BadGateway", f"{endpoint} broke off the answer: {reason}")
    return Fault(502, "BadGateway", f"forwarding to {endpoint} failed: {type(error).__name__}: {error}")


def bad_answer(status: int, content_type: str, body: bytes, endpoint: str, reason: str = "") -> Fault | None:
    """A server error whose body is not JSON (a gateway's HTML page) as Azure's 502 naming the
    status; None for anything else, Azure's own JSON errors included, which pass as they are."""
    if status < 500:
        return None
    try:
        if isinstance(orjson.loads(body), dict):
            return None
    except orjson.JSONDecodeError:
        pass
    kind = content_type.partition(";")[0].strip() or "no content type"
    answered = f"{status} {reason}".strip()
    return Fault(502, "BadGateway", f"{endpoint} answered {answered} with {kind}, not Azure's JSON")


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, what caused it, and the members of exception groups on the way."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


def _tls_reason(error: BaseException) -> str | None:
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError) and getattr(cause, "verify_message", None):
            return f"certificate verify failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)" -> "wrong version number"
            text = str(cause.args[1]) if len(cause.args) > 1 else str(cause)
            text = re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", text)
            return text or cause.reason or "TLS error"
    return None


def _os_reason(error: BaseException) -> str | None:
    """The operating system's words for a socket error in the chain (connection refused, …)."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno:
            # asyncio's own text names the address ("Connect call failed (…)"); the errno says what happened.
            text = os.strerror(cause.errno) if cause.errno > 0 else (cause.strerror or str(cause))
            return text[:1].lower() + text[1:]
    return None


class Upstream:
    """One pooled httpx client for every forwarded request, made when first needed."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No cap on connections: a burst of forwarded requests must not queue behind the pool.
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100), follow_redirects=False
            )
        return self._client

    def warm(self) -> None:
        """Make the client and load what its first request would (the TLS context, httpx's
        async backend): some 50 ms that the first forwarded request held the event loop for."""
        self.client()
        anyio.Event()  # imports anyio's asyncio backend, as the first request's pool would

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout_s: float
    ) -> httpx.Response:
        """The answer once its headers are in; the caller reads (or streams) the body and closes it."""
        client = self.client()
        request = client.build_request(method, url, headers=headers, content=body, timeout=timeout_s)
        return await client.send(request, stream=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
