"""Recording files: which file a request's recordings go to, appending to it, and the index
that finds an interaction in it without parsing the rest.

A file is a stream of YAML documents, one interaction each, appended as they are recorded:
a crash loses at most the group being written, and loading skips a document a crash cut off
at the end of a file. Loading 100,000 interactions by parsing YAML takes tens of seconds, so
each file gets an index (key, byte offset, length per document) cached beside it, in
`.index/`, and rebuilt only when the file changes other than by appends; an interaction is
parsed when it is first asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..routes import RouteTable
from .matchers import KeyRules
from .serialisation import (
    LARGE_SCALAR_CHARS,
    Interaction,
    document_pieces,
    key_of_request_part,
    load_document,
    request_part,
)

logger = logging.getLogger(__name__)

INDEX_VERSION = 4  # 3: keys use the route's spelling of the path; 4: forms keyed by fields and file hashes
_DOC_SPLIT = re.compile(rb"^---[ \t]*\r?\n", re.M)
# Documents are written in groups of about this many bytes (one write each).
WRITE_GROUP_BYTES = 1024 * 1024
try:  # the buffers one write may take
    _MAX_PIECES = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
except (AttributeError, ValueError, OSError):
    _MAX_PIECES = 16
# Written after a document a crash cut off mid-line, before the next is appended: the `---`
# that follows must start a line, and loading then knows that document was cut off, not
# broken by an edit, wherever it is in the file.
CUT_OFF = b"\n# (the recording above did not end its last line: cut off while it was written?)\n"


class BrokenRecording(ValueError):
    """A recording file holds a document that does not parse; the message names file and line."""


@dataclass(frozen=True)
class Ref:
    """Where one recorded interaction is: its file (name in the folder) and byte range."""

    file: str
    offset: int
    length: int


@dataclass
class IndexEntry:
    key: str
    offset: int
    length: int


# ---- file names ----


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


def with_suffix(name: str, suffix: str) -> str:
    """NAME.yaml as NAME.SUFFIX.yaml (RECORDING_FILE_SUFFIX: replicas sharing a folder)."""
    return name.removesuffix(".yaml") + f".{suffix}.yaml" if suffix else name


def recording_files(directory: Path) -> list[Path]:
    """The folder's recording files, in name order (none when there is no folder)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


# ---- the index ----


def index_path(path: Path) -> Path:
    """Where a file's index is cached."""
    return path.parent / ".index" / (path.name + ".idx")


def file_index(path: Path, rules: KeyRules, table: RouteTable, skip_broken: bool = False) -> list[IndexEntry]:
    """The file's index from its cache when the file is unchanged or only grew by appends;
    else built anew (and cached). Raises BrokenRecording as `build_index` does."""
    stat = path.stat()
    size = stat.st_size
    stamp = (INDEX_VERSION, rules)
    entries: list[IndexEntry] = []
    indexed = 0
    try:
        with open(index_path(path), "rb") as f:
            saved_stamp, saved_size, saved_mtime, saved_tail, saved_entries = pickle.load(f)
        unchanged = saved_size == size and saved_mtime == stat.st_mtime_ns
        appended = saved_size < size and _tail_hash(path, saved_size) == saved_tail
        if saved_stamp == stamp and (unchanged or appended):
            entries, indexed = saved_entries, saved_size
    except (OSError, pickle.PickleError, EOFError, ValueError, TypeError, AttributeError, ImportError):
        pass  # no cache, or one this version cannot read: built anew
    if indexed == size:
        return entries
    started = time.perf_counter()
    entries = entries + build_index(path, rules, table, skip_broken, indexed)
    write_index(path, rules, size, entries)
    logger.info("indexed %s: %d interactions in %.1f s", path.name, len(entries), time.perf_counter() - started)
    return entries


