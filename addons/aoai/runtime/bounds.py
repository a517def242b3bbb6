"""Every size, count and duration a client can make the simulator spend, with its limit.

Each bound is a setting (environment variable and mitmproxy option of the same name in lower
case) with a default chosen so one request can never take more than a small share of the
process: bodies and headers before they are read, stores in bytes, work before it is done.
`BOUNDS` is the one table: the settings, the Limits table of docs/limits.md and `/++/limits` read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Bound:
    env: str  # the setting's environment variable
    field: str  # the attribute of `Bounds` it sets
    default: int | float
    help: str
    low: float = 1  # the smallest value accepted
    integer: bool = True

    @property
    def option(self) -> str:
        return self.env.lower()


BOUNDS: tuple[Bound, ...] = (
    # What a request may bring, judged before its body is read.
    Bound(
        "SIMULATOR_MAX_BODY_BYTES",
        "max_body_bytes",
        10 * MiB,
        "Largest JSON request body, in bytes (decoded); larger bodies get Azure's 413 before they are read.",
    ),
    Bound(
        "DOC_INTELLIGENCE_MAX_BODY_BYTES",
        "doc_intelligence_body_bytes",
        50 * MiB,
        "Document Intelligence: largest analyze body (a document, or JSON holding one), in bytes; larger gets "
        "Azure's 400 InvalidContentLength before it is read. (Azure's S0 tier takes up to 500 MB.)",
    ),
    Bound(
        "SIMULATOR_MAX_HEADER_BYTES",
        "max_header_bytes",
        64 * KiB,
        "Largest request line and headers together, in bytes; a larger head closes the connection with a 431.",
    ),
    Bound(
        "SIMULATOR_HEADER_TIMEOUT_SECONDS",
        "header_timeout_s",
        30.0,
        "Seconds a client may take to send a request's line and headers once it has begun.",
        low=0.1,
        integer=False,
    ),
    Bound(
        "SIMULATOR_BODY_TIMEOUT_SECONDS",
        "body_timeout_s",
        120.0,
        "Seconds a client may take to send a request's whole body after its headers; slower gets a 408.",
        low=0.1,
        integer=False,
    ),
    # Stores, in bytes (and the counts they already had).
    Bound(
        "RESPONSES_STORED_MAX_BYTES",
        "responses_stored_bytes",
        64 * MiB,
        "Responses API: bytes the stored responses may take together; the oldest leave first.",
    ),
    Bound(
        "IMAGES_STORED_MAX_BYTES",
        "images_stored_bytes",
        64 * MiB,
        "Bytes the images answered as URLs may take together; the oldest leave first.",
    ),
    Bound(
        "DOC_INTELLIGENCE_RESULTS_MAX_BYTES",
        "doc_intelligence_results_bytes",
        32 * MiB,
        "Document Intelligence: bytes the analyze results awaiting their polls may take; the oldest leave first.",
    ),
    Bound(
        "RECORDING_PENDING_MAX_BYTES",
        "recording_pending_bytes",
        64 * MiB,
        "Record mode without autosave: bytes of recorded interactions held for /++/save-recordings; past "
        "this they are saved at once.",
    ),
    Bound(
        "PROMPT_CACHE_MAX_BYTES",
        "prompt_cache_bytes",
        20 * MiB,
        "Bytes the prompt cache's prefix digests may take (about 200 each); the least recently used leave first.",
    ),
    Bound(
        "RETRY_HINTS_MAX_BYTES",
        "retry_hints_bytes",
        8 * MiB,
        "Bytes the early-retry hints of throttled clients may take (about 160 each, the client's identity "
        "hashed); past this the oldest are forgotten.",
    ),
    Bound(
        "RECORDING_CACHE_MAX_BYTES",
        "recording_cache_bytes",
        64 * MiB,
        "Bytes of recorded interactions kept parsed in memory for replay (as their YAML sizes); the least "
        "recently used are read from their files again.",
    ),
    Bound(
        "SIMULATOR_WEB_MAX_FLOW_BYTES",
        "web_flow_bytes",
        256 * MiB,
        "Under mitmweb, bytes the flows kept for its view may take (bodies and heads); the oldest go first.",
    ),
    Bound(
        "METRICS_MAX_DEPLOYMENT_LABELS",
        "metrics_deployment_labels",
        200,
        "Distinct undefined deployment names counted under their own label in /++/metrics; the rest share "
        "the label '(other)'.",
    ),
    # Work a request asks for, judged before it is done.
    Bound(
        "IMAGE_MAX_PIXELS",
        "image_max_pixels",
        36_000_000,
        "Pixels an uploaded image may have (width x height) before it is decoded; more is Azure's 400.",
    ),
    Bound(
        "AUDIO_MAX_SECONDS",
        "audio_max_seconds",
        3 * 3600,
        "Longest audio upload, in seconds, as the bytes can hold it; longer is Azure's 400.",
    ),
    Bound(
        "JSON_ANSWER_MAX_TOKENS",
        "json_answer_tokens",
        131_072,
        "Tokens a request's JSON answers (structured output, tool arguments) may hold together, all "
        "choices; a schema asking for more gets answers cut there, with finish_reason length.",
    ),
)
BY_ENV = {b.env: b for b in BOUNDS}


@dataclass(frozen=True)
class Bounds:
    """The values in force (the defaults until settings are applied)."""

    max_body_bytes: int = BY_ENV["SIMULATOR_MAX_BODY_BYTES"].default  # type: ignore[assignment]
    doc_intelligence_body_bytes: int = BY_ENV["DOC_INTELLIGENCE_MAX_BODY_BYTES"].default  # type: ignore[assignment]
    max_header_bytes: int = BY_ENV["SIMULATOR_MAX_HEADER_BYTES"].default  # type: ignore[assignment]
    header_timeout_s: float = BY_ENV["SIMULATOR_HEADER_TIMEOUT_SECONDS"].default
    body_timeout_s: float = BY_ENV["SIMULATOR_BODY_TIMEOUT_SECONDS"].default
    responses_stored_bytes: int = BY_ENV["RESPONSES_STORED_MAX_BYTES"].default  # type: ignore[assignment]
    images_stored_bytes: int = BY_ENV["IMAGES_STORED_MAX_BYTES"].default  # type: ignore[assignment]
    doc_intelligence_results_bytes: int = BY_ENV["DOC_INTELLIGENCE_RESULTS_MAX_BYTES"].default  # type: ignore[assignment]
    recording_pending_bytes: int = BY_ENV["RECORDING_PENDING_MAX_BYTES"].default  # type: ignore[assignment]
    prompt_cache_bytes: int = BY_ENV["PROMPT_CACHE_MAX_BYTES"].default  # type: ignore[assignment]
    retry_hints_bytes: int = BY_ENV["RETRY_HINTS_MAX_BYTES"].default  # type: ignore[assignment]
    recording_cache_bytes: int = BY_ENV["RECORDING_CACHE_MAX_BYTES"].default  # type: ignore[assignment]
    web_flow_bytes: int = BY_ENV["SIMULATOR_WEB_MAX_FLOW_BYTES"].default  # type: ignore[assignment]
    metrics_deployment_labels: int = BY_ENV["METRICS_MAX_DEPLOYMENT_LABELS"].default  # type: ignore[assignment]
    image_max_pixels: int = BY_ENV["IMAGE_MAX_PIXELS"].default  # type: ignore[assignment]
    audio_max_seconds: int = BY_ENV["AUDIO_MAX_SECONDS"].default  # type: ignore[assignment]
    json_answer_tokens: int = BY_ENV["JSON_ANSWER_MAX_TOKENS"].default  # type: ignore[assignment]

    def to_json(self) -> dict[str, int | float]:
        """For /++/limits: each bound under its setting's name."""
        return {b.env: getattr(self, b.field) for b in BOUNDS}


# Whole numbers above this are refused: every bound fits a 64-bit integer with room to add.
LARGEST = 2**62


class BoundError(ValueError):
    """A bound's setting is wrong; the message names the variable."""


def parse_bound(bound: Bound, raw: str) -> int | float:
    """One setting's text as its value; raises BoundError naming the variable."""
    text = raw.strip().replace("_", "")
    if text == "":
        return bound.default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BoundError(f"{bound.env}: expected a number, got {raw!r}")
    if bound.integer:
        if value != int(value):
            raise BoundError(f"{bound.env}: expected a whole number, got {raw!r}")
        value = int(value)
    if value < bound.low or value > LARGEST:
        raise BoundError(f"{bound.env}: expected a number from {bound.low:g} to {LARGEST}, got {raw.strip()}")
    return value


def parse_bounds(raw_by_env: dict[str, str]) -> Bounds:
    """The settings given (missing ones keep their defaults) as `Bounds`; raises BoundError."""
    values: dict[str, Any] = {b.field: parse_bound(b, raw_by_env[b.env]) for b in BOUNDS if b.env in raw_by_env}
    known = {f.name for f in fields(Bounds)}
    assert set(values) <= known
    return Bounds(**values)
