"""Small audio and image files made in the tests themselves with the libraries the simulator
uses (PyAV, Pillow): a few seconds of tone in any container, a tiny PNG."""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image

# container -> (PyAV format, codec, sample rate)
_AUDIO = {
    "wav": ("wav", "pcm_s16le", 16000),
    "mp3": ("mp3", "libmp3lame", 16000),
    "flac": ("flac", "flac", 16000),
    "ogg": ("ogg", "libopus", 48000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", 16000),
}


def tone(extension: str = "wav", seconds: float = 3.0) -> bytes:
    """`seconds` of a 440 Hz tone, encoded as the extension says."""
    container_format, codec, rate = _AUDIO[extension]
    samples = (np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate) * 3000).astype(np.int16)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def decoded_seconds(data: bytes, container_format: str | None = None) -> float:
    """Seconds of audio in `data`, by decoding every frame."""
    with av.open(io.BytesIO(data), format=container_format) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples / frame.sample_rate for frame in container.decode(stream))


def png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()