def build_index(
    path: Path, rules: KeyRules, table: RouteTable, skip_broken: bool = False, start: int = 0
) -> list[IndexEntry]:
    """The keys and byte ranges of the file's documents from byte `start` on.

    A document that does not parse stops it with BrokenRecording (a bad edit), unless
    `skip_broken`. One a crash may have cut off is read whole, and skipped with a warning
    when it does not parse, since refusing it would stop every start after a crash: the
    file's last, or one followed by CUT_OFF."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    entries = []
    for offset, length in documents(data):
        doc = data[offset : offset + length]
        cut_off = offset + length == len(data) or doc.endswith(CUT_OFF)
        try:
            request = request_part(doc)
            if request is None:
                continue
            if cut_off:  # cut off after its request, it would fail when replayed: read it whole
                Interaction.from_document(load_document(doc))
            entries.append(IndexEntry(key_of_request_part(request, rules, table), start + offset, length))
        except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
            line = _line_at(path, start + offset)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not cut_off and not skip_broken:
                raise BrokenRecording(
                    f"{path}: line {line}: a recorded interaction does not parse ({reason}); "
                    "fix it, or set RECORDING_SKIP_BROKEN=true to skip such documents"
                ) from None
            logger.warning(
                "%s: line %d: skipped a recorded interaction that does not parse (%s)%s",
                path,
                line,
                reason,
                "; a crash may have cut it off while it was written" if cut_off else "",
            )
    return entries


def documents(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the YAML documents in a file (split at `---` lines)."""
    starts = [m.start() for m in _DOC_SPLIT.finditer(data)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    ends = starts[1:] + [len(data)]
    return [(s, e - s) for s, e in zip(starts, ends, strict=False) if data[s:e].strip(b"-\n\r\t ")]


def write_index(path: Path, rules: KeyRules, size: int, entries: list[IndexEntry]) -> None:
    """Cache the index of the file's first `size` bytes; a failure is only logged (the index
    is built again next time)."""
    cache = index_path(path)
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            state = ((INDEX_VERSION, rules), size, path.stat().st_mtime_ns, _tail_hash(path, size), entries)
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
    except OSError as e:
        logger.warning("cannot cache the index of %s: %s", path.name, e)


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


# ---- reading and appending ----


def read_interaction(path: Path, offset: int, length: int) -> Interaction:
    """The interaction whose document is at this byte range of the file."""
    with open(path, "rb") as f:
        f.seek(offset)
        doc: Any = load_document(f.read(length))
    return Interaction.from_document(doc)


Written = Callable[[Interaction, int, int], None]


def append(path: Path, interactions: list[Interaction], written: Written) -> None:
    """Append the interactions' documents to the file (made with its folder if need be), a
    group of about WRITE_GROUP_BYTES at a time, so a batch of large uploads is never all in
    memory as YAML at once. `written(interaction, offset, length)` is told where each landed,
    once its group is written; the list is emptied as they are, so each can be let go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: `_end_line`
    interactions.reverse()  # taken from the end, each let go once its group is written
    try:
        _end_line(fd)
        group: list[tuple[Interaction, list[bytes], int]] = []
        size = 0
        while interactions:
            interaction = interactions.pop()
            pieces = document_pieces(interaction)
            length = sum(len(p) for p in pieces)
            group.append((interaction, pieces, length))
            size += length
            if size >= WRITE_GROUP_BYTES:
                _append_group(fd, group, written)
                group, size = [], 0
        if group:
            _append_group(fd, group, written)
    finally:
        os.close(fd)


def _end_line(fd: int) -> None:
    """End the file's last line, with CUT_OFF: only a crash while a document was written
    leaves one unended (or an editor; a document that parses is read as it was)."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, CUT_OFF)


def append_pieces(path: Path, pieces: list[bytes]) -> tuple[int, int]:
    """Append one document already made into pieces (a realtime session's) as `append` does
    an interaction's; where it landed: its offset and length."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    landed: list[tuple[int, int]] = []
    try:
        _end_line(fd)
        _append_group(fd, [(None, pieces, sum(len(p) for p in pieces))], lambda _, o, n: landed.append((o, n)))
    finally:
        os.close(fd)
    return landed[0]


def _append_group[T](fd: int, group: list[tuple[T, list[bytes], int]], written: Callable[[T, int, int], None]) -> None:
    # One O_APPEND write per group: concurrent recorders never interleave a document, and
    # a kill loses at most the group being written.
    pieces = _coalesced([p for _, doc, _ in group for p in doc])
    total = sum(length for _, _, length in group)
    before = os.fstat(fd).st_size
    done_bytes = 0
    try:
        while pieces:
            done = os.writev(fd, pieces[:_MAX_PIECES])
            done_bytes += done
            while pieces and done >= len(pieces[0]):
                done -= len(pieces.pop(0))
            if done:
                pieces[0] = pieces[0][done:]
    except OSError:
        if done_bytes:  # a full disk took part of it: cut it off, so the file stays loadable
            os.ftruncate(fd, before)
        raise
    start = os.lseek(fd, 0, os.SEEK_CUR) - total
    for interaction, _, length in group:
        written(interaction, start, length)
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
