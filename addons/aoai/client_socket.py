"""The client's socket as mitmproxy holds it.

Two things need it beyond what mitmproxy's addon API offers: the streaming stage writes paced
frames straight onto it, and latency deadlines count from when the request reached the
machine. mitmproxy stamps a request (`timestamp_start`) when its event loop parses it; under
a burst that is up to ~0.25 ms per request behind, because each request's intake waits for
the ones before it. The kernel knows better: Linux's TCP_INFO says how long ago the
connection last received data, i.e. the request's last byte, at a resolution of a few ms.
That time is used when it is earlier than mitmproxy's stamp.
"""

from __future__ import annotations

import asyncio
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
