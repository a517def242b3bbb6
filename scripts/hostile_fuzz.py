"""The hostile suite's mutation fuzzer: real, valid requests (audio made with PyAV, images
made with Pillow, chat / Responses / embeddings / speech / image bodies, transcription and
image-edit forms, Document Intelligence documents, management bodies), mutated and sent over
a raw socket, so nothing is tidied on the way.

Each round takes one base request and applies one to three mutations: bit flips,
truncation, inserted or duplicated bytes, JSON values of another type, huge numbers, deep
nesting, long pathological strings, fields Azure knows added with odd values, media headers
that lie (PNG and JPEG dimensions, WAV and FLAC lengths and rates), multipart parts broken,
dropped or repeated, header values that are huge integers, very long, not UTF-8 or
duplicated, odd query strings and paths, and a wrong Content-Length now and then. A round
fails on a 5xx, on a health probe held longer than SPIKE_S while it ran, on resident memory
rising by RSS_LIMIT_MIB within it, or on the simulator exiting. Round R of seed S is made
from Random(f"{S}:{R}") alone: `--only fuzz --fuzz 1 --fuzz-from R --seed S` sends it again.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import random
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hostile_client import MiB, Samples, exchange, request_head
from hostile_inputs import data_url, multipart, small_jpeg, small_png, tone

if TYPE_CHECKING:
    from hostile import Harness, Result, Server

SPIKE_S = 0.25  # a health probe held this long while a round ran: the round stalled the loop
RSS_LIMIT_MIB = 100.0
ROUND_TIMEOUT_S = 4.0
MAX_BODY = 2 * MiB  # mutations stop growing a body here (the suite stays light)
VERSION = "2024-10-21"

# --- the corpus --------------------------------------------------------------------------------


@dataclass
class Base:
    name: str
    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    parts: list[list] | None = None  # [field, content, file name, content type]
    raw: bytes | None = None
    content_type: str | None = None
    changes_config: bool = False


def _deployment(deployment: str, operation: str) -> tuple[str, list[tuple[str, str]]]:
    return f"/openai/deployments/{deployment}/{operation}", [("api-version", VERSION)]


ADDED_DEPLOYMENTS = ("fz", "fz-ptu")  # what the PATCH bases below add


def corpus() -> list[Base]:
    wav, mp3, flac = tone("wav", 1.0), tone("mp3", 1.0), tone("flac", 1.0)
    png, jpeg = small_png(48, 32), small_jpeg(40, 40)
    pdf = b"%PDF-1.7\n" + b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % i for i in range(2)) + b"%%EOF\n"
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["city", "nights", "tags"],
        "properties": {
            "city": {"type": "string", "enum": ["Paris", "Rome"]},
            "nights": {"type": "integer", "minimum": 1, "maximum": 9},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 2}, "maxItems": 3},
        },
    }
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["location"],
            },
        },
    }
    chat_path, chat_query = _deployment("gpt-4o", "chat/completions")
    bases = [
        Base(
            "chat",
            "POST",
            chat_path,
            chat_query,
            json={
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}],
                "max_tokens": 8,
                "temperature": 0.7,
                "n": 1,
                "seed": 3,
                "user": "u1",
            },
        ),
        Base(
            "chat-tools",
            "POST",
            chat_path,
            chat_query,
            json={
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [tool],
                "tool_choice": "auto",
                "max_tokens": 30,
            },
        ),
        Base(
            "chat-schema",
            "POST",
            chat_path,
            chat_query,
            json={
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Plan a trip."},
                            {"type": "image_url", "image_url": {"url": data_url(png)}},
                        ],
                    }
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "trip", "strict": True, "schema": schema},
                },
                "max_tokens": 40,
            },
        ),
        Base(
            "chat-stream",
            "POST",
            "/openai/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Count to five."}],
                "max_tokens": 10,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        Base(
            "completions",
            "POST",
            *_deployment("gpt-35-turbo-instruct", "completions"),
            json={"prompt": ["Once upon", "a time"], "max_tokens": 6, "echo": True, "best_of": 1, "logprobs": 2},
        ),
        Base(
            "embeddings",
            "POST",
            *_deployment("text-embedding-3-small", "embeddings"),
            json={"input": ["first text", "second text"], "dimensions": 64, "encoding_format": "base64"},
        ),
        Base(
            "embeddings-tokens",
            "POST",
            "/openai/v1/embeddings",
            json={"model": "text-embedding-3-large", "input": [[1, 2, 3, 4], [5, 6]]},
        ),
        Base(
            "responses",
            "POST",
            "/openai/v1/responses",
            json={
                "model": "gpt-4o",
                "instructions": "Be brief.",
                "max_output_tokens": 32,
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "What is this?"},
                            {"type": "input_image", "image_url": data_url(png)},
                        ],
                    }
                ],
                "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
                "metadata": {"k": "v"},
            },
        ),
        Base(
            "responses-tools",
            "POST",
            "/openai/v1/responses",
            json={
                "model": "o4-mini",
                "input": "Weather?",
                "reasoning": {"effort": "low", "summary": "auto"},
                "tools": [{"type": "function", "name": "get_weather", "parameters": tool["function"]["parameters"]}],
                "max_output_tokens": 300,
                "stream": True,
            },
        ),
        Base(
            "responses-get",
            "GET",
            "/openai/v1/responses/resp_0123456789abcdef/input_items",
            [("limit", "5"), ("order", "asc")],
        ),
        Base(
            "speech",
            "POST",
            *_deployment("tts", "audio/speech"),
            json={
                "model": "tts",
                "input": "A short sentence to say.",
                "voice": "alloy",
                "speed": 1.5,
                "response_format": "mp3",
            },
        ),
        Base(
            "image-generation",
            "POST",
            *_deployment("dall-e-3", "images/generations"),
            json={"prompt": "A lighthouse", "size": "1024x1024", "quality": "standard", "response_format": "b64_json"},
        ),
        Base(
            "transcription-wav",
            "POST",
            *_deployment("whisper", "audio/transcriptions"),
            parts=[
                ["file", wav, "a.wav", "audio/wav"],
                ["response_format", b"verbose_json", None, None],
                ["timestamp_granularities[]", b"word", None, None],
                ["language", b"en", None, None],
            ],
        ),
        Base(
            "transcription-mp3",
            "POST",
            "/openai/v1/audio/transcriptions",
            parts=[
                ["file", mp3, "a.mp3", "audio/mpeg"],
                ["model", b"whisper", None, None],
                ["response_format", b"srt", None, None],
                ["temperature", b"0.2", None, None],
            ],
        ),
        Base(
            "translation-flac",
            "POST",
            *_deployment("whisper", "audio/translations"),
            parts=[
                ["file", flac, "a.flac", "audio/flac"],
                ["response_format", b"vtt", None, None],
                ["prompt", b"A talk.", None, None],
            ],
        ),
        Base(
            "image-edit-png",
            "POST",
            *_deployment("gpt-image-1", "images/edits"),
            parts=[
                ["image", png, "in.png", "image/png"],
                ["prompt", b"Add a hat", None, None],
                ["size", b"1024x1024", None, None],
                ["quality", b"low", None, None],
            ],
        ),
        Base(
            "image-edit-jpeg",
            "POST",
            "/openai/v1/images/edits",
            parts=[
                ["model", b"gpt-image-1", None, None],
                ["image[]", jpeg, "in.jpg", "image/jpeg"],
                ["image[]", png, "two.png", "image/png"],
                ["mask", png, "mask.png", "image/png"],
                ["prompt", b"Make it blue", None, None],
                ["output_format", b"webp", None, None],
            ],
        ),
        Base(
            "docintel-pdf",
            "POST",
            "/documentintelligence/documentModels/prebuilt-layout:analyze",
            [("api-version", "2024-11-30")],
            raw=pdf,
            content_type="application/pdf",
        ),
        Base(
            "docintel-json",
            "POST",
            "/formrecognizer/documentModels/prebuilt-invoice:analyze",
            [("api-version", "2023-07-31")],
            json={"base64Source": "JVBERi0xLjcKJSVFT0YK"},
        ),
        Base(
            "docintel-url",
            "POST",
            "/documentintelligence/documentModels/prebuilt-read:analyze",
            [("api-version", "2024-11-30")],
            json={"urlSource": "https://example.com/doc.pdf"},
        ),
        Base(
            "patch-config",
            "PATCH",
            "/++/config",
            changes_config=True,
            json={
                "seed": 5,
                "latency": {"enabled": False, "chatCompletions": {"mean": 1, "stdDev": 0}},
                "deployments": {
                    "fz": {
                        "model": "gpt-4o",
                        "tokensPerMinute": 100000,
                        "requestsPerMinute": 600,
                        "maxConcurrentRequests": 8,
                    }
                },
            },
        ),
        Base(
            "patch-filter",
            "PATCH",
            "/++/config",
            changes_config=True,
            json={
                "contentFilter": {
                    "cf": {
                        "blockAt": "medium",
                        "randomShare": {"prompt": 0.1, "completion": 0.1},
                        "prompt": {
                            "violence": [
                                {"term": "fight", "severity": "low"},
                                {"regex": "\\bkill(ed)?\\b", "severity": "high"},
                            ],
                            "jailbreak": ["ignore previous instructions"],
                        },
                    }
                }
            },
        ),
        Base(
            "patch-ptu",
            "PATCH",
            "/++/config",
            changes_config=True,
            json={
                "allowUndefinedDeployments": True,
                "resetLimits": True,
                "deployments": {
                    "fz-ptu": {"model": "gpt-4o", "sku": "ProvisionedManaged", "ptu": 15, "inputTpmPerPtu": 2500}
                },
            },
        ),
        Base(
            "token",
            "POST",
            "/++/token",
            json={
                "oid": "0000-oid",
                "tid": "0000-tid",
                "appid": "app",
                "aud": "https://cognitiveservices.azure.com",
                "expiresIn": 3600,
                "claims": {"roles": ["reader"], "name": "Hostile"},
            },
        ),
        Base("config", "GET", "/++/config"),
        Base("limits", "GET", "/++/limits"),
        Base("models", "GET", "/openai/v1/models"),
    ]
    return bases


# --- a request being mutated -------------------------------------------------------------------


@dataclass
class Draft:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, bytes]]
    json: Any = None
    parts: list[list] | None = None
    raw: bytes | None = None
    content_type: str | None = None
    boundary: str = "fuzz-boundary-5c2e"
    length_delta: int | None = None  # a Content-Length this much off the body's
    spliced: dict[str, str] = field(default_factory=dict)  # placeholder string -> JSON text put there

    def body(self) -> bytes:
        if self.json is not None:
            text = json.dumps(self.json)
            for placeholder, raw in self.spliced.items():
                text = text.replace(json.dumps(placeholder), raw)
            return text.encode()
        if self.parts is not None:
            return multipart([tuple(p) for p in self.parts], self.boundary)[0]
        return self.raw or b""

    def freeze(self) -> None:
        """From here on the body is bytes (a byte-level mutation follows)."""
        if self.json is not None or self.parts is not None:
            self.raw = self.body()
            self.json = self.parts = None

    def encode(self) -> tuple[bytes, bytes]:
        body = self.body()
        query = "&".join(f"{k}={v}" if v is not None else k for k, v in self.query)
        target = self.path + ("?" + query if query else "")
        headers = list(self.headers)
        length = len(body) + (self.length_delta or 0)
        head = request_head(
            self.method,
            target.encode("utf-8", "surrogateescape"),
            headers,
            length=max(0, length) if (body or self.method in ("POST", "PATCH")) else None,
        )
        return head, body


KEY_PLACEHOLDER = "{key}"


def draft_of(base: Base, key: str) -> Draft:
    headers = [("api-key", key.encode()), ("Connection", b"close")]
    draft = Draft(
        base.method,
        base.path,
        list(base.query),
        headers,
        copy.deepcopy(base.json),
        copy.deepcopy(base.parts),
        base.raw,
        base.content_type,
    )
    if base.json is not None:
        draft.headers.append(("Content-Type", b"application/json"))
    elif base.parts is not None:
        draft.headers.append(("Content-Type", f"multipart/form-data; boundary={draft.boundary}".encode()))
    elif base.content_type:
        draft.headers.append(("Content-Type", base.content_type.encode()))
    return draft


# --- mutations -----------------------------------------------------------------------------------

HUGE_INTS = [2**31, 2**32 + 1, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400, -1, 0]
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    1e308,
    -1e308,
    5e-324,
    "",
    "0",
    "-1",
    "NaN",
    "1e999",
    "\u0000",
    "\ud800",
    "\U0001f600" * 50,
    [],
    {},
    [None],
    {"": None},
    [[[]]],
    {"type": "object"},
    "x" * 5000,
    2**64,
    10**30,
]
ODD_TEXT = [
    b"-1",
    b"0",
    b"1e309",
    b"NaN",
    b"inf",
    b"99999999999999999999999999",
    b"",
    b" ",
    b"\x00",
    b"\xff\xfe",
    b"..",
    b"%00",
    b"\xc3\x28",
    b"true",
    b"[]",
    b"{}",
    b"a" * 5000,
]
KNOWN_FIELDS = [
    "n",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "seed",
    "dimensions",
    "encoding_format",
    "user",
    "logit_bias",
    "stop",
    "previous_response_id",
    "store",
    "truncation",
    "reasoning",
    "reasoning_effort",
    "text",
    "metadata",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "best_of",
    "echo",
    "suffix",
    "input",
    "messages",
    "prompt",
    "model",
    "voice",
    "speed",
    "size",
    "quality",
    "style",
    "background",
    "include",
    "functions",
    "function_call",
    "data_sources",
    "prediction",
    "modalities",
    "audio",
    "instructions",
    "urlSource",
    "base64Source",
    "expiresIn",
    "claims",
    "deployments",
    "contentFilter",
    "faults",
    "latency",
    "mode",
]
PATHOLOGICAL = [" ", "\t", "\n", "a", "\u200b", "\U0001f600", "<|endoftext|>", "\\", '"', "ab", " a", "1"]
FUZZ_HEADERS = [
    "api-key",
    "authorization",
    "ocp-apim-subscription-key",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "x-ms-client-request-id",
    "idempotency-key",
    "x-ms-simulator-content-filter",
    "x-simulator-stream",
    "x-simulator-peer",
    "x-request-id",
    "traceparent",
    "accept",
    "expect",
    "transfer-encoding",
    "host",
]


def _nodes(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every node of a JSON value with its path (keys and indexes)."""
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, path + (i,))
    return out


