"""Pieces every Azure OpenAI answer shares: ids, fingerprints, content-filter results, usage."""

from __future__ import annotations

import base64
import functools
import hashlib
import random
from typing import Any

_SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER = {
    "hate": _SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
CONTENT_FILTER_FINAL = {
    **CONTENT_FILTER,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
}


def prompt_filter_results(prompts: int = 1, scored: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each prompt's filter results: all safe, or those the content filter `scored`."""
    if scored:
        return [{"prompt_index": i, "content_filter_results": r} for i, r in enumerate(scored)]
    return [{"prompt_index": i, "content_filter_results": PROMPT_FILTER} for i in range(prompts)]


_NOT_ALPHANUMERIC = bytes.maketrans(b"+/", b"xQ")


def make_id(prefix: str, rng: random.Random) -> str:
    """`prefix` and 29 letters and digits, as OpenAI's ids. From the request's generator, so a
    seeded request gets the same id; base64 of random bytes costs a tenth of choosing 29 letters."""
    return prefix + base64.b64encode(rng.randbytes(22)).translate(_NOT_ALPHANUMERIC)[:29].decode()


@functools.lru_cache(maxsize=64)  # asked for every answer
def fingerprint(model_version: str) -> str:
    # Stable per model version, as a real deployment's fingerprint is between updates.
    return "fp_" + hashlib.sha1(model_version.encode()).hexdigest()[:10]


def usage(
    prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0, cached_tokens: int = 0
) -> dict[str, Any]:
    return {
        "completion_tokens": completion_tokens,
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": reasoning_tokens,
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cached_tokens},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def timeline(
    first: dict[str, Any], per_choice: list[list[dict[str, Any]]], usage: dict[str, Any] | None, opener: bool
) -> list[tuple[int, dict[str, Any]]]:
    """Order a stream's frames and give each the token step it is due at.

    `first` (the prompt-filter frame) leaves at once (step -1). In each choice's frames, the
    opener (the role frame, when `opener`) rides with the first token and the closing frame
    with the last; `n > 1` choices interleave step by step, as Azure sends them.
    """
    stepped = []
    for index, frames in enumerate(per_choice):
        tokens = len(frames) - 1 - (1 if opener else 0)
        last = max(tokens - 1, 0)
        for position, frame in enumerate(frames):
            step = position - 1 if opener else position
            stepped.append((min(max(step, 0), last), index, frame))
    stepped.sort(key=lambda item: (item[0], item[1]))
    out = [(-1, first)] + [(step, frame) for step, _, frame in stepped]
    if usage is not None:
        out.append((out[-1][0], usage))
    return out
