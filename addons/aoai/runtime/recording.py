"""Recordings: request keys, the YAML file format, and a store that finds an interaction in
constant time however many there are.

A recording file is a stream of YAML documents, one interaction each, appended as they are
recorded (a crash loses at most the one being written; the loader skips a torn last
document). JSON bodies are stored as YAML structures and streams as lists of events with
their offsets, so people can read and edit them. Secrets never reach a file.

Loading 100,000 interactions by parsing YAML takes tens of seconds, so each file gets an
index (key, byte offset, length per document) cached beside it and rebuilt only when the
file changes; an interaction is parsed when it is first asked for.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import pickle
import re
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import yaml

from ..openai import forms
from .redaction import secret_query_name
from .routes import TABLE, RouteTable

logger = logging.getLogger(__name__)

try:  # the C loader and dumper are many times faster; fall back where libyaml is missing
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

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
_INDEX_VERSION = 4  # 3: keys use the route's spelling of the path; 4: forms keyed by fields and file hashes
_DOC_SPLIT = re.compile(rb"^---[ \t]*\r?\n", re.M)
_BOUNDARY = re.compile(r"boundary=\"?([^\";]+)\"?")


class BrokenRecording(ValueError):
    """A recording file holds a document that does not parse; the message names file and line."""


@dataclass(frozen=True)
class KeyRules:
    """What makes two requests the same: method, path, query and the body's JSON meaning."""

    ignore_fields: tuple[str, ...] = ()
    match_api_version: bool = False


def _canonical_json(value: Any, rules: KeyRules) -> bytes:
    if isinstance(value, dict) and rules.ignore_fields:
        value = {k: v for k, v in value.items() if k not in rules.ignore_fields}
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def body_fingerprint(content: bytes, content_type: str, rules: KeyRules, form: forms.Form | None = None) -> bytes:
    """A body's identity: JSON by meaning (key order and spacing do not count), a form by its
    fields and files' hashes, other multipart with its random boundary normalised, anything
    else byte for byte. `form`: the body's form, when it was parsed already."""
    if content:
        stripped = content.lstrip()
        if stripped[:1] in (b"{", b"["):
            try:
                return _canonical_json(orjson.loads(content), rules)
            except orjson.JSONDecodeError:
                pass
        if "multipart/form-data" in (content_type or ""):
            return _form_fingerprint(content, content_type, rules, form)
        m = _BOUNDARY.search(content_type or "")
        if m and "multipart/" in content_type:
            return content.replace(m.group(1).encode(), b"BOUNDARY")
    return content


def _form_fingerprint(content: bytes, content_type: str, rules: KeyRules, form: forms.Form | None = None) -> bytes:
    """An upload's identity: its fields and each file's name and hash, so the random boundary
    and the order of the parts do not count."""
    try:
        form = form or forms.parse(content, content_type)
    except forms.NotAForm:
        m = _BOUNDARY.search(content_type)
        return content.replace(m.group(1).encode(), b"BOUNDARY") if m else content
    files = {
        name: [[u.filename, hashlib.sha256(u.data).hexdigest()] for u in uploads]
        for name, uploads in form.files.items()
    }
    return _canonical_json({**form.fields, "(files)": files}, rules)


def request_key(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    content: bytes,
    content_type: str,
    rules: KeyRules,
    form: forms.Form | None = None,
) -> str:
    kept = sorted(
        (k, v) for k, v in query if (rules.match_api_version or k != "api-version") and not secret_query_name(k)
    )
    target = path + ("?" + urlencode(kept) if kept else "")
    digest = hashlib.sha1(body_fingerprint(content, content_type, rules, form)).hexdigest()[:20]
    return f"{method} {target} {digest}"