def _set(root: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = root
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return root


def _where(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "(body)"


def m_json_type(d: Draft, rng: random.Random) -> str | None:
    if d.json is None:
        return None
    path, _ = rng.choice(_nodes(d.json))
    value = copy.deepcopy(rng.choice(ODD_VALUES))
    d.json = _set(d.json, path, value)
    return f"json-type {_where(path)}={_short(value)}"


def m_json_number(d: Draft, rng: random.Random) -> str | None:
    if d.json is None:
        return None
    numbers = [(p, v) for p, v in _nodes(d.json) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    path = rng.choice(numbers)[0] if numbers else rng.choice(_nodes(d.json))[0]
    value = rng.choice(HUGE_INTS + [1e300, -1e300, 0.1, 2.5])
    d.json = _set(d.json, path, value)
    return f"json-number {_where(path)}={_short(value)}"


def m_json_drop(d: Draft, rng: random.Random) -> str | None:
    if d.json is None:
        return None
    inner = [(p, v) for p, v in _nodes(d.json) if p]
    if not inner:
        return None
    path, _ = rng.choice(inner)
    parent = d.json
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return f"json-drop {_where(path)}"


def m_json_duplicate(d: Draft, rng: random.Random) -> str | None:
    if d.json is None:
        return None
    lists = [(p, v) for p, v in _nodes(d.json) if isinstance(v, list) and v]
    if not lists:
        return None
    path, value = rng.choice(lists)
    times = rng.choice([2, 10, 100, 1000, 5000])
    item = rng.choice(value)
    size = len(json.dumps(item))
    times = max(2, min(times, MAX_BODY // max(1, size)))
    value.extend(copy.deepcopy(item) for _ in range(times))
    return f"json-duplicate {_where(path)} x{times}"


def m_json_nest(d: Draft, rng: random.Random) -> str | None:
    if d.json is None:
        return None
    path, value = rng.choice(_nodes(d.json))
    depth = rng.choice([2, 40, 600, 5000])
    inner = json.dumps(value)
    if rng.random() < 0.5:
        raw, shape = "[" * depth + inner + "]" * depth, "[]"
    else:
        raw, shape = '{"x":' * depth + inner + "}" * depth, "{}"
    # Too deep for json.dumps: the text goes in where a placeholder string stands.
    placeholder = f"\u0001nest{len(d.spliced)}\u0001"
    d.spliced[placeholder] = raw
    d.json = _set(d.json, path, placeholder)
    return f"json-nest {_where(path)} {shape}x{depth}"


def m_json_string(d: Draft, rng: random.Random) -> str | None:
    if d.json is None:
        return None
    strings = [(p, v) for p, v in _nodes(d.json) if isinstance(v, str)]
    if not strings:
        return None
    path, _ = rng.choice(strings)
    unit = rng.choice(PATHOLOGICAL)
    length = rng.choice([100, 10_000, 200_000, 1_000_000])
    value = unit * max(1, min(length, MAX_BODY // 2) // len(unit))
    d.json = _set(d.json, path, value)
    return f"json-string {_where(path)}={unit!r}x{len(value) // len(unit)}"


def m_json_field(d: Draft, rng: random.Random) -> str | None:
    if not isinstance(d.json, dict):
        return None
    name = rng.choice(KNOWN_FIELDS)
    value = copy.deepcopy(rng.choice(ODD_VALUES + [True, 1, 10, 128, "auto", {"type": "json_object"}]))
    d.json[name] = value
    return f"json-field {name}={_short(value)}"


def _body_bytes(d: Draft) -> tuple[bytes, Any]:
    """The bytes a byte-level mutation works on, and how to put them back: a file part's
    content when the body is a form (mostly), else the whole body."""
    if d.parts is not None:
        files = [p for p in d.parts if p[2] is not None]
        if files:
            part = files[0]
            return part[1], lambda data: part.__setitem__(1, data)
    d.freeze()
    return d.raw or b"", lambda data: setattr(d, "raw", data)


def m_bitflip(d: Draft, rng: random.Random) -> str | None:
    data, put = _body_bytes(d)
    if not data:
        return None
    data = bytearray(data)
    flips = rng.choice([1, 2, 8, 32])
    front = rng.random() < 0.5  # container and image headers sit at the front
    for _ in range(flips):
        i = rng.randrange(min(len(data), 256)) if front else rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    put(bytes(data))
    return f"bitflip x{flips}{' front' if front else ''}"


def m_truncate(d: Draft, rng: random.Random) -> str | None:
    data, put = _body_bytes(d)
    if not data:
        return None
    at = rng.choice([0, 1, rng.randrange(len(data)), rng.randrange(min(len(data), 64))])
    put(data[:at])
    return f"truncate at {at}"


def m_insert(d: Draft, rng: random.Random) -> str | None:
    data, put = _body_bytes(d)
    at = rng.randrange(len(data) + 1)
    blob = rng.choice(
        [
            b"\x00",
            b"\xff" * 4,
            b'"',
            b"{",
            b"[" * 64,
            b"\\u0000",
            b"\r\n\r\n",
            b"\xc3\x28",
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
        ]
    )
    put(data[:at] + blob + data[at:])
    return f"insert {len(blob)} bytes at {at}"


def m_duplicate(d: Draft, rng: random.Random) -> str | None:
    data, put = _body_bytes(d)
    if not data:
        return None
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice([1, 16, 512, 65536]))
    times = max(1, min(rng.choice([1, 10, 100]), (MAX_BODY - len(data)) // max(1, b - a)))
    put(data[:b] + data[a:b] * times + data[b:])
    return f"duplicate [{a}:{b}] x{times}"


def m_delete(d: Draft, rng: random.Random) -> str | None:
    data, put = _body_bytes(d)
    if len(data) < 2:
        return None
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice([1, 8, 256, 4096]))
    put(data[:a] + data[b:])
    return f"delete [{a}:{b}]"


def _png_with(data: bytes, width: int, height: int) -> bytes | None:
    if not data.startswith(b"\x89PNG") or len(data) < 33:
        return None
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def _jpeg_with(data: bytes, width: int, height: int) -> bytes | None:
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]
        i += 2 + length
    return None


def _wav_with(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if not data.startswith(b"RIFF") or len(data) < 44:
        return None
    field_at, name = rng.choice([(4, "riff size"), (24, "sample rate"), (28, "byte rate"), (40, "data size")])
    value = rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 8000])
    return data[:field_at] + struct.pack("<I", value) + data[field_at + 4 :], f"wav {name}={value}"


def _flac_with(data: bytes, rng: random.Random) -> tuple[bytes, str] | None:
    if not data.startswith(b"fLaC") or len(data) < 42:
        return None
    word = int.from_bytes(data[18:26], "big")
    choice = rng.randrange(3)
    if choice == 0:
        samples = rng.choice([0, 1, 2**36 - 1, 2**35])
        word = (word & ~(2**36 - 1)) | samples
        what = f"flac total samples={samples}"
    elif choice == 1:
        rate = rng.choice([0, 1, 2**20 - 1])
        word = (word & (2**44 - 1)) | (rate << 44)
        what = f"flac sample rate={rate}"
    else:
        channels = rng.randrange(8)
        word = (word & ~(0b111 << 41)) | (channels << 41)
        what = f"flac channels={channels + 1}"
    return data[:18] + word.to_bytes(8, "big") + data[26:], what


def m_media_header(d: Draft, rng: random.Random) -> str | None:
    """A media file whose header lies: dimensions, lengths, rates (checksums kept valid)."""
    if d.parts is None:
        return None
    files = [p for p in d.parts if p[2] is not None]
    if not files:
        return None
    part = rng.choice(files)
    data = part[1]
    width, height = rng.choice([(0, 0), (1, 1 << 30), (65000, 65000), (20000, 20000), (2**31 - 1, 1), (7000, 7000)])
    changed = _png_with(data, width, height)
    what = f"png {width}x{height}"
    if changed is None and data.startswith(b"\xff\xd8"):
        width, height = min(width, 65535), min(height, 65535)
        changed, what = _jpeg_with(data, width, height), f"jpeg {width}x{height}"
    if changed is None:
        made = _wav_with(data, rng) or _flac_with(data, rng)
        if made is None:
            return None
        changed, what = made
    part[1] = changed
    return f"media-header {what}"


def m_form(d: Draft, rng: random.Random) -> str | None:
    if d.parts is None:
        return None
    choice = rng.randrange(6)
    part = rng.choice(d.parts)
    if choice == 0 and part[2] is not None:
        part[2] = rng.choice(
            [
                "a.exe",
                "a",
                "",
                "a.wav.flac",
                "a.FLAC",
                "x" * 4000 + ".wav",
                "a\x00.wav",
                "\u00e9\U0001f600.mp3",
                "../../etc/passwd.png",
            ]
        )
        return f"form filename={_short(part[2])}"
    if choice == 1 and part[2] is None:
        part[1] = rng.choice(ODD_TEXT)
        return f"form {part[0]}={_short(part[1])}"
    if choice == 2 and len(d.parts) > 1:
        d.parts.remove(part)
        return f"form drop {part[0]}"
    if choice == 3:
        times = rng.choice([1, 5, 40])
        total = sum(len(p[1]) for p in d.parts)
        times = max(1, min(times, (MAX_BODY - total) // max(1, len(part[1]))))
        d.parts.extend(copy.deepcopy(part) for _ in range(times))
        return f"form repeat {part[0]} x{times}"
    if choice == 4:
        part[3] = rng.choice(
            [
                "application/octet-stream",
                "",
                "text/plain; charset=\xff",
                "image/png",
                "audio/wav",
                "multipart/form-data; boundary=" + d.boundary,
            ]
        )
        return f"form part type={_short(part[3])}"
    d.boundary = rng.choice(["", "x", "a" * 200, "fuzz-boundary-5c2e--", "\u00e9"])
    if rng.random() < 0.5:  # the header and the body disagree
        d.headers = [(n, v) for n, v in d.headers if n.lower() != "content-type"]
        d.headers.append(("Content-Type", b"multipart/form-data; boundary=fuzz-boundary-5c2e"))
    return f"form boundary={_short(d.boundary)}"


def m_header(d: Draft, rng: random.Random) -> str | None:
    name = rng.choice(FUZZ_HEADERS)
    choice = rng.randrange(5)
    if choice == 0:
        value = str(rng.choice(HUGE_INTS)).encode()
        what = "huge integer"
    elif choice == 1:
        value = rng.choice([b"\xff\xfe\xfd", b"\xc3\x28", b"a\x00b", b"\x7f\x1b[31m", "\u00e9".encode("latin-1")])
        what = "bytes"
    elif choice == 2:
        value = b"v" * rng.choice([1024, 8192, 70_000, 200_000])
        what = f"{len(value)} bytes"
    elif choice == 3:
        d.headers = [(n, v) for n, v in d.headers if n.lower() != name]
        return f"header drop {name}"
    else:
        value = rng.choice(
            [
                b"gzip",
                b"br",
                b"zstd",
                b"deflate",
                b"chunked",
                b"100-continue",
                b"Bearer ",
                b"Bearer x.y.z",
                b"prompt=violence:high,completion=hate",
                b"prompt=",
                b"application/json",
                b"text/plain",
                b"1",
            ]
        )
        what = "odd value"
    if rng.random() < 0.5:
        d.headers = [(n, v) for n, v in d.headers if n.lower() != name]
    d.headers.append((name, value))
    return f"header {name}: {what}"


def m_query(d: Draft, rng: random.Random) -> str | None:
    choice = rng.randrange(4)
    if choice == 0:
        value = rng.choice(
            [
                "",
                "2024-10-21-preview",
                "9999-99-99",
                "2024-10-21&api-version=2023-01-01",
                "x" * 5000,
                "%ff%fe",
                str(2**64),
                "2025-04-01-preview",
            ]
        )
        d.query = [(k, v) for k, v in d.query if k != "api-version"] + [("api-version", value)]
        return f"query api-version={_short(value)}"
    if choice == 1:
        d.query.append(("api-key", rng.choice(["wrong", "", "%ff"])))
        return "query api-key"
    if choice == 2:
        d.query.append(
            (
                rng.choice(["limit", "order", "after", "before", "include[]", "stream"]),
                str(rng.choice(HUGE_INTS + ["asc", "", "%00"])),
            )
        )
        return "query extra"
    d.query = d.query * rng.choice([2, 50])
    return "query repeated"


def m_path(d: Draft, rng: random.Random) -> str | None:
    segments = d.path.split("/")
    if len(segments) < 3:
        return None
    i = rng.randrange(1, len(segments))
    value = rng.choice(
        [
            "",
            "%2F",
            "%00",
            "..",
            "x" * 3000,
            "%ff%fe",
            "\u00e9",
            "gpt-4o%2Fchat",
            "GPT-4O",
            "deployments",
            "%3Aanalyze",
            "a" * 64,
        ]
    )
    segments[i] = value
    d.path = "/".join(segments)
    return f"path segment {i}={_short(value)}"


def m_framing(d: Draft, rng: random.Random) -> str | None:
    d.length_delta = rng.choice([-5, 1, 1000])
    return f"content-length off by {d.length_delta}"


MUTATIONS = [
    (m_json_type, 6),
    (m_json_number, 4),
    (m_json_drop, 3),
    (m_json_duplicate, 2),
    (m_json_nest, 2),
    (m_json_string, 3),
    (m_json_field, 4),
    (m_bitflip, 4),
    (m_truncate, 3),
    (m_insert, 2),
    (m_duplicate, 2),
    (m_delete, 2),
    (m_media_header, 4),
    (m_form, 4),
    (m_header, 5),
    (m_query, 2),
    (m_path, 2),
    (m_framing, 1),
]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def make_round(bases: list[Base], key: str, seed: int, number: int) -> tuple[Base, Draft, list[str]]:
    rng = random.Random(f"{seed}:{number}")
    base = rng.choice(bases)
    draft = draft_of(base, key)
    done: list[str] = []
    wanted = rng.choice([1, 1, 2, 3])
    tries = 0
    functions, weights = zip(*MUTATIONS, strict=False)
    while len(done) < wanted and tries < 20:
        tries += 1
        what = rng.choices(functions, weights)[0](draft, rng)
        if what is not None:
            done.append(what)
    return base, draft, done


# --- running -----------------------------------------------------------------------------------------


@dataclass
class Round:
    number: int
    base: str
    mutations: list[str]
    outcome: str
    start: float
    end: float
    head: bytes
    failures: list[str] = field(default_factory=list)


async def restore(harness: Harness, server: Server) -> str | None:
    """The configuration back as the run began, after a round that may have changed it."""
    from hostile import DEPLOYMENTS, KEY

    client = harness.client
    headers = {"api-key": KEY}
    try:
        now = await client.get(server.url + "/++/config", headers=headers, timeout=10)
        names = set(now.json().get("deployments", {})) if now.status_code == 200 else set()
        # The corpus's own names go whatever GET says (a value it cannot show may be in force).
        names |= set(ADDED_DEPLOYMENTS)
        deployments: dict[str, Any] = {name: None for name in names - set(DEPLOYMENTS)}
        deployments.update(DEPLOYMENTS)
        patch = {
            "mode": "generate",
            "seed": 1,
            "allowUndefinedDeployments": True,
            "faults": None,
            "latency": {"enabled": False, "chatCompletions": None, "completions": None, "embeddings": None},
            "deployments": deployments,
            "resetLimits": True,
        }
        answer = await client.patch(server.url + "/++/config", json=patch, headers=headers, timeout=10)
        if answer.status_code != 200:
            return f"restoring the configuration got {answer.status_code}: {answer.text[:120]}"
    except Exception as e:
        return f"restoring the configuration failed: {type(e).__name__}: {e}"
    return None


async def run(harness: Harness, server: Server, rounds: int, seed: int, first: int = 0) -> Result:
    """`rounds` fuzz rounds from round `first`, against `server`; one Result for the table."""
    from hostile import KEY, Case, Result

    fuzz_case = Case(
        "fuzz",
        "fuzz",
        f"{rounds} mutated requests (seed {seed})",
        "main",
        None,  # type: ignore[arg-type]
        {"": {"2xx", "3xx", "4xx", "closed", "timeout"}},
        lag_ms=float("inf"),
        rss_mib=RSS_LIMIT_MIB,
        exception=f"rounds fail one by one: a 5xx, a health probe held >= {SPIKE_S * 1000:.0f} ms, "
        f"+{RSS_LIMIT_MIB:g} MiB within a round, or an exit",
    )
    result = Result(fuzz_case)
    bases = corpus()
    done: list[Round] = []
    segments: list[Samples] = []
    log_offset = server.log_size()
    monitor = harness.monitor
    # Each kind of request once, unmutated and unmeasured: what loads with the first audio or
    # image request is not put on a round.
    for base in bases:
        if not base.changes_config:
            await exchange(server.port, *draft_of(base, KEY).encode(), timeout=30, keep=0)
    await asyncio.to_thread(monitor.start, server.port, server.pids())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    for number in range(first, first + rounds):
        try:
            base, draft, mutations = make_round(bases, KEY, seed, number)
            head, body = draft.encode()
        except Exception as e:
            result.notes.append(f"round {number} not sent: {type(e).__name__}: {e}")
            continue
        began = time.monotonic()
        # A body shorter than its Content-Length is followed by the end of what the client sends.
        answer = await exchange(
            server.port, head, body, timeout=ROUND_TIMEOUT_S, keep=0, half_close=(draft.length_delta or 0) > 0
        )
        outcome = answer.outcome
        this = Round(number, base.name, mutations, outcome, began, time.monotonic(), head[:300])
        trouble = None
        if outcome == "refused" or not server.process.alive():
            trouble = await harness.servers.recover(server, 30) or "connection refused"
        elif outcome == "timeout":  # held, or waiting for a body it was promised: wait until it serves again
            trouble = await harness.servers.recover(server, 60)
        if trouble:
            this.failures.append(trouble)
            if harness.servers.running.get("main") is not server:  # it was restarted: measure the new one
                segments.append(await asyncio.to_thread(monitor.stop))
                server = await harness.servers.get("main")
                await asyncio.to_thread(monitor.start, server.port, server.pids())
        if base.changes_config and server.process.alive():
            trouble = await restore(harness, server)
            if trouble:
                this.failures.append(trouble)
        done.append(this)
        result.statuses[("", outcome if not outcome[0].isdigit() else outcome[0] + "xx")] += 1
    result.seconds = time.monotonic() - started
    segments.append(await asyncio.to_thread(monitor.stop))
    samples = Samples([p for s in segments for p in s.probes], [r for s in segments for r in s.rss])
    result.samples = samples
    _judge(done, samples)
    failed = [r for r in done if r.failures or r.outcome.startswith("5")]
    for r in failed:
        if r.outcome.startswith("5"):
            r.failures.insert(0, f"answered {r.outcome}")
    if failed:
        result.problems.append(f"{len(failed)} of {len(done)} rounds failed")
    kinds = Counter(_kind(f) for r in failed for f in r.failures)
    result.notes.append(
        f"{len(done)} rounds in {result.seconds:.0f} s; failures by kind: "
        + (", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none")
    )
    for r in failed[:25]:
        result.notes.append(
            f"round {r.number} ({r.base}: {'; '.join(r.mutations)}): {'; '.join(r.failures)}"
            f"\n      {r.head.split(b'\r\n')[0][:160].decode('latin-1')}"
            f"\n      reproduce: python scripts/hostile.py --only fuzz --fuzz 1 --fuzz-from {r.number} --seed {seed}"
        )
    if len(failed) > 25:
        result.notes.append(f"… and {len(failed) - 25} more rounds (all in --json)")
    errors = _log_errors_of(server, log_offset)
    if errors:
        result.notes.append("log: " + " | ".join(errors))
    result.fuzz_rounds = [
        {"round": r.number, "base": r.base, "mutations": r.mutations, "outcome": r.outcome, "failures": r.failures}
        for r in failed
    ]
    return result


def _kind(failure: str) -> str:
    for start, kind in (("answered", "5xx"), ("health", "stall"), ("RSS", "memory"), ("restoring", "restore")):
        if failure.startswith(start):
            return kind
    return "exit"


def _judge(rounds: list[Round], samples: Samples) -> None:
    """Health stalls and memory rises, each put on the round that caused it: the round that was
    running (or had just ended) when the held probe was sent. Rounds sent while the loop was
    already held are its victims, not its cause."""
    from hostile_client import INTERVAL_S

    held: list[tuple[float, float]] = []
    for sent, latency, _ in samples.probes:
        if latency < SPIKE_S:
            continue
        held.append((sent, sent + latency))
        culprits = [r for r in rounds if r.start <= sent <= r.end]
        if not culprits:  # it had just been answered, and the loop was still busy with it
            culprits = [r for r in rounds if r.start <= sent and r.end >= sent - 2 * INTERVAL_S][-1:]
        for r in culprits:
            r.failures.append(f"health probe held {latency * 1000:.0f} ms")

    def victim(r: Round) -> bool:
        return any(begin < r.start < end for begin, end in held) and not any(f.startswith("health") for f in r.failures)

    by_pid: dict[int, list[tuple[float, int]]] = {}
    for at, pid, kib in samples.rss:
        if kib is not None:
            by_pid.setdefault(pid, []).append((at, kib))
    for series in by_pid.values():
        times = [at for at, _ in series]
        for r in rounds:
            if victim(r):
                continue
            i = bisect.bisect_right(times, r.start)
            j = bisect.bisect_right(times, r.end + 0.05)
            if i == 0 or j <= i:
                continue
            rise = (max(k for _, k in series[i:j]) - series[i - 1][1]) / 1024
            if rise >= RSS_LIMIT_MIB:
                r.failures.append(f"RSS +{rise:.0f} MiB within the round")


def _log_errors_of(server: Server, offset: int) -> list[str]:
    from hostile import _log_errors

    return _log_errors(server.log_since(offset), most=8)
