"""Streaming: the stage that plays planned streams (runtime/streams.py), and relays Azure's
streams in record mode (plans with a live source), by the same two paths.

* **To the client directly** (plain HTTP/1.1 clients: the usual case for a simulator on
  http://localhost:8000). The `request` hook holds the flow while it writes the response head
  and each frame at its deadline straight onto the client's connection, then gives the flow
  the whole response for mitmweb, metrics and later hooks. mitmproxy would now send that
  response a second time, so the connection's writer is silenced until the client's next
  request begins. One timer and one socket write per frame is what lets one process pace
  hundreds of streams.
* **Through the loopback server** (TLS or HTTP/2 clients, whose bytes only mitmproxy's layers
  can frame; and every stream when an extension has a `responseheaders` hook, so that it sees
  the stream before it leaves). mitmproxy sends a response an addon makes in one piece; only a
  response that comes from a server can be streamed through (`flow.response.stream`), so the
  flow is pointed at the stream server on a loopback port, and mitmproxy passes each chunk on
  as it arrives.

mitmweb shows the flow either way; `/++/metrics` counts the streams played each way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from mitmproxy import connection, http

from ..runtime import internals
from ..runtime.state import RequestContext, context_of
from ..runtime.streams import StreamPlan, StreamServer


def client_connection(flow: http.HTTPFlow):
    """mitmproxy's record of the client's socket (its reader and writer), when a stream can be
    written to it directly: plain HTTP/1.1 over TCP. None otherwise, or outside a running proxy."""
    if flow.client_conn.tls or flow.request.http_version != "HTTP/1.1":
        return None
    return internals.client_io(flow)


class Streaming:
    """Stage that plays planned streams: onto the client's connection, or through mitmproxy
    chunk by chunk from the loopback server."""

    def __init__(self, server: StreamServer, hooks_see_streams: Callable[[], bool] = lambda: False):
        self.server = server
        # True when an extension has a `responseheaders` hook: streams then pass through
        # mitmproxy's layers (the loopback server), so that hook sees them.
        self.hooks_see_streams = hooks_see_streams
        self._silenced: dict[str, tuple] = {}  # client id -> (its connection record, real writer)

    async def running(self):
        await self.server.start()

    async def done(self):
        await self.server.stop()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # The client sent its next request, so mitmproxy has written (and we dropped) the last response.
        self._unsilence(flow.client_conn.id)

    def client_disconnected(self, client: connection.Client) -> None:
        self._unsilence(client.id)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        context = context_of(flow)
        if flow.response or context is None:
            return None
        plan = self.server.planned(context.stream)
        if plan is None:
            return None
        io = None if self.hooks_see_streams() else client_connection(flow)
        if io is None:
            self.server.to_loopback(flow.request, plan)
            return None
        return self._play_to_client(context, plan, io)

    async def _play_to_client(self, context: RequestContext, plan: StreamPlan, io) -> None:
        writer, flow = io.writer, context.flow
        plan.headers.update(context.quota_headers or {})
        context.quota_headers = None
        started = context.played_at = time.time()
        try:
            await self.server.play_to(plan, writer)
        finally:
            flow.response = plan.response(started)
            io.writer = internals.Silenced(writer)
            # A client that went away mid-stream has had its client_disconnected already:
            # remembering its connection now would keep it (socket, buffers) for good.
            if flow.client_conn.connected and not writer.is_closing():
                self._silenced[flow.client_conn.id] = (io, writer)

    def _unsilence(self, client_id: str) -> None:
        silenced = self._silenced.pop(client_id, None)
        if silenced is not None:
            io, writer = silenced
            io.writer = writer

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is None:
            return
        played = context.played_at
        if played is not None:
            # mitmproxy calls this hook for a response an addon set, and stamps its start now,
            # at the end of the stream; mitmweb should show when the stream began.
            flow.response.timestamp_start = played
        elif context.stream is not None:
            flow.response.stream = True  # from the loopback server: pass chunks on as they come

    def error(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is not None:
            self.server.forget(context.stream)
