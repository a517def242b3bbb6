"""The baseline for scripts/bench.py: mitmdump answering every request with one fixed
chat-completion-like JSON body, doing no other work. What the simulator achieves is compared
with what mitmproxy itself achieves with this addon.

    mitmdump -s scripts/bench_bare_addon.py --mode reverse:http://127.0.0.1:9 --set connection_strategy=lazy
"""

from __future__ import annotations

import json

from mitmproxy import http

# About the size of the simulator's answer to a 10-token chat request.
BODY = json.dumps(
    {
        "id": "chatcmpl-BenchBareAddonFixedAnswer000001",
        "object": "chat.completion",
        "created": 1730000000,
        "model": "gpt-4o-2024-11-20",
        "system_fingerprint": "fp_0123456789",
        "prompt_filter_results": [
            {
                "prompt_index": 0,
                "content_filter_results": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "jailbreak": {"filtered": False, "detected": False},
                    "self_harm": {"filtered": False, "severity": "safe"},
                    "sexual": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": False, "severity": "safe"},
                },
            }
        ],
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": "Lorem ipsum dolor sit amet, consectetur adipiscing",
                    "refusal": None,
                    "annotations": [],
                },
                "content_filter_results": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "protected_material_code": {"filtered": False, "detected": False},
                    "protected_material_text": {"filtered": False, "detected": False},
                    "self_harm": {"filtered": False, "severity": "safe"},
                    "sexual": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": False, "severity": "safe"},
                },
            }
        ],
        "usage": {
            "completion_tokens": 10,
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "prompt_tokens": 9,
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
            "total_tokens": 19,
        },
    },
    separators=(",", ":"),
).encode()


def request(flow: http.HTTPFlow) -> None:
    flow.response = http.Response.make(200, BODY, {"content-type": "application/json"})
