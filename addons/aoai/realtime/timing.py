"""How fast a simulated realtime deployment answers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """`first_audio`: seconds from the start of a response to its first audio (or text) delta.
    `pace`: seconds of audio sent per second of wall time after that (1.0 = real time, 2.0 =
    twice as fast, 0 = no waiting at all)."""

    first_audio: float = 0.0
    pace: float = 1.0

    def offset(self, audio_seconds: float) -> float:
        """Wall seconds after the start of a response at which audio up to `audio_seconds` is sent."""
        if self.pace <= 0:
            return self.first_audio
        return self.first_audio + audio_seconds / self.pace


NO_WAITING = Timing(0.0, 0.0)
