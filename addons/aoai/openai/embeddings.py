"""Made-up embeddings: unit-length vectors, the same vector for the same input."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import sys
from array import array
from typing import Any

import orjson

from . import catalogue, tokens


def vector(key: bytes, dims: int) -> array[float]:
    """A float32 unit vector derived from `key` alone."""
    raw = array("h", hashlib.shake_256(key).digest(dims * 2))
    # The squares are whole numbers: sumprod adds them exactly, as fsum did, in C.
    norm = math.sqrt(math.sumprod(raw, raw)) or 1.0
    return array("f", [v / norm for v in raw])


def _key(model: str, dims: int, item: str | list[int]) -> bytes:
    text = item.encode() if isinstance(item, str) else _text_of(model, item)
    return f"{model}|{dims}|".encode() + text


def keys_of(model: str, dims: int, items: list[str | list[int]]) -> list[bytes]:
    """`_key` of every input, the token arrays among them decoded in one call: decoded one by
    one, each brief call into tiktoken lets go of the interpreter and takes it straight back,
    and a thread that does that a thousand times in a row keeps the event loop's thread from
    ever getting in (the answer is made in a worker thread so that it can)."""
    arrays = [item for item in items if not isinstance(item, str)]
    texts = iter(_texts_of(model, arrays) if len(arrays) > 1 else [_text_of(model, a) for a in arrays])
    prefix = f"{model}|{dims}|".encode()
    return [prefix + (item.encode() if isinstance(item, str) else next(texts)) for item in items]


def _texts_of(model: str, arrays: list[list[int]]) -> list[bytes]:
    found = catalogue.find_model(model)
    name = found.encoding if found else "cl100k_base"
    try:
        whole = tokens.encoding(name).decode_bytes([t for array in arrays for t in array])
        widths = _token_widths(name)
        texts: list[bytes] = []
        start = 0
        for array in arrays:
            end = start + sum(widths[t] for t in array)
            texts.append(whole[start:end])
            start = end
    except (KeyError, OverflowError, IndexError, TypeError):  # ids outside the vocabulary: one by one
        return [_text_of(model, a) for a in arrays]
    return texts


@functools.lru_cache(maxsize=4)
def _token_widths(name: str) -> array[int]:
    """How many bytes each token id of an encoding decodes to."""
    enc = tokens.encoding(name)
    widths = array("H", bytes(2 * (enc.max_token_value + 1)))
    for token_bytes, rank in enc._mergeable_ranks.items():
        widths[rank] = len(token_bytes)
    for text, rank in enc._special_tokens.items():
        widths[rank] = len(text.encode())
    return widths


def _text_of(model: str, token_ids: list[int]) -> bytes:
    """The text a token array encodes: it embeds like that text, as on Azure (LangChain sends
    token arrays, other clients the strings; both must find the same vectors)."""
    found = catalogue.find_model(model)
    try:
        return tokens.encoding(found.encoding if found else "cl100k_base").decode_bytes(token_ids)
    except (KeyError, OverflowError):  # ids outside the vocabulary encode no text
        return ",".join(map(str, token_ids)).encode()


def items_of(value: Any) -> list[str | list[int]]:
    """`input` as a list of inputs (each a string or a token array)."""
    if isinstance(value, str) or (value and isinstance(value[0], int)):
        return [value]
    return list(value)


def encode_base64(vec: array[float]) -> str:
    # The SDK decodes little-endian float32.
    if sys.byteorder != "little":
        vec = array("f", vec)
        vec.byteswap()
    return base64.b64encode(vec.tobytes()).decode()


def response_json(
    items: list[str | list[int]], model: str, model_version: str, dims: int, encoding_format: str, prompt_tokens: int
) -> bytes:
    """`response_body` as JSON, written a vector at a time: the same bytes, without every
    number of a large answer alive at once as a float object (2,048 vectors of 3,072: 6
    million), and without one serializing call that holds the interpreter for 150 ms."""
    head = {
        "object": "list",
        "model": model_version,
        "data": [],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    opening, _, closing = orjson.dumps(head).partition(b'"data":[]')
    out = io.BytesIO()
    out.write(opening + b'"data":[')
    for index, key in enumerate(keys_of(model, dims, items)):
        vec = vector(key, dims)
        value = encode_base64(vec) if encoding_format == "base64" else vec.tolist()
        out.write((b"," if index else b"") + orjson.dumps({"object": "embedding", "index": index, "embedding": value}))
    out.write(b"]" + closing)
    return out.getvalue()  # the buffer itself, not a copy


def response_body(
    items: list[str | list[int]], model: str, model_version: str, dims: int, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    data = []
    for index, key in enumerate(keys_of(model, dims, items)):
        vec = vector(key, dims)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": encode_base64(vec) if encoding_format == "base64" else vec.tolist(),
            }
        )
    return {
        "object": "list",
        "model": model_version,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
