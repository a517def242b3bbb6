"""Made-up embeddings: unit-length vectors, the same vector for the same input."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import sys
from array import array

import orjson

from . import catalogue, tokens


def vector(key: bytes, dims: int) -> array:
    """A float32 unit vector derived from `key` alone."""
    raw = array("h", hashlib.shake_256(key).digest(dims * 2))
    # The squares are whole numbers: sumprod adds them exactly, as fsum did, in C.
    norm = math.sqrt(math.sumprod(raw, raw)) or 1.0
    return array("f", [v / norm for v in raw])


def _key(model: str, dims: int, item: str | list[int]) -> bytes:
    text = item.encode() if isinstance(item, str) else _text_of(model, item)
    return f"{model}|{dims}|".encode() + text


def _text_of(model: str, token_ids: list[int]) -> bytes:
    """The text a token array encodes: it embeds like that text, as on Azure (LangChain sends
    token arrays, other clients the strings; both must find the same vectors)."""
    found = catalogue.find_model(model)
    try:
        return tokens.encoding(found.encoding if found else "cl100k_base").decode_bytes(token_ids)
    except (KeyError, OverflowError):  # ids outside the vocabulary encode no text
        return ",".join(map(str, token_ids)).encode()


def items_of(value) -> list:
    """`input` as a list of inputs (each a string or a token array)."""
    if isinstance(value, str) or (value and isinstance(value[0], int)):
        return [value]
    return list(value)


def encode_base64(vec: array) -> str:
    # The SDK decodes little-endian float32.
    if sys.byteorder != "little":
        vec = array("f", vec)
        vec.byteswap()
    return base64.b64encode(vec.tobytes()).decode()


def response_json(items: list, model: str, model_version: str, dims: int, encoding_format: str,
                  prompt_tokens: int) -> bytes:
    """`response_body` as JSON, written a vector at a time: the same bytes, without every
    number of a large answer alive at once as a float object (2,048 vectors of 3,072: 6
    million), and without one serializing call that holds the interpreter for 150 ms."""
    head = {"object": "list", "model": model_version, "data": [],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    opening, _, closing = orjson.dumps(head).partition(b'"data":[]')
    out = io.BytesIO()
    out.write(opening + b'"data":[')
    for index, item in enumerate(items):
        vec = vector(_key(model, dims, item), dims)
        value = encode_base64(vec) if encoding_format == "base64" else vec.tolist()
        out.write((b"," if index else b"") + orjson.dumps({"object": "embedding", "index": index, "embedding": value}))
    out.write(b"]" + closing)
    return out.getvalue()  # the buffer itself, not a copy


def response_body(items: list, model: str, model_version: str, dims: int, encoding_format: str,
                  prompt_tokens: int) -> dict:
    data = []
    for index, item in enumerate(items):
        vec = vector(_key(model, dims, item), dims)
        data.append({"object": "embedding", "index": index,
                     "embedding": encode_base64(vec) if encoding_format == "base64" else vec.tolist()})
    return {"object": "list", "model": model_version, "data": data,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
