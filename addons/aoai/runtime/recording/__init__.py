"""Recordings, split as a cassette library splits them: how requests are matched
(`matchers`), the file format of one interaction (`serialisation`), recording files and
their indexes (`persistence`), and the store the record and replay stages share (`store`).
Realtime sessions: their recordings (`sessions`) and their playback (`sessions_replay`,
imported from there: it needs the latency model, which needs the services holding the store).

Every name is importable from here as it was before the split.
"""

from .matchers import KeyRules, body_fingerprint, differing_fields, request_key
from .persistence import (
    WRITE_GROUP_BYTES,
    BrokenRecording,
    IndexEntry,
    Ref,
    file_name_for,
)
from .serialisation import (
    LARGE_SCALAR_CHARS,
    SECRET_HEADERS,
    SKIP_RESPONSE_HEADERS,
    Event,
    Interaction,
    Verbatim,
    body_from_yaml,
    clean_headers,
    document_pieces,
    dump_document,
    parse_sse,
    sse_bytes,
)
from .serialisation import Loader as _Loader
from .serialisation import load_document as _load_plain
from .sessions import RecordedSession, SessionRecorder, SessionRecordings
from .store import CACHE_MAX_BYTES, PENDING_MAX_BYTES, REMEMBER_WRITTEN_BYTES, RecordingStore, interaction_bytes

__all__ = [
    "CACHE_MAX_BYTES",
    "LARGE_SCALAR_CHARS",
    "PENDING_MAX_BYTES",
    "REMEMBER_WRITTEN_BYTES",
    "SECRET_HEADERS",
    "SKIP_RESPONSE_HEADERS",
    "WRITE_GROUP_BYTES",
    "BrokenRecording",
    "Event",
    "IndexEntry",
    "Interaction",
    "KeyRules",
    "RecordedSession",
    "RecordingStore",
    "Ref",
    "SessionRecorder",
    "SessionRecordings",
    "Verbatim",
    "_Loader",
    "_load_plain",
    "body_fingerprint",
    "body_from_yaml",
    "clean_headers",
    "differing_fields",
    "document_pieces",
    "dump_document",
    "file_name_for",
    "interaction_bytes",
    "parse_sse",
    "request_key",
    "sse_bytes",
]
