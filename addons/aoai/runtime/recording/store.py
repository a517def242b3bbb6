"""The recordings the record and replay stages share: found by key in constant time however
many there are, added as they are recorded (written at once, or kept until saved), and on a
miss the closest recorded request, to say where a request differs.

They are RECORDING_DIR's files, or, while a cassette is in (PUT /++/cassette), one file that
holds every recording whatever its route: its refs name it by its absolute path, so they never
meet the folder's, and a recording keeps the file chosen when its request came, so one that
ends after a switch still goes where it began.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import orjson
import yaml

from ..routes import TABLE, RouteTable
from . import persistence
from .matchers import KeyRules, as_json, differing_fields
from .persistence import IndexEntry, Ref, file_name_for, with_suffix
from .serialisation import Interaction
from .sessions import SessionRecordings

logger = logging.getLogger(__name__)

PENDING_MAX_BYTES = 64 * 1024 * 1024  # RECORDING_PENDING_MAX_BYTES's default
# A just-written interaction stays parsed in memory only when its document is at most this: a
# large upload's recording is read back from its file if it is asked for (rarely at once),
# rather than keeping its body in memory after its flow is gone.
REMEMBER_WRITTEN_BYTES = 1024 * 1024
CACHE_MAX_BYTES = 64 * 1024 * 1024  # RECORDING_CACHE_MAX_BYTES's default
_ANY_API_VERSION = KeyRules()  # the default rules: every field counts, api-version does not


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


class RecordingStore:
    def __init__(
        self, directory: str | os.PathLike[str], rules: KeyRules = _ANY_API_VERSION, table: RouteTable = TABLE
    ):
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
        # Bytes of recordings being written (by a worker thread) and not written yet: they are
        # still in memory, so the bound counts them too, and what arrives meanwhile is saved
        # right after them rather than held up to the bound again.
        self.saving_bytes = 0
        self._saving_lock = threading.Lock()
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
        # A switch of cassette against a recording written from a worker thread meanwhile: the
        # recording is indexed where it belongs, never in the cassette put in.
        self._switch_lock = threading.Lock()
        # Realtime sessions, recorded in files of their own (`<deployment>.realtime.yaml`).
        self.sessions = SessionRecordings(directory)
        self.cassette: Path | None = None  # the one file read and written instead of the folder's
        # The folder's index and cursors while a cassette is in: back when it is taken out.
        self._home: tuple[dict[str, list[Ref]], dict[str, int]] | None = None

    def canonical_path(self, method: str, path: str) -> str:
        """The path as its route spells it: the variants of one request share recordings."""
        return self.table.canonical_path(method, path)

    def file_for(self, method: str, path: str) -> str:
        """The file that holds a request's recordings: its route names it (one file per
        deployment and operation, or per Document Intelligence model); else its path does.
        While a cassette is in, it is the cassette (by its absolute path)."""
        if self.cassette is not None:
            return str(self.cassette)
        found = self.table.resolve(method, path)
        name = found.route.recording_file(found.params) if found is not None and found.route is not None else None
        return with_suffix(name or file_name_for(path.partition("?")[0]), self.file_suffix)

    @property
    def count(self) -> int:
        return sum(len(refs) for refs in self.index.values())

    def usage(self) -> dict[str, dict[str, int]]:
        """For /++/limits: the recordings waiting to be saved, and those kept parsed."""
        return {
            "pending": {
                "count": len(self.pending),
                "bytes": self.pending_bytes,
                "savingBytes": self.saving_bytes,
                "maxBytes": self.pending_max_bytes,
            },
            "cache": {"count": len(self._cache), "bytes": self.cache_bytes, "maxBytes": self.cache_max_bytes},
        }

    # loading

    def load(self) -> int:
        """Index every recording file in the folder (from their cached indexes where they are
        up to date); how many interactions. Raises BrokenRecording. While a cassette is in, the
        folder's index waits for it to be taken out, and the cassette is indexed anew (the
        rules may have changed)."""
        index: dict[str, list[Ref]] = defaultdict(list)
        for path in persistence.recording_files(self.directory):
            for entry in persistence.file_index(path, self.rules, self.table, self.skip_broken):
                index[entry.key].append(Ref(path.name, entry.offset, entry.length))
        count = sum(len(refs) for refs in index.values())
        cassette = self.read_cassette(self.cassette) if self.cassette is not None else None
        with self._switch_lock:
            if cassette is None:
                self.index, self.cursors = index, {}
            else:
                self._home = (index, {})
                self.index, self.cursors = cassette, {}
        self._forget_parsed()
        return count

    # cassettes

    def read_cassette(self, path: Path) -> dict[str, list[Ref]]:
        """A cassette's index, built from the file (none when it is absent), not cached beside
        it: a cassette's folder holds cassettes only. Raises BrokenRecording, OSError."""
        index: dict[str, list[Ref]] = defaultdict(list)
        if not path.is_file():
            return index
        for entry in persistence.build_index(path, self.rules, self.table, self.skip_broken):
            index[entry.key].append(Ref(str(path), entry.offset, entry.length))
        return index

    def use_cassette(self, path: Path | None, index: dict[str, list[Ref]] | None = None) -> None:
        """Read and write every recording in the cassette at `path` (absolute), whose index
        `read_cassette` built (None: it starts empty); `path` None: the folder's files again.
        Quick, for the event loop: the pending recordings are saved before (`take_pending`)."""
        with self._switch_lock:
            if path is None:
                if self._home is not None:
                    self.index, self.cursors = self._home
                self._home = None
            else:
                if self._home is None:
                    self._home = (self.index, self.cursors)
                self.index, self.cursors = index if index is not None else defaultdict(list), {}
            self.cassette = path
        self._forget_parsed()  # a cassette written anew reuses its byte ranges

    def _forget_parsed(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self.cache_bytes = 0

    def _index_for(self, file: str) -> dict[str, list[Ref]] | None:
        """The index a recording just written to `file` belongs in: none when it is a cassette
        no longer in (its request came before a switch)."""
        if self.cassette is not None:
            if file == str(self.cassette):
                return self.index
            return self._home[0] if self._home is not None and not os.path.isabs(file) else None
        return None if os.path.isabs(file) else self.index

    def save_indexes(self) -> None:
        """Bring the cached indexes up to date with what was appended, for a fast next start
        (the folder's files only: cassettes are indexed when put in)."""
        by_file: dict[str, list[IndexEntry]] = defaultdict(list)
        index = self._home[0] if self._home is not None else self.index
        for key, refs in index.items():
            for ref in refs:
                if os.path.isabs(ref.file):
                    continue
                by_file[ref.file].append(IndexEntry(key, ref.offset, ref.length))
        for file, entries in by_file.items():
            path = self.directory / file
            if path.exists():
                entries.sort(key=lambda e: e.offset)
                persistence.write_index(path, self.rules, path.stat().st_size, entries)

    # finding

    def get(self, ref: Ref) -> Interaction:
        with self._cache_lock:
            interaction = self._cache.get(ref)
            if interaction is not None:
                self._cache.move_to_end(ref)
                return interaction
        interaction = persistence.read_interaction(self.directory / ref.file, ref.offset, ref.length)
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
        wanted: Any = as_json(body)
        for ref in candidates[-limit:]:
            try:
                other = self.get(ref)
            except (OSError, yaml.YAMLError, KeyError):
                continue
            fields = differing_fields(wanted, as_json(other.request_body), self.rules)
            score = len(fields) + (0 if other.path == path else 100)
            if best is None or score < best[0]:
                best = (score, other, fields)
        return (best[1], best[2]) if best else None

    # saving

    def add(self, interaction: Interaction, autosave: bool, file: str | None = None) -> bool:
        """Keep an interaction (written at once with autosave) in `file` (`file_for` chose it
        when its request came; None: now); False when writing it failed."""
        file = file or self.file_for(interaction.method, interaction.path)
        if not autosave:
            self.pending.append((file, interaction))
            self.pending_bytes += interaction_bytes(interaction)
            return True
        return self._write(file, [interaction])

    def overflow(self) -> list[tuple[str, Interaction]]:
        """The pending recordings, taken to be saved at once (`save(batch)`), when they have
        passed RECORDING_PENDING_MAX_BYTES, with those still being saved; else none. Said
        once, as a warning."""
        if self.pending_bytes + self.saving_bytes <= self.pending_max_bytes:
            return []
        if not self._said_pending:
            self._said_pending = True
            logger.warning(
                "recordings waiting to be saved passed RECORDING_PENDING_MAX_BYTES (%d bytes): saving "
                "them now, and whenever they pass it again",
                self.pending_max_bytes,
            )
        return self._take_pending()

    def take_pending(self) -> list[tuple[str, Interaction]]:
        """The pending recordings, taken to be saved (`save(batch)`, in a worker thread)."""
        return self._take_pending()

    def _take_pending(self) -> list[tuple[str, Interaction]]:
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        return batch

    def save(self, batch: list[tuple[str, Interaction]] | None = None) -> int:
        """Write the pending recordings (or a batch `overflow` took from them, which is emptied);
        how many. Each is let go once written, so a batch of large uploads leaves memory as it
        is saved, not when the last is."""
        taken = self._take_pending() if batch is None else batch
        by_file: dict[str, list[Interaction]] = defaultdict(list)
        for file, interaction in taken:
            by_file[file].append(interaction)
        taken.clear()
        sizes = {file: sum(interaction_bytes(i) for i in interactions) for file, interactions in by_file.items()}
        self._saving(sum(sizes.values()))
        saved = 0
        try:
            while by_file:
                file, interactions = by_file.popitem()
                count = len(interactions)
                try:
                    if self._write(file, interactions):
                        saved += count
                finally:
                    self._saving(-sizes.pop(file))
        finally:
            self._saving(-sum(sizes.values()))  # what an error left unwritten is let go too
        return saved

    def _saving(self, change: int) -> None:
        with self._saving_lock:
            self.saving_bytes += change

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

    def _append(self, file: str, interactions: list[Interaction]) -> None:
        """Append to the file, each interaction indexed (and kept parsed, when small) once written."""

        def written(interaction: Interaction, offset: int, length: int) -> None:
            ref = Ref(file, offset, length)
            key = interaction.key(self.rules, self.table)
            with self._switch_lock:
                index = self._index_for(file)
                if index is None:
                    return
                index[key].append(ref)
            if length <= REMEMBER_WRITTEN_BYTES:
                self._remember(ref, interaction)

        persistence.append(self.directory / file, interactions, written)
