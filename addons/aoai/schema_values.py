"""Made-up values that validate against a JSON schema, for tool arguments and structured
output. Covers what function and response schemas use: types, enum, const, required,
nested objects and arrays, $ref to $defs, anyOf/oneOf/allOf, bounds and common formats."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from typing import Any

Words = Callable[[random.Random, int], str]

_FORMATS = {
    "date-time": lambda rng: f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                             f"{rng.randint(0, 59):02d}:00Z",
    "date": lambda rng: f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    "time": lambda rng: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
    "email": lambda rng: f"user{rng.randint(1, 999)}@example.com",
    "uri": lambda rng: f"https://example.com/item/{rng.randint(1, 9999)}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
}


def value_for(schema: Any, rng: random.Random, words: Words, root: Any = None, depth: int = 0) -> Any:
    if not isinstance(schema, dict):
        return words(rng, 2)
    root = schema if root is None else root
    if "$ref" in schema:
        return value_for(_resolve(schema["$ref"], root), rng, words, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")]
            return value_for(rng.choice(options or schema[key]), rng, words, root, depth + 1)
    if schema.get("allOf"):
        merged: dict = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            for k, v in (part or {}).items():
                if k in ("properties",):
                    merged.setdefault(k, {}).update(v)
                elif k == "required":
                    merged.setdefault(k, []).extend(v)
                else:
                    merged[k] = v
        return value_for(merged, rng, words, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if non_null else "null"
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _BUILDERS.get(kind, _string)(schema, rng, words, root, depth)


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
    return node


def _object(schema, rng, words, root, depth):
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    out = {}
    for name, sub in props.items():
        # Deep optional branches are skipped so recursive schemas end.
        if name in required or depth < 3:
            out[name] = value_for(sub, rng, words, root, depth + 1)
    return out


def _array(schema, rng, words, root, depth):
    # Deep arrays hold at most one item beyond their minimum, so recursive schemas end.
    low = schema.get("minItems", 1 if depth < 3 else 0)
    high = schema.get("maxItems", max(low, 3) if depth < 3 else low + 1)
    low = min(low, high)
    count = rng.randint(low, min(high, low + 3))
    return [value_for(schema.get("items") or {}, rng, words, root, depth + 1) for _ in range(count)]


def _string(schema, rng, words, root, depth):
    fmt = _FORMATS.get(schema.get("format", ""))
    text = fmt(rng) if fmt else words(rng, rng.randint(1, 4))
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    while len(text) < low:
        text += " " + words(rng, 3)
    return text[:high] if high is not None else text


def _number(schema, rng, words, root, depth):
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is None:
        low = 0 if high is None or high > 0 else high - 100
    if high is None:
        high = low + 100
    if schema.get("type") == "integer":
        lo = math.floor(low) + 1 if "exclusiveMinimum" in schema else math.ceil(low)
        hi = math.ceil(high) - 1 if "exclusiveMaximum" in schema else math.floor(high)
        return rng.randint(lo, max(lo, hi))
    value = round(rng.uniform(low, high), 2)
    return min(max(value, low), high) if value not in (schema.get("exclusiveMinimum"),
                                                       schema.get("exclusiveMaximum")) else (low + high) / 2


_BUILDERS = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _number,
    "number": _number,
    "boolean": lambda schema, rng, *_: rng.random() < 0.5,
    "null": lambda *_: None,
}
