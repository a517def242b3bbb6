"""Audio for realtime sessions: PCM16 at 24 kHz mono little-endian, and G.711 μ-law / A-law.

G.711 is telephone audio at 8 kHz, one byte a sample. It is converted with lookup tables
built once: a byte's level is ITU-T G.711's expansion formula (FFmpeg decodes every byte to
the same sample), and a sample's byte is the one whose level is nearest. A table lookup per
100 ms chunk costs microseconds, where a PyAV codec context per session would cost more than
the audio it converts. Answers are a soft tone pitched by the voice, as long as the words
take to say; speech is found by RMS energy over short windows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RATE = 24_000  # Hz, what the Realtime API's pcm16 carries
G711_RATE = 8_000
PCM16, ULAW, ALAW = "pcm16", "g711_ulaw", "g711_alaw"
FORMATS = (PCM16, ULAW, ALAW)
CHUNK_SECONDS = 0.1  # audio per delta
WINDOW_MS = 20  # VAD window
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
TONE_AMPLITUDE = 6000

Samples = npt.NDArray[np.int16]


def rate_of(fmt: str) -> int:
    return RATE if fmt == PCM16 else G711_RATE


def bytes_per_second(fmt: str) -> int:
    return RATE * 2 if fmt == PCM16 else G711_RATE


def seconds_of(data_bytes: int, fmt: str) -> float:
    return data_bytes / bytes_per_second(fmt)


# --- G.711 -----------------------------------------------------------------------------------

_ULAW_BIAS = 0x84


def _ulaw_decode(code: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS).astype(np.int16)


def _alaw_decode(code: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
    a = code ^ 0x55
    segment = (a & 0x70) >> 4
    base = ((a & 0x0F) << 4) + np.where(segment == 0, 8, 0x108)
    magnitude = np.where(segment > 1, base << np.maximum(segment - 1, 0), base)
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


@functools.cache
def _decode_table(fmt: str) -> npt.NDArray[np.int16]:
    """The 16-bit sample of every G.711 byte (ITU-T G.711's expansion)."""
    every = np.arange(256, dtype=np.int64)
    return _ulaw_decode(every) if fmt == ULAW else _alaw_decode(every)


@functools.cache
def _encode_table(fmt: str) -> npt.NDArray[np.uint8]:
    """The G.711 byte of every 16-bit sample (indexed by the sample read as unsigned): the byte
    whose level is nearest, so a sample survives a round trip to within half a step."""
    levels = _decode_table(fmt).astype(np.int64)
    order = np.argsort(levels, kind="stable")
    ranked = levels[order]
    every = np.arange(65536, dtype=np.int64)
    signed = np.where(every >= 32768, every - 65536, every)
    above = np.clip(np.searchsorted(ranked, signed), 1, len(ranked) - 1)
    nearer_below = signed - ranked[above - 1] <= ranked[above] - signed
    return order[np.where(nearer_below, above - 1, above)].astype(np.uint8)


def decode(data: bytes, fmt: str) -> Samples:
    """16-bit samples of audio in `fmt` (a trailing odd byte of PCM16 is dropped)."""
    if fmt == PCM16:
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)
    return _decode_table(fmt)[np.frombuffer(data, dtype=np.uint8)]


def encode(samples: Samples, fmt: str) -> bytes:
    if fmt == PCM16:
        return samples.astype("<i2").tobytes()
    return _encode_table(fmt)[samples.astype(np.int16).view(np.uint16)].tobytes()


# --- Answers ----------------------------------------------------------------------------------


def pitch_of(voice: str) -> int:
    """Whole hertz, so voices sound apart."""
    return 160 + 20 * VOICES.index(voice) if voice in VOICES else 200


def tone(start: int, count: int, voice: str, rate: int = RATE) -> Samples:
    """Samples `start` to `start + count` of the voice's tone: chunks made one after another
    join without a seam."""
    n = np.arange(start, start + count, dtype=np.float64)
    return (np.sin(2 * np.pi * pitch_of(voice) * n / rate) * TONE_AMPLITUDE).astype(np.int16)


def chunks(seconds: float, voice: str, fmt: str, chunk: float = CHUNK_SECONDS) -> Iterator[tuple[float, bytes]]:
    """The answer's audio, `chunk` seconds at a time: (audio seconds sent after this chunk, bytes)."""
    rate = rate_of(fmt)
    total = round(seconds * rate)
    step = max(1, round(chunk * rate))
    for start in range(0, total, step):
        count = min(step, total - start)
        yield (start + count) / rate, encode(tone(start, count, voice, rate), fmt)


# --- Voice activity ---------------------------------------------------------------------------


def level_of(threshold: float) -> float:
    """The RMS (a share of full scale) that counts as speech for a threshold in 0–1: 0 is
    -70 dBFS (any sound), 0.5 is -40 dBFS (quiet speech), 1 is -10 dBFS (shouting)."""
    return float(10 ** ((-70 + 60 * min(1.0, max(0.0, threshold))) / 20))


@dataclass
class VoiceEvent:
    kind: str  # "started" or "stopped"
    ms: int  # audio_start_ms (padding included) or audio_end_ms, from the session's first audio


class Detector:
    """Speech by energy in the audio appended so far, `WINDOW_MS` at a time. Speech starts
    at a window above the level (its start moved back by the prefix padding) and stops after
    `silence_ms` of windows below it (its end is where that silence ran out)."""

    def __init__(self, threshold: float, prefix_padding_ms: int, silence_ms: int, rate: int = RATE, start_ms: int = 0):
        self.level = level_of(threshold) * 32768
        self.padding, self.silence_ms = prefix_padding_ms, silence_ms
        self.window = rate * WINDOW_MS // 1000
        self.rest: Samples = np.zeros(0, dtype=np.int16)
        self.position_ms = start_ms  # the end of the last window looked at
        self.speaking = False
        self.quiet_ms = 0

    def feed(self, samples: Samples) -> list[VoiceEvent]:
        """Speech starting or stopping in `samples`, which continue the audio fed before."""
        data = np.concatenate([self.rest, samples]) if self.rest.size else samples
        whole = data.size // self.window * self.window
        self.rest = data[whole:].copy()
        found: list[VoiceEvent] = []
        if not whole:
            return found
        frames = data[:whole].astype(np.float64).reshape(-1, self.window)
        loud = np.sqrt(np.mean(frames * frames, axis=1)) >= self.level
        for is_loud in loud:
            start = self.position_ms
            self.position_ms += WINDOW_MS
            if not self.speaking and is_loud:
                self.speaking, self.quiet_ms = True, 0
                found.append(VoiceEvent("started", max(0, start - self.padding)))
            elif self.speaking:
                self.quiet_ms = 0 if is_loud else self.quiet_ms + WINDOW_MS
                if self.quiet_ms >= self.silence_ms:
                    self.speaking = False
                    found.append(VoiceEvent("stopped", self.position_ms))
        return found

    def reset(self) -> None:
        self.rest = np.zeros(0, dtype=np.int16)
        self.speaking, self.quiet_ms = False, 0


def rms(samples: Samples) -> float:
    """Share of full scale, for tests and logs."""
    if not samples.size:
        return 0.0
    return math.sqrt(float(np.mean(samples.astype(np.float64) ** 2))) / 32768
