"""The data folder: uploaded files, batch outputs and batch jobs, kept across restarts and
shared by every worker that points at the same folder.

Metadata lives in SQLite (`<folder>/data.sqlite3`, WAL mode, so readers never wait for a
writer); file contents live in `<folder>/files/<id>`, written under a temporary name and
renamed into place, so a reader never sees half a file. Every call opens its own short
transaction on a connection kept per thread: the store is called from worker threads
(`asyncio.to_thread`) and from several processes at once. Writes that must see a consistent
count (a bound, a claim) start with `BEGIN IMMEDIATE`, which takes SQLite's write lock first:
two processes claiming the same job cannot both win.

Bounds: the bytes of all files (SIMULATOR_DATA_MAX_BYTES), Azure's file counts (500 files
without an expiry, 10,000 in all when they have one; output files count too), and the batch
jobs kept (the oldest finished ones make room). A file past its `expires_at` reads as deleted
and is swept a few at a time by the calls that add or list.

Every call blocks (disk and lock waits): callers on the event loop run them in a thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATABASE = "data.sqlite3"
FILES, SCRATCH = "files", "scratch"
PROCESSED = "processed"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})  # a batch in these never moves again
SWEEP_PER_CALL = 32  # expired files removed by one call: the work any one request does stays small
BUSY_TIMEOUT_MS = 10_000  # how long a call waits for another process's write lock
MAX_BATCHES = 10_000  # batch jobs kept; the oldest finished ones make room for new ones

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    deployment TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    skip_s REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_active ON batches (terminal, lease_until);
"""


class Full(Exception):
    """A bound was hit: Azure's error for it (a 400 with `code` and `message`)."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    status: str = PROCESSED

    def to_json(self) -> dict[str, Any]:
        """Azure's file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "expires_at": self.expires_at,
            "status_details": None,
        }


def upload_id() -> str:
    """An uploaded file's id, as Azure makes them: `file-` and 32 hex digits."""
    return "file-" + uuid.uuid4().hex


def output_id() -> str:
    """A file the service made (batch output): `file-` and a dashed UUID."""
    return f"file-{uuid.uuid4()}"


def _record(row: sqlite3.Row) -> FileRecord:
    return FileRecord(
        row["id"], row["filename"], row["purpose"], row["bytes"], row["created_at"], row["expires_at"], row["status"]
    )


