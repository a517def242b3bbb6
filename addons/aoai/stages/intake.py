"""Intake: what a request brings is bounded before it is buffered.

mitmproxy reads a request's whole body before the `request` hook. This stage judges the
request from its head instead (`requestheaders`): a declared length over the route's limit
gets Azure's 413 at once, and so does an answer an earlier stage set from the head (Auth's
401 for a large body); neither body is read. A body whose length the head does not declare
(chunked, or HTTP/2 without content-length) is cut off at the limit as it comes. Every client
connection is read through a guard (runtime/internals.py) that bounds the head's size (431)
and the head's and body's time (408); one sweep holds all connections to their deadlines.
A compressed body is decoded here, within the route's limit, for the stages after this one.

How an answer from the head leaves, by transport:
* HTTP/1.1: the request ends at mitmproxy's parser, the answer leaves through mitmproxy's
  layers with `connection: close`, and what the client still sends is dropped until it stops
  (a few seconds at most). Plain connections answer at once; TLS ones at the client's next
  record (a client waiting for "100 Continue" gets it first).
* HTTP/2: the rest of the stream's body is dropped as it comes, never kept; the answer
  leaves when the stream ends.

Should the installed mitmproxy lack what the guard uses (`internals.missing_for_guard()`), no guard is
installed and mitmproxy's own `body_size_limit` is set to the largest route limit instead:
answers set from the head then leave once the body is read, and a larger body gets
mitmproxy's HTML 413. (With the guard that option stays unset: mitmproxy would parse every
request's length headers again for it, ~6 µs a request, to enforce what is enforced here.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.utils import human

from ..runtime import bounds, intake, internals
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.options import Option, check, declare, names
from ..runtime.routes import TABLE, Route, RouteTable
from ..runtime.startup import Startup
from ..runtime.state import context_of

logger = logging.getLogger(__name__)


def _bound_option(bound: bounds.Bound) -> Option:
    def parse(text: str) -> int | float:
        try:
            return bounds.parse_bound(bound, text)
        except bounds.BoundError as e:
            raise ConfigError(str(e)) from None

    return Option(
        bound.env,
        int if bound.integer else float,
        bound.default,
        bound.help,
        low=bound.low,
        high=bounds.LARGEST,
        parse=parse,
    )


# Every bound on what a client can make the simulator spend (runtime/bounds.py).
OPTIONS = tuple(_bound_option(b) for b in bounds.BOUNDS)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the bounds and put them in `config`; raises ConfigError, changing nothing."""
    check(options, OPTIONS, updated)
    # The stores are bounded from these by the services (runtime/services.py).
    config.bounds = bounds.Bounds(**{b.field: getattr(options, b.option) for b in bounds.BOUNDS})


