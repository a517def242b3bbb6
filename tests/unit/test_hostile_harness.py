"""The hostile suite's own parts, without a simulator: the crafted inputs say what they claim,
the lag figures count the probes a stall held back, the raw client reads an answer that comes
before the body is sent, and fuzz rounds are made from their seed and number alone."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os

import av
import pytest
from hostile_client import INTERVAL_S, Monitor, Samples, exchange, held_open, request_head
from hostile_fuzz import corpus, make_round
from hostile_inputs import JPEG_22_BYTES, flac_claiming, gzip_bomb, multipart, png_bomb
from PIL import Image


def test_the_flac_is_two_kilobytes_claiming_190_hours():
    data = flac_claiming(190)
    assert len(data) < 2600
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert float(stream.duration * stream.time_base) == pytest.approx(190 * 3600)


@pytest.mark.parametrize("data, pixels", [(png_bomb(20000), 400_000_000), (JPEG_22_BYTES, 65000 * 65000)])
def test_the_image_bombs_claim_hundreds_of_millions_of_pixels(data, pixels):
    with pytest.raises(Image.DecompressionBombError, match=f"{pixels} pixels"):
        Image.open(io.BytesIO(data))
    assert len(data) < 60_000


def test_the_gzip_bomb_inflates_to_json():
    prefix = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    body = gzip_bomb(prefix, 20 * 1024 * 1024)
    inflated = gzip.decompress(body)
    assert len(body) < 40_000 and len(inflated) == 20 * 1024 * 1024
    assert json.loads(inflated) == json.loads(prefix)


def test_a_stall_counts_for_the_probes_it_held_back():
    quick = [(i * INTERVAL_S, 0.002, True) for i in range(100)]
    calm = Samples(quick, [])
    stalled = Samples(quick + [(2.0, 1.0, True)], [])
    assert calm.lag_figures()[1] < 3
    # One probe held a second stands for the ~50 that would have been sent meanwhile.
    assert len(stalled.lags()) == 100 + 50
    assert stalled.lag_figures()[1] > 500 and stalled.lag_figures()[2] == pytest.approx(1000)


def test_memory_growth_is_the_largest_rise_over_each_process_start():
    samples = Samples(
        [], [(0.0, 1, 100 * 1024), (0.1, 1, 250 * 1024), (0.2, 1, 120 * 1024), (0.0, 2, 50 * 1024), (0.1, 2, None)]
    )
    assert samples.rss_growth_mib() == pytest.approx(150)
    assert samples.rss_end_mib() == pytest.approx(20)


def test_the_raw_client_reads_an_early_refusal_and_stops_sending():
    async def scenario():
        received = 0

        async def refuse(reader, writer):
            nonlocal received
            received += len(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 5\r\nconnection: close\r\n\r\nlarge")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def endless():
            while True:
                yield b" " * 65536

        async with server:
            answer = await exchange(port, request_head("POST", "/x", length=10**12), endless(), timeout=10)
        return answer

    answer = asyncio.run(scenario())
    assert (answer.outcome, answer.body) == ("413", b"large")
    assert answer.sent < 10**9


def test_a_fuzz_round_is_made_from_its_seed_and_number_alone():
    bases = corpus()
    made = [make_round(bases, "key", 7, n)[1].encode() for n in (3, 3, 4)]
    assert made[0] == made[1] and made[0] != made[2]


def test_multipart_parts_are_written_as_given():
    body, content_type = multipart(
        [("file", b"\x00\xff", "a.wav", "audio/wav"), ("language", b"en", None, None)], boundary="b"
    )
    assert content_type == "multipart/form-data; boundary=b"
    assert body == (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n\x00\xff\r\n"
        b'--b\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n--b--\r\n'
    )


def test_a_slow_client_is_told_when_the_server_closes_and_when_it_never_does():
    async def scenario(close_after: float | None):
        async def serve(reader, writer):
            if close_after is None:  # held until the client gives up
                while await reader.read(4096):
                    pass
            else:
                await asyncio.sleep(close_after)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await held_open(port, b"POST / HTTP/1.1\r\n", b"x-slow: aaaa", every_s=0.1, limit_s=0.7)

    outcome, seconds = asyncio.run(scenario(0.3))
    assert outcome == "closed" and 0.25 < seconds < 0.9
    outcome, seconds = asyncio.run(scenario(None))
    assert outcome == "open" and seconds >= 0.7


def test_the_monitor_sees_a_server_that_stops_answering_for_half_a_second():
    import socketserver
    import threading
    import time

    stalled = threading.Event()

    class Health(socketserver.StreamRequestHandler):
        def handle(self):
            while self.rfile.readline():
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                if stalled.is_set():
                    stalled.clear()
                    time.sleep(0.5)
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monitor = Monitor()
        try:
            monitor.start(server.server_address[1], [os.getpid()])
            time.sleep(0.3)
            stalled.set()
            time.sleep(0.8)
            samples = monitor.stop()
        finally:
            monitor.close()
            server.shutdown()
    p50, p99, worst = samples.lag_figures()
    assert p50 < 20 and worst >= 500
    assert p99 >= 400  # the half second held back ~25 probes
    assert samples.rss and all(pid == os.getpid() for _, pid, _ in samples.rss)
