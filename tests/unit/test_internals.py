"""The contract with the installed mitmproxy: everything runtime/internals.py uses beyond the
addon API is still there. If this fails after a mitmproxy upgrade, streams would silently
take the slower loopback path (and mitmweb's flows would no longer be trimmed)."""

import dataclasses

from mitmproxy.addons import proxyserver
from mitmproxy.proxy import server

from aoai.runtime import internals


def test_the_installed_mitmproxy_offers_what_the_fast_paths_use():
    assert internals.missing() == []


def test_the_check_notices_what_is_gone(monkeypatch):
    monkeypatch.setattr(internals.inspect, "getsource", lambda thing: "")
    gone = internals.missing()
    assert "Proxyserver.connections (client handlers by connection id)" in gone
    assert "View._store (flows in arrival order)" in gone
    assert "Http1Connection.buf and .body_reader (heads bounded, bodies ended early)" in gone
    assert any("Client.alpn" in what for what in gone)  # HTTP/2 preferred
    assert len(gone) == 16  # all but ConnectionIO.writer, which is read from the dataclass


def test_the_shapes_it_relies_on():
    # The proxy server keeps its client handlers by connection id, each with its transports.
    assert "writer" in {f.name for f in dataclasses.fields(server.ConnectionIO)}
    assert isinstance(proxyserver.Proxyserver().connections, dict)


def test_a_silenced_writer_drops_what_mitmproxy_writes_and_passes_the_rest():
    class Writer:
        written = b""

        def write(self, data):
            self.written += data

        def is_closing(self):
            return False

        def get_extra_info(self, name):
            return name

    real = Writer()
    silenced = internals.Silenced(real)
    assert silenced.is_closing() is True  # mitmproxy writes only while this is false
    silenced.write(b"a second copy")
    assert real.written == b""
    assert silenced.get_extra_info("socket") == "socket"
