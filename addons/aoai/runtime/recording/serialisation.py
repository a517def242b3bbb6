"""The file format of one interaction: a YAML document people can read and edit.

JSON bodies are written as YAML structures, text as text, anything else as base64; a streamed
answer as the list of its server-sent events with their offsets. Secrets never reach a
document: secret headers are dropped when an interaction is made (`clean_headers`) and
key-like query parameters when it is written.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from ..redaction import secret_query_name
from ..routes import TABLE, RouteTable
from .matchers import KeyRules, request_key

try:  # the C loader and dumper are many times faster; fall back where libyaml is missing
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]
Loader = _Loader  # what documents are read with (a script compares it with `load_document`)

SECRET_HEADERS = {
    "api-key",
    "authorization",
    "ocp-apim-subscription-key",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-api-key",
}
# Not worth keeping: framing the replay recomputes, and quota state that replay's own limits set.
SKIP_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "content-encoding"}


def clean_headers(headers: list[tuple[str, str]], skip: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """Headers as a recording keeps them: lower-case, without secrets, rate-limit state or `skip`."""
    out: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in SECRET_HEADERS or lower in skip or lower.startswith("x-ratelimit-"):
            continue
        out[lower] = value
    return out


@dataclass
class Event:
    at_ms: float
    data: Any  # the parsed JSON of a `data:` line, or the text as it was (e.g. "[DONE]")


@dataclass
class Interaction:
    method: str
    path: str
    query: list[tuple[str, str]]
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes = b""
    events: list[Event] | None = None  # a streamed answer, frame by frame
    duration_ms: float = 0.0
    recorded_at: str = ""
    # The key the replay stage worked out for the request, under these rules: not worked out
    # again when it is saved (a 5 MiB upload's form parsed and hashed once).
    known_key: tuple[KeyRules, RouteTable, str] | None = field(default=None, repr=False, compare=False)

    @property
    def content_type(self) -> str:
        return self.request_headers.get("content-type", "")

    def key(self, rules: KeyRules, table: RouteTable = TABLE) -> str:
        if self.known_key is not None and self.known_key[0] == rules and self.known_key[1] is table:
            return self.known_key[2]
        return request_key(
            self.method,
            table.canonical_path(self.method, self.path),
            self.query,
            self.request_body,
            self.content_type,
            rules,
        )

    def to_document(self) -> dict[str, Any]:
        request: dict[str, Any] = {"method": self.method, "path": self.path}
        query = {k: v for k, v in self.query if not secret_query_name(k)}  # keys are never written
        if query:
            request["query"] = query
        if self.request_headers:
            request["headers"] = self.request_headers
        request.update(_body_to_yaml(self.request_body, self.content_type))
        response: dict[str, Any] = {"status": self.status, "headers": self.response_headers}
        if self.events is not None:
            response["events"] = [{"at_ms": round(e.at_ms, 1), "data": e.data} for e in self.events]
        else:
            response.update(_body_to_yaml(self.response_body, self.response_headers.get("content-type", "")))
        response["duration_ms"] = round(self.duration_ms, 1)
        return {"request": request, "response": response, "recorded_at": self.recorded_at}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Interaction:
        request, response = doc["request"], doc["response"]
        events = None
        if "events" in response:
            events = [Event(float(e.get("at_ms", 0)), e.get("data")) for e in response["events"]]
        return cls(
            method=str(request.get("method", "POST")).upper(),
            path=str(request["path"]),
            query=[(str(k), str(v)) for k, v in (request.get("query") or {}).items()],
            request_headers={str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()},
            request_body=body_from_yaml(request),
            status=int(response.get("status", 200)),
            response_headers={str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()},
            response_body=body_from_yaml(response),
            events=events,
            duration_ms=float(response.get("duration_ms", 0)),
            recorded_at=str(doc.get("recorded_at", "")),
        )


def key_of_request_part(request: dict[str, Any], rules: KeyRules, table: RouteTable) -> str:
    """The key of a document's `request:` part, without making the whole interaction."""
    headers = {str(k).lower(): str(v) for k, v in (request.get("headers") or {}).items()}
    method = str(request.get("method", "POST")).upper()
    return request_key(
        method,
        table.canonical_path(method, str(request["path"])),
        [(str(k), str(v)) for k, v in (request.get("query") or {}).items()],
        body_from_yaml(request),
        headers.get("content-type", ""),
        rules,
    )