class Intake:
    def __init__(self, config: SimulatorConfig, table: RouteTable = TABLE, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.table = table
        self.limits = internals.GuardLimits()  # shared by every connection's guard
        self.guards: dict[str, internals.ClientGuard] = {}  # by client connection id
        self.unknown_limit = intake.SMALL_BODY  # a body to a path no route has (extensions: as JSON routes)
        self.largest = intake.largest_limit(table.routes, config.bounds)
        self.gone = internals.missing_for_guard()  # what the guard needs that this mitmproxy lacks (none: guarded)
        self._body_size_limit: str | None = None  # what this stage set mitmproxy's option to
        self._sweeper: asyncio.Task | None = None

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)
        in_force = self.config.bounds
        self.limits.max_head = in_force.max_header_bytes
        self.limits.header_timeout = in_force.header_timeout_s
        self.limits.body_timeout = in_force.body_timeout_s
        extensions = getattr(ctx.options, "extension_path", [])  # they may serve paths no route has
        self.unknown_limit = in_force.max_body_bytes if extensions else intake.SMALL_BODY
        self.largest = intake.largest_limit(self.table.routes, in_force)
        # Without the guard, mitmproxy refuses (HTML 413) a body larger than any route takes.
        # A smaller limit the user set is kept.
        if self.gone and "body_size_limit" in ctx.options:
            current = ctx.options.body_size_limit
            if current is None or current == self._body_size_limit or human.parse_size(current) > self.largest:
                self._body_size_limit = str(self.largest)
                if current != self._body_size_limit:
                    ctx.options.update(body_size_limit=self._body_size_limit)

    async def running(self) -> None:
        if self.gone:
            logger.warning(
                "request heads and bodies are not guarded (this mitmproxy lacks %s): bodies are read, "
                "up to %d bytes, before they are refused",
                "; ".join(self.gone),
                self.largest,
            )
        elif self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def client_connected(self, client: connection.Client) -> None:
        guard = None if self.gone else internals.guard_client(client, self.limits)
        if guard is not None:
            self.guards[client.id] = guard

    def client_disconnected(self, client: connection.Client) -> None:
        self.guards.pop(client.id, None)

    def requestheaders(self, flow: http.HTTPFlow):
        request = flow.request
        length = intake.declared_length(request)
        if flow.response is not None:  # answered from the head by a stage before this one (Auth's 401)
            return self._answer_early(flow, flow.response)
        if request.is_http2 and length != 0:
            self._body_due(flow)
        if length is not None and length <= intake.SMALL_BODY:
            return None  # every route takes this much: nothing to look up
        found = self.table.resolve(request.method, request.path)
        route = found.route if found is not None else None
        limit = intake.body_limit(route, self.config.bounds, self.unknown_limit)
        if length is None:
            guard = self.guards.get(flow.client_conn.id)
            if guard is not None:
                guard.cap_body(flow, limit, lambda read: self._cut_off(flow, route, limit, read))
            return None
        if length <= limit:
            return None
        logger.debug(
            "413 from the head of %s %.200s: %d bytes declared, %d allowed",
            request.method,
            _logged(request.path),
            length,
            limit,
        )
        return self._answer_early(flow, intake.too_large(route, limit, request, length))

    def request(self, flow: http.HTTPFlow):
        request = flow.request
        if request.is_http2:
            guard = self.guards.get(flow.client_conn.id)
            if guard is not None:
                guard.stream_due(flow, None)
        if flow.response is not None:
            return None
        coding = intake.header_value(request.headers, b"content-encoding")
        if coding is None:
            return None
        return self._decode(flow, coding.decode("latin-1"))

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.request is not None and flow.request.is_http2:
            guard = self.guards.get(flow.client_conn.id)
            if guard is not None:
                guard.stream_due(flow, None)

    # -- inside -------------------------------------------------------------------------------

    def _answer_early(self, flow: http.HTTPFlow, answer: http.Response):
        guard = self.guards.get(flow.client_conn.id)
        if guard is None:
            flow.response = answer  # no guard (no proxy): the body is read, up to body_size_limit, then answered
            return None
        return guard.end_body(flow, answer, in_hook=True)

    def _cut_off(self, flow: http.HTTPFlow, route: Route | None, limit: int, read: int) -> None:
        """A body of undeclared length passed the limit: answered now, the rest dropped."""
        logger.debug(
            "413 for %s %.200s: the body passed %d bytes", flow.request.method, _logged(flow.request.path), limit
        )
        answer = intake.too_large(route, limit, flow.request, read)
        guard = self.guards.get(flow.client_conn.id)
        if guard is None:
            flow.response = answer
        else:
            guard.end_body(flow, answer)

    def _body_due(self, flow: http.HTTPFlow) -> None:
        guard = self.guards.get(flow.client_conn.id)
        if guard is not None:
            guard.stream_due(flow, time.monotonic() + self.limits.body_timeout)

    def _decode(self, flow: http.HTTPFlow, value: str):
        request = flow.request
        try:
            codings = intake.codings_of(value)
        except intake.UnsupportedCoding as e:
            flow.response = intake.unsupported_coding(e.coding, request)
            return None
        if not codings:  # identity
            del request.headers["content-encoding"]
            return None
        context = context_of(flow)
        route = context.route if context is not None else None
        return self._decoded(flow, codings, route, intake.body_limit(route, self.config.bounds, self.unknown_limit))

    async def _decoded(self, flow: http.HTTPFlow, codings: list[str], route: Route | None, limit: int) -> None:
        """The body decoded off the event loop (a few MB of output take tens of ms), within
        `limit`, replacing the compressed one for the stages after this one."""
        request = flow.request
        try:
            data = await asyncio.to_thread(intake.decode, request.raw_content or b"", codings, limit)
        except intake.BodyTooLarge:
            logger.debug(
                "413 for %s %.200s: the body decodes to more than %d bytes",
                request.method,
                _logged(request.path),
                limit,
            )
            flow.response = intake.too_large(route, limit, request)
            request.raw_content = b""  # nobody decodes it again (mitmweb would)
            return
        except intake.Undecodable as e:
            flow.response = intake.undecodable(e.coding, e.detail, request)
            return
        del request.headers["content-encoding"]
        request.content = data  # sets content-length to match

    def _tick(self) -> float:
        shortest = min(self.limits.header_timeout, self.limits.body_timeout)
        return min(1.0, max(0.05, shortest / 4))

    async def _sweep(self) -> None:
        """Holds every connection to its deadline, a few times per shortest timeout."""
        while True:
            await asyncio.sleep(self._tick())
            now = time.monotonic()
            for guard in list(self.guards.values()):
                deadline = guard.deadline
                if deadline is not None and deadline <= now:
                    try:
                        guard.expire(now)
                    except Exception:  # one connection's trouble never stops the sweep
                        logger.exception("closing a connection past its deadline failed")
                        guard.abort()


def _logged(path: str) -> str:
    """A path as log lines show it: without its query, which may carry a key."""
    return path.partition("?")[0]
