"""When a request reached the machine: the kernel's receive time of the client's socket."""

import socket
import sys
import time

import pytest
from mitmproxy.test import taddons, tflow

from aoai.runtime import internals as client_socket
from aoai.runtime import latency
from aoai.runtime.state import context_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO's layout is Linux's")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


@linux_only
def test_the_kernel_says_when_the_last_bytes_arrived_even_if_nobody_read_them():
    client, server = tcp_pair()
    with client, server:
        client.sendall(b"POST / HTTP/1.1\r\n\r\n")
        sent = time.time()
        time.sleep(0.08)  # the proxy is busy; the bytes wait in the socket
        at = client_socket.kernel_received_at(server, stamped=time.time())
    assert at is not None
    assert abs(at - sent) < 0.025  # the kernel counts in jiffies (1-10 ms); "now" would be 80 ms off


@linux_only
def test_a_kernel_time_far_before_mitmproxys_stamp_is_not_trusted():
    client, server = tcp_pair()
    with client, server:
        client.sendall(b"x")
        assert client_socket.kernel_received_at(server, stamped=time.time() + 60) is None


@linux_only
def test_bytes_after_mitmproxys_stamp_do_not_move_the_arrival_later():
    client, server = tcp_pair()
    with client, server:
        stamped = time.time()
        time.sleep(0.05)
        client.sendall(b"more of the body")
        assert client_socket.kernel_received_at(server, stamped=stamped) == stamped


def test_without_tcp_info_the_kernel_time_is_unknown(monkeypatch):
    # Not Linux: no TCP_INFO to ask for, so no answer (rather than a TypeError from getsockopt).
    monkeypatch.setattr(client_socket, "_TCP_INFO", None)
    client, server = tcp_pair()
    with client, server:
        client.sendall(b"x")
        assert client_socket.kernel_received_at(server, stamped=time.time()) is None


def test_outside_a_running_proxy_the_arrival_is_mitmproxys_stamp():
    flow = tflow.tflow()
    flow.request.timestamp_start = time.time() - 0.5
    with taddons.context():
        assert client_socket.received_at(flow) is None
        context = context_for(flow)
        assert latency.arrived_at(context) == flow.request.timestamp_start
        assert 0.5 <= latency.since_arrival(context) < 0.6


def test_the_arrival_is_taken_once_per_flow():
    flow = tflow.tflow()
    flow.request.timestamp_start = 1000.0
    with taddons.context():
        first = latency.arrived_at(context_for(flow))
        flow.request.timestamp_start = 2000.0
        assert latency.arrived_at(context_for(flow)) == first == 1000.0
