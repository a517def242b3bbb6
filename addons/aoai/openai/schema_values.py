"""Made-up values that validate against a JSON schema, for tool arguments and structured
output. Covers what function and response schemas use: types, enum, const, required,
nested objects and arrays, $ref to $defs, anyOf/oneOf/allOf, bounds and common formats.

A model writes until its answer's token budget runs out, so a value is built only as far as
the answer can hold (`room`, in characters of JSON): a schema that asks for more than the
budget gets a value cut short, never a value built whole and cut afterwards.
"""

from __future__ import annotations

import math
import random
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

Words = Callable[[random.Random, int], str]

_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda rng: (
        f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    ),
    "date": lambda rng: f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    "time": lambda rng: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
    "email": lambda rng: f"user{rng.randint(1, 999)}@example.com",
    "uri": lambda rng: f"https://example.com/item/{rng.randint(1, 9999)}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
}


# Schemas come from requests and are not checked beyond being objects: a member of the wrong
# type is ignored, and these caps keep a hostile (or self-referencing) schema from running long.
_MAX_DEPTH = 64
_MAX_NODES = 20_000
_MAX_ITEMS = 1_000
_MAX_LENGTH = 10_000
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


@dataclass
class _Walk:
    """One generation: the schema's root (for $ref) and the values still allowed."""

    rng: random.Random
    words: Words
    root: Any
    left: int = _MAX_NODES
    room: int = sys.maxsize  # characters of JSON the answer may still take
    # What each $ref and allOf came to, worked out once: a node visited a thousand times (the
    # items of an array) would otherwise walk a long path or merge many parts each time.
    seen: dict[str | int, Any] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.room <= 0

    def spend(self, value: Any) -> Any:
        self.room -= _size(value)
        return value


def _size(value: Any) -> int:
    """About how many characters `value` takes in JSON, with its separator."""
    if isinstance(value, str):
        return len(value) + 3
    if isinstance(value, (bool, int, float)) or value is None:
        return 6
    try:
        return len(orjson.dumps(value)) + 1  # a const or enum value from the schema: measured
    except orjson.JSONEncodeError:
        return len(str(value)) + 1


def value_for(schema: Any, rng: random.Random, words: Words) -> Any:
    return _value(schema, _Walk(rng, words, schema), 0)


def value_within(schema: Any, rng: random.Random, words: Words, room: int) -> tuple[Any, bool]:
    """A value for `schema` built while it takes less than about `room` characters of JSON,
    and whether it is whole (False: it stopped short where the room ran out)."""
    walk = _Walk(rng, words, schema, room=room)
    value = _value(schema, walk, 0)
    return value, not walk.full


def _value(schema: Any, walk: _Walk, depth: int) -> Any:
    walk.left -= 1
    if not isinstance(schema, dict) or depth > _MAX_DEPTH or walk.left < 0:
        return walk.spend(walk.words(walk.rng, 2))
    rng = walk.rng
    if "$ref" in schema:
        ref = schema["$ref"]
        return _value(
            _once(walk, ref if isinstance(ref, str) else id(ref), lambda: _resolve(ref, walk.root)), walk, depth + 1
        )
    if "const" in schema:
        return walk.spend(schema["const"])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return walk.spend(rng.choice(enum))
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [s for s in options if not (isinstance(s, dict) and s.get("type") == "null")]
            return _value(rng.choice(non_null or options), walk, depth + 1)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        return _value(_once(walk, id(parts), lambda: _merged(parts, walk.root)), walk, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if isinstance(k, str) and k != "null"]
        kind = non_null[0] if non_null else "null"
    if not isinstance(kind, str):
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _BUILDERS.get(kind, _string)(schema, walk, depth)


def _once(walk: _Walk, key: str | int, work: Callable[[], Any]) -> Any:
    """`work()`, done once per walk for the same `key`: a $ref string, or the id of a list
    in the schema (which lives as long as the walk)."""
    found = walk.seen.get(key, walk)
    if found is walk:
        found = walk.seen[key] = work()
    return found