def file_name_for(path: str) -> str:
    """Which file holds the recordings of a path no route names (routes name their own)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 4 and parts[:2] == ["openai", "deployments"]:
        return f"{_slug(parts[2])}.{_slug('-'.join(parts[3:]))}.yaml"
    if len(parts) >= 3 and parts[:2] == ["openai", "v1"]:
        return f"v1.{_slug('-'.join(parts[2:]))}.yaml"
    if len(parts) >= 3 and parts[1] == "documentModels":
        model = parts[2].split(":")[0]
        return f"{_slug(parts[0])}.{_slug(model)}.yaml"
    return f"other.{_slug('-'.join(parts[:3]) or 'root')}.yaml"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "_"


# ---- the document format ----


def _body_to_yaml(content: bytes, content_type: str) -> dict:
    """A body as the most readable YAML it can be: structure, text or base64."""
    if not content:
        return {}
    if "json" in (content_type or "") or content.lstrip()[:1] in (b"{", b"["):
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


@dataclass(frozen=True)
class Verbatim:
    """A long string value known to need no escaping (base64), as pieces of ASCII that
    `dump_document` writes double-quoted as they are, one after the other."""

    pieces: tuple[bytes, ...]


def body_from_yaml(part: dict) -> bytes:
    if "body" in part:
        return orjson.dumps(part["body"])
    if "body_text" in part:
        return str(part["body_text"]).encode()
    if "body_base64" in part:
        return base64.b64decode(part["body_base64"])
    return b""


def clean_headers(headers: list[tuple[str, str]], skip: Set[str] = frozenset()) -> dict[str, str]:
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

    def to_document(self) -> dict:
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
    def from_document(cls, doc: dict) -> Interaction:
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


def dump_document(interaction: Interaction) -> bytes:
    return b"".join(document_pieces(interaction))


def document_pieces(interaction: Interaction) -> list[bytes]:
    """An interaction's YAML document, in pieces that are written one after the other (a long
    value is not copied into one whole)."""
    large: list[tuple[bytes, ...]] = []
    document = _set_aside(interaction.to_document(), large)
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


def parse_sse(data: bytes) -> list[Any]:
    """The `data:` payloads of complete server-sent events, JSON-parsed where they are JSON."""
    out = []
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
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        # A Responses API event: Azure names its type on an `event:` line too.
        return b"event: " + data["type"].encode() + b"\ndata: " + payload + b"\n\n"
    return b"data: " + payload + b"\n\n"


# ---- the store ----


@dataclass(frozen=True)
class Ref:
    file: str
    offset: int
    length: int


@dataclass
class IndexEntry:
    key: str
    offset: int
    length: int


def _documents(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the YAML documents in a file (split at `---` lines)."""
    starts = [m.start() for m in _DOC_SPLIT.finditer(data)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    ends = starts[1:] + [len(data)]
    return [(s, e - s) for s, e in zip(starts, ends, strict=False) if data[s:e].strip(b"-\n\r\t ")]


def _request_part(doc: bytes) -> dict | None:
    """Parse only the `request:` part of a document: the response may be large."""
    cut = re.search(rb"^response:", doc, re.M)
    head = doc[: cut.start()] if cut else doc
    loaded = _load_plain(head)
    return loaded.get("request") if isinstance(loaded, dict) else None


_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


def _load_plain(text: bytes) -> Any:
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


def _key_of_request(request: dict, rules: KeyRules, table: RouteTable) -> str:
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


def interaction_bytes(interaction: Interaction) -> int:
    """About what an interaction takes in memory: its bodies, path and headers, and each
    streamed event's JSON (serialized only here, for record mode without autosave)."""
    size = 512 + len(interaction.path) + len(interaction.request_body) + len(interaction.response_body)
    size += sum(len(k) + len(v) for k, v in interaction.query)
    size += sum(
        len(k) + len(v)
        for headers in (interaction.request_headers, interaction.response_headers)
        for k, v in headers.items()
    )
    for event in interaction.events or ():
        data = event.data
        size += 64 + (len(data) if isinstance(data, str) else len(orjson.dumps(data)))
    return size


PENDING_MAX_BYTES = 64 * 1024 * 1024  # RECORDING_PENDING_MAX_BYTES's default
# Documents are written in groups of about this many bytes (one write each).
WRITE_GROUP_BYTES = 1024 * 1024
try:  # the buffers one write may take
    _MAX_PIECES = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
except (AttributeError, ValueError, OSError):
    _MAX_PIECES = 16
# A just-written interaction stays parsed in memory only when its document is at most this: a
# large upload's recording is read back from its file if it is asked for (rarely at once),
# rather than keeping its body in memory after its flow is gone.
REMEMBER_WRITTEN_BYTES = 1024 * 1024
CACHE_MAX_BYTES = 64 * 1024 * 1024  # RECORDING_CACHE_MAX_BYTES's default


class RecordingStore:
    def __init__(self, directory: str | os.PathLike, rules: KeyRules = KeyRules(), table: RouteTable = TABLE):
        self.directory = Path(directory)
        self.rules = rules
        self.table = table
        self.file_suffix = ""  # new recordings go to NAME.SUFFIX.yaml (replicas sharing a folder)
        self.skip_broken = False  # a document that does not parse: skipped with a warning, else refused
        self._unwritable: set[str] = set()  # files whose last write failed (said once each)
        self.index: dict[str, list[Ref]] = defaultdict(list)
        self.cursors: dict[str, int] = {}
        self.pending: list[tuple[str, Interaction]] = []
        # Without autosave, recordings wait in memory for /++/save-recordings; past this many
        # bytes they are saved at once (RECORDING_PENDING_MAX_BYTES), so none is lost.
        self.pending_bytes = 0
        self.pending_max_bytes = PENDING_MAX_BYTES
        self._said_pending = False
        # Interactions parsed (or just written), the least recently used first: at most
        # `cache_max_bytes` of them, as their documents' sizes (RECORDING_CACHE_MAX_BYTES).
        self._cache: OrderedDict[Ref, Interaction] = OrderedDict()
        self.cache_bytes = 0
        self.cache_max_bytes = CACHE_MAX_BYTES
        # Pending recordings past their bound are written by a worker thread (see overflow).
        self._cache_lock = threading.Lock()
        self._cursor_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one append at a time: each knows where it landed

    def canonical_path(self, method: str, path: str) -> str:
        """The path as its route spells it: the variants of one request share recordings."""
        return self.table.canonical_path(method, path)

    def file_for(self, method: str, path: str) -> str:
        """The file that holds a request's recordings: its route names it (one file per
        deployment and operation, or per Document Intelligence model); else its path does."""
        found = self.table.resolve(method, path)
        name = found.route.recording_file(found.params) if found is not None and found.route is not None else None
        name = name or file_name_for(path.partition("?")[0])
        return name.removesuffix(".yaml") + f".{self.file_suffix}.yaml" if self.file_suffix else name

    @property
    def count(self) -> int:
        return sum(len(refs) for refs in self.index.values())

    def usage(self) -> dict[str, dict]:
        """For /++/limits: the recordings waiting to be saved, and those kept parsed."""
        return {
            "pending": {"count": len(self.pending), "bytes": self.pending_bytes, "maxBytes": self.pending_max_bytes},
            "cache": {"count": len(self._cache), "bytes": self.cache_bytes, "maxBytes": self.cache_max_bytes},
        }

    # loading

    def load(self) -> int:
        self.index.clear()
        self.cursors.clear()
        self._cache.clear()
        self.cache_bytes = 0
        if self.directory.is_dir():
            for path in sorted(p for p in self.directory.glob("*.yaml") if p.is_file()):
                for entry in self._file_index(path):
                    self.index[entry.key].append(Ref(path.name, entry.offset, entry.length))
        return self.count

    def _index_path(self, path: Path) -> Path:
        return path.parent / ".index" / (path.name + ".idx")

    def _file_index(self, path: Path) -> list[IndexEntry]:
        """The file's index from its cache when the file is unchanged or only grew by appends;
        else built anew."""
        stat = path.stat()
        size = stat.st_size
        stamp = (_INDEX_VERSION, self.rules)
        cache = self._index_path(path)
        entries: list[IndexEntry] = []
        indexed = 0
        try:
            with open(cache, "rb") as f:
                saved_stamp, saved_size, saved_mtime, saved_tail, saved_entries = pickle.load(f)
            unchanged = saved_size == size and saved_mtime == stat.st_mtime_ns
            appended = saved_size < size and _tail_hash(path, saved_size) == saved_tail
            if saved_stamp == stamp and (unchanged or appended):
                entries, indexed = saved_entries, saved_size
        except (OSError, pickle.PickleError, EOFError, ValueError, TypeError):
            pass
        if indexed == size:
            return entries
        started = time.perf_counter()
        entries = entries + self._build_index(path, indexed)
        self._write_index(path, stamp, size, entries)
        logger.info("indexed %s: %d interactions in %.1f s", path.name, len(entries), time.perf_counter() - started)
        return entries

    def _build_index(self, path: Path, start: int = 0) -> list[IndexEntry]:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        entries = []
        for offset, length in _documents(data):
            doc = data[offset : offset + length]
            try:
                request = _request_part(doc)
                if request is None:
                    continue
                entries.append(IndexEntry(_key_of_request(request, self.rules, self.table), start + offset, length))
            except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
                line = _line_at(path, start + offset)
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                # The last document may be torn by a crash while it was appended: always skipped.
                # One before it is a bad edit: refused, unless RECORDING_SKIP_BROKEN says skip it.
                if offset + length < len(data) and not self.skip_broken:
                    raise BrokenRecording(
                        f"{path}: line {line}: a recorded interaction does not parse ({reason}); "
                        "fix it, or set RECORDING_SKIP_BROKEN=true to skip such documents"
                    ) from None
                logger.warning(
                    "%s: line %d: skipped a recorded interaction that does not parse (%s)", path, line, reason
                )
        return entries

    def save_indexes(self) -> None:
        """Bring the cached indexes up to date with what was appended, for a fast next start."""
        by_file: dict[str, list[IndexEntry]] = defaultdict(list)
        for key, refs in self.index.items():
            for ref in refs:
                by_file[ref.file].append(IndexEntry(key, ref.offset, ref.length))
        for file, entries in by_file.items():
            path = self.directory / file
            if path.exists():
                entries.sort(key=lambda e: e.offset)
                self._write_index(path, (_INDEX_VERSION, self.rules), path.stat().st_size, entries)

    def _write_index(self, path: Path, stamp: tuple, size: int, entries: list[IndexEntry]) -> None:
        cache = self._index_path(path)
        try:
            cache.parent.mkdir(exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                state = (stamp, size, path.stat().st_mtime_ns, _tail_hash(path, size), entries)
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache)
        except OSError as e:
            logger.warning("cannot cache the index of %s: %s", path.name, e)

    # finding

    def get(self, ref: Ref) -> Interaction:
        with self._cache_lock:
            interaction = self._cache.get(ref)
            if interaction is not None:
                self._cache.move_to_end(ref)
                return interaction
        with open(self.directory / ref.file, "rb") as f:
            f.seek(ref.offset)
            doc = _load_plain(f.read(ref.length))
        interaction = Interaction.from_document(doc)
        self._remember(ref, interaction)
        return interaction

    def _remember(self, ref: Ref, interaction: Interaction) -> None:
        """Keep a parsed interaction, forgetting the least recently used past the budget (an
        interaction larger than it all is read from its file each time)."""
        with self._cache_lock:
            if ref.length > self.cache_max_bytes or ref in self._cache:
                return
            self._cache[ref] = interaction
            self.cache_bytes += ref.length
            while self.cache_bytes > self.cache_max_bytes:
                self.cache_bytes -= self._cache.popitem(last=False)[0].length

    def find(self, key: str) -> Interaction | None:
        """The next recording for `key`: in recorded order, then the last one again."""
        ref = self.next_ref(key)
        return None if ref is None else self.get(ref)

    def next_ref(self, key: str) -> Ref | None:
        """Where the next recording for `key` is (`get` reads it), as `find` takes them."""
        refs = self.index.get(key)
        if not refs:
            return None
        with self._cursor_lock:  # large requests look up from worker threads
            position = self.cursors.get(key, 0)
            self.cursors[key] = position + 1
        return refs[min(position, len(refs) - 1)]

    def parsed(self, ref: Ref) -> bool:
        """Whether `get(ref)` answers from memory (else it reads and parses the document)."""
        return ref in self._cache

    def closest(self, method: str, path: str, body: bytes, limit: int = 200) -> tuple[Interaction, list[str]] | None:
        """The recorded request most like this one (same method and path first), and the
        top-level body fields where they differ."""
        prefix = f"{method} {self.canonical_path(method, path)}"
        candidates = [
            refs[-1] for key, refs in self.index.items() if key.startswith(prefix + " ") or key.startswith(prefix + "?")
        ]
        if not candidates:
            candidates = [refs[-1] for key, refs in self.index.items() if key.startswith(method + " ")]
        best: tuple[int, Interaction, list[str]] | None = None
        wanted = _as_json(body)
        for ref in candidates[-limit:]:
            try:
                other = self.get(ref)
            except (OSError, yaml.YAMLError, KeyError):
                continue
            fields = differing_fields(wanted, _as_json(other.request_body), self.rules)
            score = len(fields) + (0 if other.path == path else 100)
            if best is None or score < best[0]:
                best = (score, other, fields)
        return (best[1], best[2]) if best else None

    # saving

    def add(self, interaction: Interaction, autosave: bool) -> bool:
        """Keep an interaction (written at once with autosave); False when writing it failed."""
        file = self.file_for(interaction.method, interaction.path)
        if not autosave:
            self.pending.append((file, interaction))
            self.pending_bytes += interaction_bytes(interaction)
            return True
        return self._write(file, [interaction])

    def overflow(self) -> list[tuple[str, Interaction]]:
        """The pending recordings, taken to be saved at once (`save(batch)`), when they have
        passed RECORDING_PENDING_MAX_BYTES; else none. Said once, as a warning."""
        if self.pending_bytes <= self.pending_max_bytes:
            return []
        if not self._said_pending:
            self._said_pending = True
            logger.warning(
                "recordings waiting to be saved passed RECORDING_PENDING_MAX_BYTES (%d bytes): saving "
                "them now, and whenever they pass it again",
                self.pending_max_bytes,
            )
        return self._take_pending()

    def _take_pending(self) -> list[tuple[str, Interaction]]:
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        return batch

    def _write(self, file: str, interactions: list[Interaction]) -> bool:
        """Append, saying once per file when the disk refuses (full, read-only, gone) and once
        when it takes writes again; what was written before stays loadable."""
        try:
            with self._write_lock:
                self._append(file, interactions)
        except OSError as e:
            if file not in self._unwritable:
                self._unwritable.add(file)
                logger.error(
                    "cannot write recordings to %s: %s; the answers still reach the clients, unrecorded",
                    self.directory / file,
                    e.strerror or e,
                )
            return False
        if file in self._unwritable:
            self._unwritable.discard(file)
            logger.info("writing recordings to %s again", self.directory / file)
        return True

    def save(self, batch: list[tuple[str, Interaction]] | None = None) -> int:
        """Write the pending recordings (or a batch `overflow` took from them, which is emptied);
        how many. Each is let go once written, so a batch of large uploads leaves memory as it
        is saved, not when the last is."""
        taken = self._take_pending() if batch is None else batch
        by_file: dict[str, list[Interaction]] = defaultdict(list)
        for file, interaction in taken:
            by_file[file].append(interaction)
        taken.clear()
        saved = 0
        while by_file:
            file, interactions = by_file.popitem()
            count = len(interactions)
            if self._write(file, interactions):
                saved += count
        return saved

    def _append(self, file: str, interactions: list[Interaction]) -> None:
        """Append the interactions' documents, a group of about WRITE_GROUP_BYTES at a time, so a
        batch of large uploads is never all in memory as YAML at once."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        interactions.reverse()  # taken from the end, each let go once its group is written
        try:
            group: list[tuple[Interaction, list[bytes], int]] = []
            size = 0
            while interactions:
                interaction = interactions.pop()
                pieces = document_pieces(interaction)
                length = sum(len(p) for p in pieces)
                group.append((interaction, pieces, length))
                size += length
                if size >= WRITE_GROUP_BYTES:
                    self._append_group(fd, file, group)
                    group, size = [], 0
            if group:
                self._append_group(fd, file, group)
        finally:
            os.close(fd)

    def _append_group(self, fd: int, file: str, group: list[tuple[Interaction, list[bytes], int]]) -> None:
        # One O_APPEND write per group: concurrent recorders never interleave a document, and
        # a kill loses at most the group being written.
        pieces = _coalesced([p for _, doc, _ in group for p in doc])
        total = sum(length for _, _, length in group)
        before = os.fstat(fd).st_size
        written = 0
        try:
            while pieces:
                done = os.writev(fd, pieces[:_MAX_PIECES])
                written += done
                while pieces and done >= len(pieces[0]):
                    done -= len(pieces.pop(0))
                if done:
                    pieces[0] = pieces[0][done:]
        except OSError:
            if written:  # a full disk took part of it: cut it off, so the file stays loadable
                os.ftruncate(fd, before)
            raise
        start = os.lseek(fd, 0, os.SEEK_CUR) - total
        for interaction, _, length in group:
            ref = Ref(file, start, length)
            self.index[interaction.key(self.rules, self.table)].append(ref)
            if length <= REMEMBER_WRITTEN_BYTES:
                self._remember(ref, interaction)
            start += length


def _coalesced(pieces: list[bytes]) -> list[memoryview]:
    """The pieces to write, each run of small ones joined, so a group of many small documents
    is one buffer and a long value is never copied."""
    out: list[memoryview] = []
    run: list[bytes] = []
    for piece in pieces:
        if len(piece) < LARGE_SCALAR_CHARS:
            run.append(piece)
            continue
        if run:
            out.append(memoryview(b"".join(run)))
            run = []
        out.append(memoryview(piece))
    if run:
        out.append(memoryview(b"".join(run)))
    return [p for p in out if len(p)]


def _line_at(path: Path, offset: int) -> int:
    """The line number (from 1) at a byte offset of a file."""
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def _tail_hash(path: Path, size: int) -> str:
    """A fingerprint of the file's first `size` bytes: its last 64 KiB, enough to notice an edit
    near the end, where appends land."""
    with open(path, "rb") as f:
        f.seek(max(0, size - 65536))
        return hashlib.sha1(f.read(min(size, 65536))).hexdigest()


def _as_json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body


def differing_fields(a: Any, b: Any, rules: KeyRules) -> list[str]:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if a == b else ["body"]
    keys = (set(a) | set(b)) - set(rules.ignore_fields)
    return sorted(k for k in keys if a.get(k) != b.get(k))


def parse_query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)