# ---- bodies ----


@dataclass(frozen=True)
class Verbatim:
    """A long string value known to need no escaping (base64), as pieces of ASCII that
    `dump_document` writes double-quoted as they are, one after the other."""

    pieces: tuple[bytes, ...]


def _body_to_yaml(content: bytes, content_type: str) -> dict[str, Any]:
    """A body as the most readable YAML it can be: structure, text or base64."""
    if not content:
        return {}
    # JSON is kept as structure; a file's bytes (octet-stream, such as a batch's JSONL results)
    # are kept as they are, so a lone JSON line keeps its newline.
    sniffed = not content_type and content.lstrip()[:1] in (b"{", b"[")
    if "json" in (content_type or "") or sniffed:
        try:
            return {"body": orjson.loads(content)}
        except orjson.JSONDecodeError:
            pass
    try:
        text = content.decode("utf-8")
        if ("multipart/" not in (content_type or "") and text.isprintable()) or "\n" in text:
            return {"body_text": text}
    except UnicodeDecodeError:
        pass
    if len(content) < LARGE_SCALAR_CHARS:
        return {"body_base64": base64.b64encode(content).decode()}
    # Encoded a slice at a time: one call on 5 MiB holds the GIL (and the event loop) 8 ms.
    step = 3 * 256 * 1024  # whole groups of 3 bytes: the slices' base64 joins without padding
    view = memoryview(content)  # slices of it are not copies
    return {"body_base64": Verbatim(tuple(base64.b64encode(view[i : i + step]) for i in range(0, len(content), step)))}


def body_from_yaml(part: dict[str, Any]) -> bytes:
    """The body a document's `request:` or `response:` part holds."""
    if "body" in part:
        return orjson.dumps(part["body"])
    if "body_text" in part:
        return str(part["body_text"]).encode()
    if "body_base64" in part:
        return base64.b64decode(part["body_base64"])
    return b""


# ---- writing a document ----


def dump_document(interaction: Interaction) -> bytes:
    return b"".join(document_pieces(interaction))


def document_pieces(interaction: Interaction) -> list[bytes]:
    """An interaction's YAML document, in pieces that are written one after the other (a long
    value is not copied into one whole)."""
    return yaml_pieces(interaction.to_document())


def yaml_pieces(document: dict[str, Any]) -> list[bytes]:
    """Any recorded document (an interaction's, a realtime session's) as YAML pieces: each long
    base64-like value written as it is, not through the emitter."""
    large: list[tuple[bytes, ...]] = []
    document = _set_aside(document, large)
    text = yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120
    ).encode("utf-8")
    if not large:
        return [b"---\n", text]
    # Each long value goes where its placeholder was, double-quoted as the emitter would
    # quote it (it holds no quote, backslash or control character).
    pieces = text.split(_PLACEHOLDER)
    out = [b"---\n", pieces[0]]
    for index, piece in enumerate(pieces[1:]):
        number, _, rest = piece.partition(b"@")
        if int(number) != index:
            raise ValueError("a recorded value holds the placeholder of another")
        out += [b'"', *large[index], b'"', rest]
    return out


# A string value this long is written by hand: libyaml's emitter takes ~7 ms a MiB of it (a
# 5 MiB upload as base64 held the GIL for 45 ms), a copy takes a fraction of a millisecond.
LARGE_SCALAR_CHARS = 64 * 1024
# What a long value's placeholder begins with; the emitter writes it as it is (a plain scalar).
_PLACEHOLDER = b"LARGE-SCALAR-" + os.urandom(8).hex().encode() + b"-"
# Printable ASCII but the double quote and the backslash: all a double-quoted YAML scalar
# holds without escapes (base64, data URLs, most long text on one line).
_UNESCAPED = bytes(range(0x20, 0x7F)).replace(b'"', b"").replace(b"\\", b"")


def _set_aside(value: Any, large: list[tuple[bytes, ...]]) -> Any:
    """`value` with each long string that needs no escaping replaced by a placeholder, the
    string (as pieces of ASCII) appended to `large`. Mapping keys stay as they are."""
    if isinstance(value, Verbatim):
        return _placeholder(value.pieces, large)
    if isinstance(value, str):
        if len(value) < LARGE_SCALAR_CHARS or not value.isascii():
            return value
        data = value.encode("ascii")
        if data.translate(None, _UNESCAPED):
            return value  # a quote, backslash, line break or control character: the emitter's job
        return _placeholder((data,), large)
    if isinstance(value, dict):
        return {k: _set_aside(v, large) for k, v in value.items()}
    if isinstance(value, list):
        return [_set_aside(v, large) for v in value]
    return value


def _placeholder(pieces: tuple[bytes, ...], large: list[tuple[bytes, ...]]) -> str:
    large.append(pieces)
    return (_PLACEHOLDER + str(len(large) - 1).encode() + b"@").decode("ascii")


# ---- reading a document ----

# Where a document's request part ends: at its response, or at a realtime session's events
# (a session has no request part, and is not parsed whole to find that out).
_RESPONSE_PART = re.compile(rb"^(?:response|events):", re.M)


def request_part(doc: bytes) -> dict[str, Any] | None:
    """Parse only the `request:` part of a document: the response may be large."""
    cut = _RESPONSE_PART.search(doc)
    head = doc[: cut.start()] if cut else doc
    loaded = load_document(head)
    request = loaded.get("request") if isinstance(loaded, dict) else None
    if request is not None and not isinstance(request, dict):
        raise ValueError("its request is not a mapping")
    return request


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


def load_document(text: bytes) -> Any:
    """What yaml.load(text, Loader=_Loader) returns, with a quarter less CPU.

    Building an index is almost all YAML parsing of request parts, and PyYAML's constructor
    (node tree -> Python objects) took a third of that on bookkeeping (generators, per-node
    state) that plain strings, lists and string-keyed maps do not need. Those are converted
    here directly; every other node (numbers, booleans, null, timestamps, merge keys, sets,
    unknown tags) goes through the loader's own constructor, so the result is the same.
    Indexing 100,000 chat interactions (146 MB) took 9.9 s of CPU with yaml.load, 7.2 s so;
    reading one interaction for a replay, 0.20 ms rather than 0.29 ms.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _plain_value(node, loader)
    except RecursionError:  # a recursive alias (&a [*a]): only the constructor can build it
        return yaml.load(text, Loader=_Loader)
    finally:
        loader.dispose()


def _plain_value(node: yaml.Node, loader: Any) -> Any:
    tag, kind = node.tag, type(node)
    if tag == _STR and kind is yaml.ScalarNode:
        return node.value
    if tag == _SEQ and kind is yaml.SequenceNode:
        return [_plain_value(item, loader) for item in node.value]
    if (
        tag == _MAP
        and kind is yaml.MappingNode
        and all(key.tag == _STR and type(key) is yaml.ScalarNode for key, _ in node.value)
    ):
        return {key.value: _plain_value(value, loader) for key, value in node.value}
    return loader.construct_object(node, deep=True)


# ---- server-sent events ----


def parse_sse(data: bytes) -> list[Any]:
    """The `data:` payloads of complete server-sent events, JSON-parsed where they are JSON."""
    out: list[Any] = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            continue
        payload = b"\n".join(lines)
        try:
            out.append(orjson.loads(payload))
        except orjson.JSONDecodeError:
            out.append(payload.decode("utf-8", "replace"))
    return out


def sse_bytes(data: Any) -> bytes:
    """One recorded event as it goes on the wire."""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(kind, str):
        # A Responses API event: Azure names its type on an `event:` line too.
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"
    return b"data: " + payload + b"\n\n"
