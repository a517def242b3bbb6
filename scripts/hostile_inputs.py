"""Inputs for the hostile suite, made in code: files whose headers lie (a FLAC claiming 190
hours, a PNG claiming 400 million pixels, a JPEG cut after 22 bytes), a gzip bomb, a noise
PNG of a given size, and multipart forms written byte by byte (so a fuzzer can break them).
"""

from __future__ import annotations

import base64
import io
import os
import struct
import sys
import wave
import zlib
from collections.abc import Iterable
from pathlib import Path

import simulator_process

sys.path.insert(0, str(simulator_process.ROOT / "tests"))
from media import tone

MiB = 1024 * 1024


def flac_claiming(hours: float) -> bytes:
    """About 2 KB of real FLAC (a 16 kHz tone) whose STREAMINFO says it holds `hours` of audio."""
    real = tone("flac", 0.4)
    position, streaminfo, frames_at = 4, b"", 0
    while True:  # the metadata blocks: keep STREAMINFO, drop the rest (padding, tags)
        header = real[position]
        length = int.from_bytes(real[position + 1 : position + 4], "big")
        if header & 0x7F == 0:
            streaminfo = bytearray(real[position + 4 : position + 4 + length])
        position += 4 + length
        if header & 0x80:
            frames_at = position
            break
    word = int.from_bytes(streaminfo[10:18], "big")
    rate = word >> 44
    samples = int(hours * 3600 * rate)
    assert samples < 2**36, "the field holds 36 bits"
    word = (word & ~(2**36 - 1)) | samples
    streaminfo[10:18] = word.to_bytes(8, "big")
    streaminfo[18:34] = bytes(16)  # no MD5 (0: unknown), as encoders may write
    return b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + bytes(streaminfo) + real[frames_at:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 20000) -> bytes:
    """A 1-bit PNG of side x side pixels, all black: ~50 KB for 400 million pixels (the whole
    image data is there, compressed; a decoder that believes the header inflates it)."""
    row = bytes(1 + (side + 7) // 8)  # filter byte 0 and the row's bits
    packer = zlib.compressobj(9)
    parts = []
    rows_per_block = max(1, (4 * MiB) // len(row))
    block = row * rows_per_block
    left = side
    while left:
        n = min(left, rows_per_block)
        parts.append(packer.compress(block if n == rows_per_block else row * n))
        left -= n
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


# The start of a JPEG and nothing more: the start-of-image marker, a baseline frame header
# (SOF0: 8 bits, 65,000 x 65,000, three components) and the first byte of the next marker: a
# bomb's header in 22 bytes (4.2 billion pixels claimed, none there).
JPEG_22_BYTES = (
    b"\xff\xd8\xff\xc0"
    + struct.pack(">HBHHB", 17, 8, 65000, 65000, 3)
    + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    + b"\xff"
)
assert len(JPEG_22_BYTES) == 22


def noise_wav(size_bytes: int, rate: int = 16000) -> bytes:
    """A 16-bit mono WAV of random samples, `size_bytes` of them (written directly: no
    arrays of floats on the way)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(os.urandom(size_bytes - size_bytes % 2))
    return out.getvalue()


def noise_png(size_bytes: int) -> bytes:
    """A PNG of random pixels of at least `size_bytes` (noise does not compress)."""
    from PIL import Image

    side = int((size_bytes / 3) ** 0.5) + 8
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def small_png(width: int = 32, height: int = 24) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


def small_jpeg(width: int = 32, height: int = 24) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def gzip_bomb(prefix: bytes, inflated: int) -> bytes:
    """gzip of `prefix` followed by spaces up to `inflated` bytes: valid JSON when `prefix` is
    (trailing whitespace is allowed), ~1,000 times smaller than it inflates."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    parts = [packer.compress(prefix)]
    spaces = b" " * MiB
    left = inflated - len(prefix)
    while left > 0:
        parts.append(packer.compress(spaces[: min(left, MiB)]))
        left -= MiB
    parts.append(packer.flush())
    return b"".join(parts)


# --- multipart/form-data, written by hand ------------------------------------------------------

Part = tuple[str, bytes, str | None, str | None]  # (field name, content, file name, content type)


def multipart(parts: Iterable[Part], boundary: str = "hostile-boundary-7d1f") -> tuple[bytes, str]:
    """The body and its content-type header for these parts."""
    out = []
    for name, content, filename, content_type in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        out.append(head.encode() + b"\r\n" + content + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def words(characters: int) -> str:
    """Plain English-like words, `characters` long."""
    text = "The quick brown fox jumps over the lazy dog while the patient crew reads every word aloud. " * (
        characters // 80 + 2
    )
    return text[:characters]


def write_temp(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path
