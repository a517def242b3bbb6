"""Pieces every Azure OpenAI answer shares: ids, fingerprints, content-filter results, usage."""

from __future__ import annotations

import hashlib
import random
import string

_ALPHABET = string.ascii_letters + string.digits

_SAFE = {"filtered": False, "severity": "safe"}
PROMPT_FILTER = {
    "hate": _SAFE, "jailbreak": {"filtered": False, "detected": False}, "self_harm": _SAFE,
    "sexual": _SAFE, "violence": _SAFE,
}
CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
CONTENT_FILTER_FINAL = {
    **CONTENT_FILTER,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
}


def prompt_filter_results(prompts: int = 1) -> list[dict]:
    return [{"prompt_index": i, "content_filter_results": PROMPT_FILTER} for i in range(prompts)]


def make_id(prefix: str, rng: random.Random) -> str:
    return prefix + "".join(rng.choices(_ALPHABET, k=29))


def fingerprint(model_version: str) -> str:
    # Stable per model version, as a real deployment's fingerprint is between updates.
    return "fp_" + hashlib.sha1(model_version.encode()).hexdigest()[:10]


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> dict:
    return {
        "completion_tokens": completion_tokens,
        "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0,
                                      "reasoning_tokens": reasoning_tokens, "rejected_prediction_tokens": 0},
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }
