"""Server event names and shapes in both flavours: preview (beta) names and GA names."""

from __future__ import annotations

from typing import Any

from .config import GA

# Preview name → GA name, for the events GA renamed.
_GA_NAMES = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "conversation.item.created": "conversation.item.added",
}
# Assistant content part types GA renamed.
_GA_PARTS = {"text": "output_text", "audio": "output_audio"}


def name(preview_name: str, flavour: str) -> str:
    return _GA_NAMES.get(preview_name, preview_name) if flavour == GA else preview_name


def part_type(preview_type: str, flavour: str) -> str:
    return _GA_PARTS.get(preview_type, preview_type) if flavour == GA else preview_type


def error(
    message: str,
    code: str | None,
    param: str | None = None,
    client_event_id: str | None = None,
    kind: str = "invalid_request_error",
) -> dict[str, Any]:
    """The `error` event (its server event_id is added when sent)."""
    return {
        "type": "error",
        "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": client_event_id},
    }


def usage(text_in: int, audio_in: int, cached: int, text_out: int, audio_out: int) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def rate_limits(requests: tuple[int, int], tokens: tuple[int, int]) -> dict[str, Any]:
    """(limit, remaining) of requests and tokens; each resets within a minute."""
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": requests[0], "remaining": requests[1], "reset_seconds": 60.0},
            {"name": "tokens", "limit": tokens[0], "remaining": tokens[1], "reset_seconds": 60.0},
        ],
    }