def _merged(parts: list[Any], root: Any) -> dict[str, Any]:
    """The schemas of an allOf as one: their properties and required lists joined."""
    merged: dict[str, Any] = {}
    for part in parts:
        part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
        for k, v in (part if isinstance(part, dict) else {}).items():
            if k == "properties":
                if isinstance(v, dict):
                    merged.setdefault(k, {}).update(v)
            elif k == "required":
                if isinstance(v, list):
                    merged.setdefault(k, []).extend(v)
            else:
                merged[k] = v
    return merged


def _resolve(ref: Any, root: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
    return node


def _whole(value: Any, default: int, cap: int) -> int:
    """A schema's count or length bound as an int in [0, cap]; `default` when it is not a number."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return default
    return min(max(int(value), 0), cap)


def _bound(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _object(schema: dict[str, Any], walk: _Walk, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    required = (
        _once(walk, id(required), lambda: {r for r in required if isinstance(r, str)})
        if isinstance(required, list)
        else set()
    )
    out: dict[str, Any] = {}
    walk.room -= 2
    for name, sub in props.items():
        if walk.full:
            break
        # Deep optional branches are skipped so recursive schemas end.
        if name in required or depth < 3:
            walk.room -= len(name) + 3
            out[name] = _value(sub, walk, depth + 1)
    return out


def _array(schema: dict[str, Any], walk: _Walk, depth: int) -> list[Any]:
    # Deep arrays hold at most one item beyond their minimum, so recursive schemas end.
    low = _whole(schema.get("minItems"), 1 if depth < 3 else 0, _MAX_ITEMS)
    high = _whole(schema.get("maxItems"), max(low, 3) if depth < 3 else low + 1, _MAX_ITEMS)
    low = min(low, high)
    count = walk.rng.randint(low, min(high, low + 3))
    items = schema.get("items") or {}
    out: list[Any] = []
    walk.room -= 2
    for _ in range(count):
        if walk.full:
            break
        out.append(_value(items, walk, depth + 1))
    return out


def _string(schema: dict[str, Any], walk: _Walk, depth: int) -> Any:
    rng, words = walk.rng, walk.words
    fmt = schema.get("format", "")
    fmt = _FORMATS.get(fmt) if isinstance(fmt, str) else None
    text = fmt(rng) if fmt else words(rng, rng.randint(1, 4))
    low = _whole(schema.get("minLength"), 0, _MAX_LENGTH)
    if len(text) < low:
        # Words are added up to the length asked, or as far as the answer's room goes.
        want = min(low, max(walk.room, 1))
        parts, length = [text], len(text)
        while length < want:
            more = " " + words(rng, 3)
            parts.append(more)
            length += len(more)
        text = "".join(parts)
        if length >= walk.room:
            text = text[: max(walk.room, 1)]
    high = schema.get("maxLength")
    return walk.spend(text[: _whole(high, len(text), len(text))] if high is not None else text)


def _number(schema: dict[str, Any], walk: _Walk, depth: int) -> Any:
    rng = walk.rng
    low = _bound(schema.get("minimum"))
    low = _bound(schema.get("exclusiveMinimum")) if low is None else low
    high = _bound(schema.get("maximum"))
    high = _bound(schema.get("exclusiveMaximum")) if high is None else high
    if low is None:
        low = 0 if high is None or high > 0 else high - 100
    if high is None:
        high = low + 100
    if schema.get("type") == "integer":
        lo = math.floor(low) + 1 if "exclusiveMinimum" in schema else math.ceil(low)
        hi = math.ceil(high) - 1 if "exclusiveMaximum" in schema else math.floor(high)
        # Answers are JSON that clients parse as 64-bit integers (and orjson writes no larger).
        lo, hi = (min(max(bound, _INT_MIN), _INT_MAX) for bound in (lo, hi))
        return walk.spend(rng.randint(lo, max(lo, hi)))
    value = round(rng.uniform(low, high), 2)
    return walk.spend(
        min(max(value, low), high)
        if value not in (schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum"))
        else (low + high) / 2
    )


# What a value of each JSON type is built by, from its schema.
_BUILDERS: dict[str, Callable[[dict[str, Any], _Walk, int], Any]] = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _number,
    "number": _number,
    "boolean": lambda schema, walk, depth: walk.spend(walk.rng.random() < 0.5),
    "null": lambda schema, walk, depth: walk.spend(None),
}
