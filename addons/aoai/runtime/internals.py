"""Every use of mitmproxy internals, in one place: what the simulator needs beyond
mitmproxy's addon API, and a check that the installed mitmproxy still offers it.

* The client's socket as mitmproxy holds it (`proxyserver.connections[id].transports`): the
  streaming stage writes paced frames straight onto it (and silences mitmproxy's second copy
  of the response), and latency deadlines count from when the request reached the machine.
* mitmweb's flow store (`view._store`), in arrival order, for trimming the oldest flows.
* The text of mitmproxy's "listening" log line, hidden while the default listener is
  replaced.

If mitmproxy moves any of these, streams silently fall back to the slower loopback path and
flows are no longer trimmed: `missing()` says what is gone, a start-up warning repeats it,
and a contract test fails.

Arrival: mitmproxy stamps a request (`timestamp_start`) when its event loop parses it; under
a burst that is up to ~0.25 ms per request behind, because each request's intake waits for
the ones before it. The kernel knows better: Linux's TCP_INFO says how long ago the
connection last received data, i.e. the request's last byte, at a resolution of a few ms.
That time is used when it is earlier than mitmproxy's stamp.
 mitmproxy stamps a request (`timestamp_start`) when its event loop parses it; under
a burst that is up to ~0.25 ms per request behind, because each request's intake waits for
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import struct
import time

from mitmproxy import ctx, http

_TCP_INFO = getattr(socket, "TCP_INFO", None) if hasattr(socket, "IPPROTO_TCP") else None
_LAST_DATA_RECV = 52  # offset of tcpi_last_data_recv (ms, u32) in Linux's struct tcp_info
_TCP_INFO_SIZE = 104
_PLAUSIBLE_S = 5.0  # a kernel time further before mitmproxy's stamp than this is not trusted


def client_io(flow: http.HTTPFlow):
    """mitmproxy's record of the client's connection (its reader and writer), or None outside
    a running proxy or for connections that are not plain TCP sockets."""
    client = flow.client_conn
    if client.transport_protocol != "tcp":
        return None
    try:
        handler = ctx.master.addons.get("proxyserver").connections[client.id]
        io = handler.transports[handler.client]
    except (AttributeError, KeyError):
        return None
    return io if isinstance(getattr(io, "writer", None), asyncio.StreamWriter) else None


def received_at(flow: http.HTTPFlow) -> float | None:
    """When (time.time()) the kernel last received data on the client's connection, or None
    where that cannot be known (not Linux, no socket, an implausible answer)."""
    if _TCP_INFO is None:
        return None
    io = client_io(flow)
    sock = io.writer.get_extra_info("socket") if io is not None else None
    if sock is None:
        return None
    return kernel_received_at(sock, flow.request.timestamp_start)


def kernel_received_at(sock, stamped: float | None) -> float | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
        ago_ms = struct.unpack_from("=I", info, _LAST_DATA_RECV)[0]
    except (OSError, struct.error):
        return None
    at = time.time() - ago_ms / 1000
    if not stamped:
        return at
    if at < stamped - _PLAUSIBLE_S:
        return None
    # Later than mitmproxy's stamp when more bytes came after the request's head (a long body,
    # another HTTP/2 stream): the head's arrival is then the better answer.
    return min(at, stamped)


class Silenced:
    """A client connection's writer that drops what mitmproxy writes: its second copy of a
    response the client already has. (mitmproxy writes only when `is_closing()` is false.)"""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self.writer, name)


def stored_flows(view) -> list:
    """mitmweb's flows in arrival order (the view itself may be sorted otherwise)."""
    return list(view._store.values())


LISTENING_LOG_TEXT = "HTTP(S) proxy"  # in mitmproxy's "HTTP(S) proxy listening at …" line
LISTENER_LOGGERS = ("mitmproxy.addons.proxyserver", "mitmproxy.proxy.mode_servers")


def hide_listening_line(record: logging.LogRecord) -> bool:
    return LISTENING_LOG_TEXT not in record.getMessage()


def missing() -> list[str]:
    """What this module uses that the installed mitmproxy no longer offers (empty: all there)."""
    import dataclasses

    from mitmproxy.addons import proxyserver, view
    from mitmproxy.proxy import mode_servers, server

    def source(thing) -> str:
        try:
            return inspect.getsource(thing)
        except (OSError, TypeError):
            return ""

    checks = [
        ("self.connections" in source(proxyserver.Proxyserver.__init__),
         "Proxyserver.connections (client handlers by connection id)"),
        ("self.transports" in source(server.ConnectionHandler.__init__), "ConnectionHandler.transports"),
        ("self.client" in source(server.ConnectionHandler.__init__), "ConnectionHandler.client"),
        ("writer" in {f.name for f in dataclasses.fields(server.ConnectionIO)}, "ConnectionIO.writer"),
        ("writer.is_closing()" in source(server.ConnectionHandler),
         "ConnectionHandler writes only while writer.is_closing() is false (silencing a second response)"),
        ("self._store" in source(view.View.__init__), "View._store (flows in arrival order)"),
        ("listening at" in source(mode_servers), "the 'HTTP(S) proxy listening at' log line"),
    ]
    return [what for present, what in checks if not present]