class DataStore:
    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        max_files: int = 500,
        max_files_with_expiry: int = 10_000,
        clock: Callable[[], float] = time.time,
        max_batches: int = MAX_BATCHES,
    ):
        self.folder = Path(folder)
        self.max_bytes, self.max_files, self.max_files_with_expiry = max_bytes, max_files, max_files_with_expiry
        self.max_batches = max_batches
        self.clock = clock
        self._local = threading.local()
        (self.folder / FILES).mkdir(parents=True, exist_ok=True)
        (self.folder / SCRATCH).mkdir(parents=True, exist_ok=True)
        self._connection().executescript(_SCHEMA)  # each statement idempotent: any process may run it

    # -- connections ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections are not shared between threads)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.folder / DATABASE, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
            )
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")  # WAL keeps it consistent; a power cut may lose the last
            self._local.connection = connection
        return connection

    @contextmanager
    def _write(self, connection: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its start."""
        connection = connection or self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _now(self) -> int:
        return int(self.clock())

    # -- files ----------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.folder / FILES / _safe(file_id)

    def scratch(self, name: str) -> Path:
        """A path in the data folder for a file being written (moved in with `add_file_from`);
        on the same disk, so moving it in is a rename."""
        return self.folder / SCRATCH / _safe(name)

    def add_file(
        self, filename: str, purpose: str, data: bytes, expires_at: int | None, file_id: str | None = None
    ) -> FileRecord:
        """Keep an uploaded file; raises Full when a bound would be passed."""
        temporary = self.scratch(f"upload-{uuid.uuid4().hex}")
        with open(temporary, "wb") as out:
            out.write(data)
        return self._take_in(temporary, filename, purpose, len(data), expires_at, file_id or upload_id())

    def add_file_from(
        self, path: Path, filename: str, purpose: str, expires_at: int | None, file_id: str | None = None
    ) -> FileRecord:
        """Move a finished file in (a batch's output, written under `scratch`); raises Full,
        leaving the file where it was."""
        return self._take_in(
            Path(path), filename, purpose, Path(path).stat().st_size, expires_at, file_id or output_id()
        )

    def _take_in(
        self, temporary: Path, filename: str, purpose: str, size: int, expires_at: int | None, file_id: str
    ) -> FileRecord:
        self.sweep()
        record = FileRecord(file_id, filename, purpose, size, self._now(), expires_at)
        moved = False
        try:
            with self._write() as db:
                self._check_room(db, size, expires_at is not None)
                db.execute(
                    "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.id, filename, purpose, size, record.created_at, expires_at, record.status),
                )
                # Into place before the row is committed: a committed row always has its file.
                os.replace(temporary, self.file_path(file_id))
                moved = True
        except BaseException:
            if moved:
                self.file_path(file_id).unlink(missing_ok=True)
            elif temporary.parent == self.folder / SCRATCH and temporary.name.startswith("upload-"):
                temporary.unlink(missing_ok=True)
            raise
        return record

    def _check_room(self, db: sqlite3.Connection, size: int, expires: bool) -> None:
        now = self._now()
        live = "expires_at IS NULL OR expires_at > ?"
        count, used = db.execute(f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files WHERE {live}", (now,)).fetchone()
        if not expires:
            (without,) = db.execute("SELECT COUNT(*) FROM files WHERE expires_at IS NULL").fetchone()
            if without >= self.max_files:
                raise Full(
                    "quotaExceeded", f"The quota for files without expiry is reached. The maximum is {self.max_files}."
                )
        if count >= self.max_files_with_expiry:
            raise Full(
                "quotaExceeded",
                f"The quota for files with expiry is reached. The maximum is {self.max_files_with_expiry}.",
            )
        if used + size > self.max_bytes:
            raise Full(
                "quotaExceeded",
                f"The quota for the total size of files is reached: {used} bytes are stored, this file has {size} "
                f"and the maximum is {self.max_bytes}. Delete files you no longer need and try again.",
            )

    def get_file(self, file_id: str) -> FileRecord | None:
        """The file; None when there is none, it was deleted, or it has expired."""
        row = (
            self._connection()
            .execute(
                "SELECT * FROM files WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)", (file_id, self._now())
            )
            .fetchone()
        )
        return _record(row) if row is not None else None

    def list_files(
        self, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRecord], bool]:
        """A page of the live files, oldest first (`order` "asc") or newest first ("desc"),
        starting after the file `after`; and whether more follow."""
        self.sweep()
        db = self._connection()
        descending = order == "desc"
        where, args = ["(expires_at IS NULL OR expires_at > ?)"], list[object]([self._now()])
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            found = db.execute("SELECT n FROM files WHERE id = ?", (after,)).fetchone()
            if found is not None:
                where.append("n < ?" if descending else "n > ?")
                args.append(found["n"])
        direction = "DESC" if descending else "ASC"
        rows = db.execute(
            f"SELECT * FROM files WHERE {' AND '.join(where)} ORDER BY n {direction} LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    def delete_file(self, file_id: str) -> bool:
        """Delete the file; False when there was none (or it had expired)."""
        now = self._now()
        with self._write() as db:
            row = db.execute("SELECT expires_at FROM files WHERE id = ?", (file_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.file_path(file_id).unlink(missing_ok=True)
        return row["expires_at"] is None or row["expires_at"] > now

    def sweep(self, most: int = SWEEP_PER_CALL) -> int:
        """Remove up to `most` expired files; how many went."""
        db = self._connection()
        now = self._now()
        rows = db.execute(
            "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?", (now, most)
        ).fetchall()
        if not rows:
            return 0
        ids = [r["id"] for r in rows]
        with self._write(db):
            db.executemany("DELETE FROM files WHERE id = ? AND expires_at <= ?", [(i, now) for i in ids])
        for file_id in ids:
            self.file_path(file_id).unlink(missing_ok=True)
        return len(ids)

    def usage(self) -> dict[str, int]:
        """For /++/limits: the live files, their bytes and the bounds."""
        now = self._now()
        db = self._connection()
        count, used = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files WHERE expires_at IS NULL OR expires_at > ?", (now,)
        ).fetchone()
        (without,) = db.execute("SELECT COUNT(*) FROM files WHERE expires_at IS NULL").fetchone()
        (batches,) = db.execute("SELECT COUNT(*) FROM batches").fetchone()
        return {
            "count": count,
            "bytes": used,
            "maxCount": self.max_files_with_expiry,
            "maxBytes": self.max_bytes,
            "countWithoutExpiry": without,
            "maxCountWithoutExpiry": self.max_files,
            "batches": batches,
            "maxBatches": self.max_batches,
        }

    # -- batches --------------------------------------------------------------------------------

    def add_batch(self, batch: dict[str, Any], deployment: str, tokens: int) -> None:
        """Keep a new batch job (its id in `batch["id"]`). The oldest finished jobs make room;
        raises Full when every job kept is still running."""
        status = str(batch["status"])
        with self._write() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM batches").fetchone()
            if count >= self.max_batches:
                extra = count - self.max_batches + 1
                gone = db.execute(
                    "DELETE FROM batches WHERE n IN (SELECT n FROM batches WHERE terminal = 1 ORDER BY n LIMIT ?)",
                    (extra,),
                ).rowcount
                if gone < extra:
                    raise Full(
                        "quotaExceeded",
                        f"The quota for batch jobs is reached: {self.max_batches} are kept and none has finished. "
                        "Cancel a batch or wait for one to finish, and try again.",
                    )
            db.execute(
                "INSERT INTO batches (id, body, status, terminal, deployment, tokens) VALUES (?, ?, ?, ?, ?, ?)",
                (batch["id"], json.dumps(batch), status, int(status in TERMINAL), deployment, tokens),
            )

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        row = self._connection().execute("SELECT body FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return _loads(row["body"]) if row is not None else None

    def list_batches(self, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A page of batch jobs, newest first, starting after the job `after`; and whether more follow."""
        db = self._connection()
        where, args = "", list[object]()
        if after is not None:
            found = db.execute("SELECT n FROM batches WHERE id = ?", (after,)).fetchone()
            if found is not None:
                where, args = "WHERE n < ?", [found["n"]]
        rows = db.execute(f"SELECT body FROM batches {where} ORDER BY n DESC LIMIT ?", (*args, limit + 1)).fetchall()
        return [_loads(r["body"]) for r in rows[:limit]], len(rows) > limit

    def save_batch(
        self,
        batch: dict[str, Any],
        progress: dict[str, Any] | None = None,
        expect: str | None = None,
        deployment: str | None = None,
        tokens: int | None = None,
    ) -> bool:
        """Store the job's new state (and, when given, its progress: where a resumed run goes
        on; the deployment and tokens its unfinished job holds of the enqueued quota). With
        `expect`, only while its status is still that one: False when another replica moved
        it meanwhile (a cancel), and nothing is written."""
        status = str(batch["status"])
        sets, args = ["body = ?", "status = ?", "terminal = ?"], [json.dumps(batch), status, int(status in TERMINAL)]
        if progress is not None:
            sets.append("progress = ?")
            args.append(json.dumps(progress))
        if deployment is not None:
            sets.append("deployment = ?")
            args.append(deployment)
        if tokens is not None:
            sets.append("tokens = ?")
            args.append(tokens)
        where, args = "id = ?", [*args, batch["id"]]
        if expect is not None:
            where += " AND status = ?"
            args.append(expect)
        with self._write() as db:
            changed = db.execute(f"UPDATE batches SET {', '.join(sets)} WHERE {where}", args).rowcount
        return changed == 1

    def fast_forward(self, batch_id: str, seconds: float) -> bool:
        """Run the job's clock `seconds` ahead (waits end sooner, its window may end); False
        when there is no such job."""
        with self._write() as db:
            changed = db.execute("UPDATE batches SET skip_s = skip_s + ? WHERE id = ?", (seconds, batch_id)).rowcount
        return changed == 1

    def skipped(self, batch_id: str) -> float:
        """How far the job's clock was run ahead (fast_forward)."""
        row = self._connection().execute("SELECT skip_s FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return float(row["skip_s"]) if row is not None else 0.0

    def active_batches(self) -> list[dict[str, Any]]:
        """Every unfinished job with its progress, holder and lease (for /++/batches)."""
        rows = (
            self._connection()
            .execute("SELECT body, progress, owner, lease_until, skip_s FROM batches WHERE terminal = 0 ORDER BY n")
            .fetchall()
        )
        return [
            {
                "batch": _loads(r["body"]),
                "progress": _loads(r["progress"]),
                "owner": r["owner"],
                "leaseUntil": r["lease_until"],
                "skippedSeconds": r["skip_s"],
            }
            for r in rows
        ]

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are kept in each status (for the metrics)."""
        rows = self._connection().execute("SELECT status, COUNT(*) AS n FROM batches GROUP BY status").fetchall()
        return {str(r["status"]): int(r["n"]) for r in rows}

    def progress(self, batch_id: str) -> dict[str, Any]:
        """What `save_batch` last kept as the job's progress ({} when none)."""
        row = self._connection().execute("SELECT progress FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return _loads(row["progress"]) if row is not None else {}

    def claim(self, owner: str, lease_s: float, most: int = 100) -> list[str]:
        """The unfinished jobs no one holds (or whose holder's lease ran out), now held by
        `owner` for `lease_s` seconds. `owner` names one running process (a new one each
        start): jobs it already holds are not returned again."""
        now = self.clock()
        with self._write() as db:
            rows = db.execute(
                "SELECT id FROM batches WHERE terminal = 0 AND (owner IS NULL OR lease_until <= ?) ORDER BY n LIMIT ?",
                (now, most),
            ).fetchall()
            ids = [r["id"] for r in rows]
            db.executemany(
                "UPDATE batches SET owner = ?, lease_until = ? WHERE id = ?", [(owner, now + lease_s, i) for i in ids]
            )
        return ids

    def renew(self, owner: str, batch_id: str, lease_s: float) -> bool:
        """Extend the owner's lease; False when it no longer holds the job (another took it)."""
        with self._write() as db:
            changed = db.execute(
                "UPDATE batches SET lease_until = ? WHERE id = ? AND owner = ?",
                (self.clock() + lease_s, batch_id, owner),
            ).rowcount
        return changed == 1

    def release(self, owner: str, batch_id: str) -> None:
        """Let the job go (another process may claim it at once, if it is unfinished)."""
        with self._write() as db:
            db.execute("UPDATE batches SET owner = NULL, lease_until = 0 WHERE id = ? AND owner = ?", (batch_id, owner))

    def enqueued_tokens(self, deployment: str) -> int:
        """The tokens of this deployment's jobs that have not reached a terminal state."""
        (total,) = (
            self._connection()
            .execute(
                "SELECT COALESCE(SUM(tokens), 0) FROM batches WHERE deployment = ? AND terminal = 0", (deployment,)
            )
            .fetchone()
        )
        return int(total)


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _safe(name: str) -> str:
    """A name that stays one file inside its folder, whatever a client put in an id."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"not a file name: {name!r}")
    return name
