"""Recorded realtime sessions: one YAML document per session, in `<deployment>.realtime.yaml`.

A document holds the handshake (deployment, beta or GA events, path, query without secrets)
and every message of both sides in order, each with its offset in ms from the session's start:

    realtime:
      deployment: gpt-realtime
      flavour: ga
      path: /openai/v1/realtime
      query: {model: gpt-realtime}
      recorded_at: '2025-06-01T10:00:00Z'
      duration_ms: 5120.4
    events:
    - at_ms: 210.3
      server: {type: session.created, event_id: …, session: {…}}
    - at_ms: 402.0
      client: {type: response.create}
    - …

A frame that is not JSON is kept as `client_text`/`server_text`, a binary one as
`client_base64`/`server_base64`. Audio stays as it was sent (base64 text). While a session is
recorded its frames are kept as bytes, every session being recorded sharing one byte budget:
past it a session's recording is cut short (`cut_short: true`) and the relay goes on.

The record stage writes a document when its session ends; the replay stage plays them back
(sessions_replay.py). HTTP recordings' index skips these documents: they have no request part.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from ..redaction import secret_query_name
from . import persistence
from .persistence import Ref, _slug, with_suffix
from .serialisation import load_document, yaml_pieces

logger = logging.getLogger(__name__)

CLIENT, SERVER = "client", "server"
FILE_MARK = ".realtime."  # in every realtime recording file's name
_HEAD_END = b"\nevents:"
_MESSAGE_OVERHEAD = 64  # bytes a kept frame costs beyond its content
# Fields of session events that would hand out a credential (an ephemeral key): never written.
_SECRET_FIELDS = ("client_secret",)


def file_name(deployment: str, suffix: str = "") -> str:
    """The file a deployment's realtime sessions are recorded in."""
    return with_suffix(f"{_slug(deployment)}.realtime.yaml", suffix)


@dataclass
class Message:
    at_ms: float
    side: str  # CLIENT or SERVER
    data: Any  # the event's JSON; a text frame that is not JSON as str; a binary frame as bytes

    def to_document(self) -> dict[str, Any]:
        if isinstance(self.data, bytes):
            return {"at_ms": round(self.at_ms, 1), f"{self.side}_base64": base64.b64encode(self.data).decode()}
        name = self.side if not isinstance(self.data, str) else f"{self.side}_text"
        return {"at_ms": round(self.at_ms, 1), name: self.data}

    @classmethod
    def from_document(cls, entry: dict[str, Any]) -> Message:
        at_ms = float(entry.get("at_ms", 0))
        for side in (CLIENT, SERVER):
            if side in entry:
                return cls(at_ms, side, entry[side])
            if f"{side}_text" in entry:
                return cls(at_ms, side, str(entry[f"{side}_text"]))
            if f"{side}_base64" in entry:
                return cls(at_ms, side, base64.b64decode(entry[f"{side}_base64"]))
        raise ValueError(f"a recorded realtime event names no side (client or server): {sorted(entry)}")


@dataclass
class RecordedSession:
    deployment: str
    flavour: str  # "beta" (the preview path) or "ga" (the v1 path)
    path: str
    query: dict[str, str]
    messages: list[Message] = field(default_factory=list)
    recorded_at: str = ""
    duration_ms: float = 0.0
    cut_short: bool = False  # the recording stopped at its byte budget; the session went on

    def to_document(self) -> dict[str, Any]:
        head: dict[str, Any] = {"deployment": self.deployment, "flavour": self.flavour, "path": self.path}
        query = {k: v for k, v in self.query.items() if not secret_query_name(k)}
        if query:
            head["query"] = query
        head["recorded_at"] = self.recorded_at
        head["duration_ms"] = round(self.duration_ms, 1)
        if self.cut_short:
            head["cut_short"] = True
        return {"realtime": head, "events": [m.to_document() for m in self.messages]}

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> RecordedSession:
        head = doc["realtime"]
        return cls(
            deployment=str(head["deployment"]),
            flavour=str(head.get("flavour", "ga")),
            path=str(head.get("path", "")),
            query={str(k): str(v) for k, v in (head.get("query") or {}).items()},
            messages=[Message.from_document(e) for e in doc.get("events") or ()],
            recorded_at=str(head.get("recorded_at", "")),
            duration_ms=float(head.get("duration_ms", 0)),
            cut_short=bool(head.get("cut_short", False)),
        )


class Budget:
    """The bytes every session being recorded keeps, together (RECORDING_PENDING_MAX_BYTES)."""

    def __init__(self, most: int):
        self.most = most
        self.used = 0


class SessionRecorder:
    """One session's frames as they pass, kept as bytes until it ends (parsed then)."""

    def __init__(self, head: RecordedSession, started: float, budget: Budget):
        self.head = head
        self.started = started
        self.budget = budget
        self.frames: list[tuple[float, str, bool, bytes]] = []  # offset ms, side, text?, content
        self.kept = 0

    def add(self, from_client: bool, at: float, content: bytes, is_text: bool) -> None:
        """Keep a frame; past the budget, the recording is cut short (said once)."""
        if self.head.cut_short:
            return
        cost = len(content) + _MESSAGE_OVERHEAD
        if self.budget.used + cost > self.budget.most:
            self.head.cut_short = True
            logger.warning(
                "a realtime session on %s passed the recording budget (RECORDING_PENDING_MAX_BYTES, %d bytes "
                "for the sessions being recorded): its recording stops here, the session goes on",
                self.head.deployment,
                self.budget.most,
            )
            return
        self.budget.used += cost
        self.kept += cost
        self.frames.append(((at - self.started) * 1000, CLIENT if from_client else SERVER, is_text, content))

    def release(self) -> None:
        """Give the frames' bytes back to the budget (the session's document is made)."""
        self.budget.used -= self.kept
        self.kept = 0

    def finish(self, ended: float) -> RecordedSession:
        """The session as a recording (its frames parsed); the frames are let go."""
        session = self.head
        session.recorded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        session.duration_ms = max(0.0, (ended - self.started) * 1000)
        session.messages = [Message(at, side, _parsed(content, text)) for at, side, text, content in self.frames]
        self.frames = []
        return session


def _parsed(content: bytes, is_text: bool) -> Any:
    if not is_text:
        return content
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", "replace")
    if isinstance(data, dict) and str(data.get("type", "")).startswith(("session.", "transcription_session.")):
        _drop_secrets(data)
    return data


def _drop_secrets(value: Any) -> None:
    if isinstance(value, dict):
        for name in _SECRET_FIELDS:
            value.pop(name, None)
        for item in value.values():
            _drop_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _drop_secrets(item)


class SessionRecordings:
    """The recorded sessions of a folder, found by deployment and flavour; parsed when asked
    for, the parsed ones kept up to a byte budget (their documents' sizes)."""

    def __init__(self, directory: str | os.PathLike[str] = ".", cache_max_bytes: int = 64 * 1024 * 1024):
        self.directory = Path(directory)
        self.file_suffix = ""
        self.index: dict[tuple[str, str], list[Ref]] = defaultdict(list)
        self.cache_max_bytes = cache_max_bytes
        self.cache_bytes = 0
        self._cache: OrderedDict[Ref, RecordedSession] = OrderedDict()
        self._lock = threading.Lock()
        self._unwritable = False

    @property
    def count(self) -> int:
        return sum(len(refs) for refs in self.index.values())

    def deployments(self) -> list[str]:
        return sorted({deployment for deployment, _ in self.index})

    def refs(self, deployment: str, flavour: str) -> list[Ref]:
        return list(self.index.get((deployment, flavour), ()))

    def load(self) -> int:
        """Index the folder's realtime recordings by their heads; how many sessions."""
        with self._lock:
            self.index.clear()
            self._cache.clear()
            self.cache_bytes = 0
        for path in persistence.recording_files(self.directory):
            if FILE_MARK not in path.name:
                continue
            data = path.read_bytes()
            for offset, length in persistence.documents(data):
                doc = data[offset : offset + length]
                try:
                    head = load_document(doc.split(_HEAD_END, 1)[0])
                    if not isinstance(head, dict) or not isinstance(head.get("realtime"), dict):
                        continue
                    key = (str(head["realtime"]["deployment"]), str(head["realtime"].get("flavour", "ga")))
                except (yaml.YAMLError, KeyError, TypeError) as e:
                    logger.warning("%s: skipped a realtime recording whose head does not parse (%s)", path, e)
                    continue
                self.index[key].append(Ref(path.name, offset, length))
        return self.count

    def get(self, ref: Ref) -> RecordedSession:
        """A recorded session (parsed from its file, unless kept); raises ValueError, OSError."""
        with self._lock:
            kept = self._cache.get(ref)
            if kept is not None:
                self._cache.move_to_end(ref)
                return kept
        with open(self.directory / ref.file, "rb") as f:
            f.seek(ref.offset)
            doc = load_document(f.read(ref.length))
        try:
            session = RecordedSession.from_document(doc)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{ref.file}: a realtime recording does not parse ({e})") from None
        with self._lock:
            if ref.length <= self.cache_max_bytes and ref not in self._cache:
                self._cache[ref] = session
                self.cache_bytes += ref.length
                while self.cache_bytes > self.cache_max_bytes:
                    self.cache_bytes -= self._cache.popitem(last=False)[0].length
        return session

    def save(self, session: RecordedSession) -> Ref | None:
        """Append a session's document to its deployment's file (takes milliseconds a MiB of
        audio: from a worker thread); where it landed, or None when the disk refused."""
        name = file_name(session.deployment, self.file_suffix)
        try:
            offset, length = persistence.append_pieces(self.directory / name, yaml_pieces(session.to_document()))
        except OSError as e:
            if not self._unwritable:
                logger.error("cannot write realtime recordings to %s: %s", self.directory / name, e.strerror or e)
            self._unwritable = True
            return None
        self._unwritable = False
        ref = Ref(name, offset, length)
        with self._lock:
            self.index[(session.deployment, session.flavour)].append(ref)
        return ref
