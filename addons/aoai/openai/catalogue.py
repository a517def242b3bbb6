"""The models a deployment can run, with the facts the simulator needs about each.

`version` is what Azure reports in a response's `model` field (the model version, not the
deployment name). Latency defaults are typical figures for a standard deployment: smaller
models stream faster.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

CHAT = "chat"
COMPLETION = "completion"
EMBEDDING = "embedding"
TRANSCRIPTION = "transcription"  # audio in, text out (transcriptions, translations)
SPEECH = "speech"  # text in, audio out
IMAGE = "image"  # image generations and edits
REALTIME = "realtime"  # speech and text sessions over a WebSocket (the Realtime API)
MEDIA_KINDS = frozenset({TRANSCRIPTION, SPEECH, IMAGE})  # timed per request and per second of audio


@dataclass(frozen=True)
class Model:
    name: str
    kind: str
    version: str
    encoding: str
    context_window: int
    max_output_tokens: int = 0
    embedding_size: int = 0
    supports_dimensions: bool = False
    # Reasoning models take max_completion_tokens only and report reasoning tokens.
    reasoning: bool = False
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    request_ms: float = 0.0
    # Audio and image models: Azure's default requests-per-minute quota for a deployment,
    # and the seconds of work per second of audio (transcription: of the upload; speech: of
    # the answer).
    requests_per_minute: int = 0
    audio_pace: float = 0.0
    # Realtime models: Azure's default tokens-per-minute quota for a deployment (0: none here).
    tokens_per_minute: int = 0


def _chat(
    name: str,
    version: str,
    encoding: str,
    context: int,
    output: int,
    ttft: float,
    itl: float,
    reasoning: bool = False,
) -> Model:
    return Model(name, CHAT, version, encoding, context, output, reasoning=reasoning, ttft_ms=ttft, itl_ms=itl)


def _realtime(name: str, version: str, context: int, ttft: float, itl: float) -> Model:
    return Model(
        name,
        REALTIME,
        version,
        "o200k_base",
        context,
        REALTIME_MAX_OUTPUT_TOKENS,
        ttft_ms=ttft,
        itl_ms=itl,
        requests_per_minute=REALTIME_REQUESTS_PER_MINUTE,
        tokens_per_minute=REALTIME_TOKENS_PER_MINUTE,
    )


# Realtime models. Azure's quota page gives each gpt-4o-realtime-preview deployment 100K tokens
# and 1K requests (new WebSocket connections) a minute, whatever the portal shows; no separate
# figures are published for the others, so they share them. Context windows are the models
# page's input figures plus the 4,096 output tokens: 128,000 for the previews, and 28,672 +
# 4,096 for gpt-realtime (gpt-realtime-mini assumed the same). `ttft_ms` is the time to the
# first audio or text delta, `itl_ms` the gap between text deltas.
REALTIME_MAX_OUTPUT_TOKENS = 4096
REALTIME_TOKENS_PER_MINUTE = 100_000
REALTIME_REQUESTS_PER_MINUTE = 1000


def _realtime_models() -> tuple[Model, ...]:
    return (
        _realtime("gpt-4o-realtime-preview", "gpt-4o-realtime-preview-2024-12-17", 128000, 500, 20),
        _realtime("gpt-4o-mini-realtime-preview", "gpt-4o-mini-realtime-preview-2024-12-17", 128000, 400, 12),
        _realtime("gpt-realtime", "gpt-realtime-2025-08-28", 32768, 450, 15),
        _realtime("gpt-realtime-mini", "gpt-realtime-mini-2025-10-06", 32768, 350, 10),
    )


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        _chat("gpt-35-turbo", "gpt-35-turbo", "cl100k_base", 16385, 4096, 250, 12),
        _chat("gpt-4", "gpt-4", "cl100k_base", 8192, 8192, 600, 45),
        _chat("gpt-4o", "gpt-4o-2024-11-20", "o200k_base", 128000, 16384, 350, 15),
        _chat("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "o200k_base", 128000, 16384, 300, 10),
        _chat("gpt-4.1", "gpt-4.1-2025-04-14", "o200k_base", 1047576, 32768, 400, 14),
        _chat("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "o200k_base", 1047576, 32768, 300, 9),
        _chat("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "o200k_base", 1047576, 32768, 250, 6),
        _chat("gpt-5", "gpt-5-2025-08-07", "o200k_base", 400000, 128000, 1200, 12, reasoning=True),
        _chat("gpt-5-mini", "gpt-5-mini-2025-08-07", "o200k_base", 400000, 128000, 800, 8, reasoning=True),
        _chat("o3-mini", "o3-mini-2025-01-31", "o200k_base", 200000, 100000, 1000, 8, reasoning=True),
        _chat("o4-mini", "o4-mini-2025-04-16", "o200k_base", 200000, 100000, 1000, 8, reasoning=True),
        Model(
            "gpt-35-turbo-instruct",
            COMPLETION,
            "gpt-35-turbo-instruct",
            "cl100k_base",
            4097,
            4096,
            ttft_ms=200,
            itl_ms=10,
        ),
        Model(
            "text-embedding-ada-002",
            EMBEDDING,
            "text-embedding-ada-002",
            "cl100k_base",
            8191,
            embedding_size=1536,
            request_ms=60,
        ),
        Model(
            "text-embedding-3-small",
            EMBEDDING,
            "text-embedding-3-small",
            "cl100k_base",
            8191,
            embedding_size=1536,
            supports_dimensions=True,
            request_ms=50,
        ),
        Model(
            "text-embedding-3-large",
            EMBEDDING,
            "text-embedding-3-large",
            "cl100k_base",
            8191,
            embedding_size=3072,
            supports_dimensions=True,
            request_ms=80,
        ),
        # Azure's default quotas: Whisper and the TTS models 3 requests a minute; DALL-E 3 two
        # capacity units (6 a minute); the gpt-4o audio and gpt-image-1 models are sold in
        # requests too here, 6 a minute where Azure gives new deployments little more.
        Model(
            "whisper",
            TRANSCRIPTION,
            "whisper-001",
            "cl100k_base",
            0,
            request_ms=400,
            requests_per_minute=3,
            audio_pace=0.12,
        ),
        Model(
            "gpt-4o-transcribe",
            TRANSCRIPTION,
            "gpt-4o-transcribe-2025-03-20",
            "o200k_base",
            16000,
            request_ms=300,
            requests_per_minute=6,
            audio_pace=0.08,
        ),
        Model(
            "gpt-4o-mini-transcribe",
            TRANSCRIPTION,
            "gpt-4o-mini-transcribe-2025-03-20",
            "o200k_base",
            16000,
            request_ms=250,
            requests_per_minute=6,
            audio_pace=0.05,
        ),
        Model("tts", SPEECH, "tts-001", "cl100k_base", 0, request_ms=300, requests_per_minute=3, audio_pace=0.1),
        Model("tts-hd", SPEECH, "tts-hd-001", "cl100k_base", 0, request_ms=500, requests_per_minute=3, audio_pace=0.2),
        Model(
            "gpt-4o-mini-tts",
            SPEECH,
            "gpt-4o-mini-tts-2025-03-20",
            "o200k_base",
            2000,
            request_ms=300,
            requests_per_minute=6,
            audio_pace=0.08,
        ),
        *_realtime_models(),
        Model("dall-e-3", IMAGE, "3.0", "cl100k_base", 0, request_ms=8000, requests_per_minute=6),
        Model("gpt-image-1", IMAGE, "gpt-image-1-2025-04-15", "o200k_base", 0, request_ms=15000, requests_per_minute=6),
    )
}

# Users often write OpenAI's spelling of a model name; accept it.
ALIASES = {"gpt-3.5-turbo": "gpt-35-turbo", "gpt-3.5-turbo-instruct": "gpt-35-turbo-instruct"}

# The model an undefined deployment runs, by the kind of operation called on it.
DEFAULT_MODEL_FOR_KIND = {
    CHAT: "gpt-4o",
    COMPLETION: "gpt-35-turbo-instruct",
    EMBEDDING: "text-embedding-3-small",
    TRANSCRIPTION: "whisper",
    SPEECH: "tts",
    IMAGE: "dall-e-3",
    REALTIME: "gpt-realtime",
}


@dataclass(frozen=True)
class Provisioned:
    """What one PTU of a model buys on a provisioned deployment, and Azure's sizes for it.

    `input_tpm_per_ptu`: input tokens per minute per PTU; `output_weight`: how many input
    tokens one output token counts as toward the deployment's utilization. The minimum and
    the increment are those of global and data-zone provisioned deployments (regional ones
    are larger); the simulator only warns about them."""

    input_tpm_per_ptu: int
    output_weight: float
    minimum_ptu: int = 15
    ptu_increment: int = 5


# Microsoft Learn, "Provisioned throughput unit (PTU) costs and billing" (how-to page
# provisioned-throughput-onboarding, dated 2026-04-07), "How much throughput per PTU you get
# for each model". From gpt-4.1 on, output weighs as the global standard price ratio the page
# gives (4 for the gpt-4.1 family and o4-mini, 8 for gpt-5 and gpt-5-mini). For the previous
# models (gpt-4o, gpt-4o-mini, o3-mini) the page only says "older models use different ratios";
# its earlier versions said one output token counts as 3 input tokens for them.
PROVISIONED: dict[str, Provisioned] = {
    "gpt-4o": Provisioned(2500, 3),
    "gpt-4o-mini": Provisioned(37000, 3),
    "o3-mini": Provisioned(2500, 3),
    "gpt-4.1": Provisioned(3000, 4),
    "gpt-4.1-mini": Provisioned(14900, 4),
    "gpt-4.1-nano": Provisioned(59400, 4),
    "o4-mini": Provisioned(5400, 4),
    "gpt-5": Provisioned(4750, 8),
    "gpt-5-mini": Provisioned(23750, 8),
}
# Text models without a published figure (gpt-35-turbo, gpt-35-turbo-instruct, gpt-4): the
# oldest published figures, gpt-4o's. Override them with PTU_INPUT_TPM_PER_PTU or the
# deployment's inputTpmPerPtu.
PROVISIONED_DEFAULT = Provisioned(2500, 3)
PROVISIONED_KINDS = frozenset({CHAT, COMPLETION})  # Azure offers provisioned deployments of text models


def provisioned(model: Model) -> Provisioned:
    return PROVISIONED.get(model.name, PROVISIONED_DEFAULT)


def find_model(name: str) -> Model | None:
    return MODELS.get(ALIASES.get(name, name))


@dataclass
class Normal:
    """A duration in milliseconds drawn from a normal distribution, never negative."""

    mean: float
    std_dev: float = 0.0

    def draw(self, rng: random.Random | None = None) -> float:
        if self.std_dev <= 0:
            return max(0.0, self.mean)
        return max(0.0, (rng or random).gauss(self.mean, self.std_dev))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "stdDev": self.std_dev}
