"""Connections a load test leaves open: thousands of idle keep-alive connections and clients
that send their headers slowly must not stop the simulator answering others on time."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from helpers import deployment_url

pytestmark = pytest.mark.serial  # it times answers beside 2,000 idle connections

IDLE = 2000
BATCH = 50


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def answer_time(sim) -> float:
    started = time.perf_counter()
    r = httpx.post(
        deployment_url(sim, "gpt-4o"),
        headers={"api-key": sim.key},
        json={"messages": [{"role": "user", "content": "Still quick?"}], "max_tokens": 5},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return time.perf_counter() - started


def test_idle_keep_alive_connections_and_slow_headers_do_not_slow_others(simulator):
    before = [answer_time(simulator) for _ in range(5)]
    rss_before = rss_kib(simulator.process.pid)
    idle: list[socket.socket] = []
    try:
        while len(idle) < IDLE:
            # Each connection served one request and is kept open, as a client pool keeps it.
            # Opened a batch at a time: thousands of connects at once overflow the listen
            # backlog, and each dropped SYN costs the client a second before it is sent again.
            batch = [
                socket.create_connection(("127.0.0.1", simulator.port)) for _ in range(min(BATCH, IDLE - len(idle)))
            ]
            idle.extend(batch)
            for s in batch:
                s.sendall(b"GET /++/health HTTP/1.1\r\nhost: x\r\n\r\n")
            for s in batch:
                s.settimeout(30)
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
        slow = []
        for _ in range(50):  # headers begun, never finished
            s = socket.create_connection(("127.0.0.1", simulator.port))
            s.sendall(b"POST /openai/deployments/gpt-4o/chat/completions HTTP/1.1\r\nhost: x\r\n")
            slow.append(s)
        idle.extend(slow)
        time.sleep(0.5)
        per_connection = (rss_kib(simulator.process.pid) - rss_before) / (IDLE + len(slow))
        during = [answer_time(simulator) for _ in range(5)]
        # Generous bounds: a shared machine. What matters is that nothing waits on the idle ones.
        assert sorted(during)[2] < max(0.2, 3 * sorted(before)[2]), (before, during)
        print(f"memory per idle connection: {per_connection:.1f} KiB")
        assert per_connection < 100
    finally:
        for s in idle:
            s.close()
