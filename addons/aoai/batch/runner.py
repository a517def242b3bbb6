"""Batch jobs run in the background: each replica's runner claims the jobs no live replica
holds (a lease in the data store, so exactly one runs each, and a job whose replica died is
taken over), and moves each through Azure's statuses by the clock:

    validating  (BATCH_VALIDATING_SECONDS; then the input file is checked line by line)
    in_progress (each line due BATCH_LINE_SECONDS after the one before; answered by the
                 simulator's own stages, several at once, written out as they finish: out of
                 order, as Azure's results are)
    finalizing  (BATCH_FINALIZING_SECONDS; then the output and error files are made)
    completed, or failed, expired (still running when its 24-hour window ends), cancelled.

A job's progress (lines done, bytes written, counts) is saved after every group of lines, so
a job interrupted by a restart resumes where it was. A job may be fast-forwarded
(`skip_s` in its progress): its clock runs that much ahead, so waits end sooner and its window
may end. Everything that blocks (SQLite, reading and writing files, validation) runs in a
worker thread; the event loop only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from . import jsonl, results
from .store import DataStore, Full

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
STEP_S = 0.5  # a wait is cut in steps this long, so a cancel or a fast-forward is seen soon


class Answer(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def request_id(self) -> str: ...


# One line's request: method, path, body -> its answer (runtime/lines.py LineDriver.answer).
AnswerLine = Callable[[str, str, bytes], Awaitable[Answer]]


@dataclass(frozen=True)
class Pace:
    validating_s: float = 5.0
    line_s: float = 0.05
    finalizing_s: float = 5.0
    cancelling_s: float = 1.0
    concurrency: int = 16  # lines answered at once
    lease_s: float = 30.0  # a job whose runner has not renewed its lease this long is taken over
    poll_s: float = 0.5  # how often a runner looks for jobs


@dataclass
class Counts:
    """What this replica's runner did, for the metrics (aoai_batch_*)."""

    lines: Counter[tuple[str, str]] = field(default_factory=Counter)  # (deployment, outcome)
    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)  # (deployment, prompt|completion)


@dataclass
class Setup:
    """What a runner reads from the configuration, each time it needs it."""

    pace: Callable[[], Pace]
    deployment: jsonl.DeploymentLookup  # a deployment by name, as validation sees it
    enqueued_limit: Callable[[str], int | None]  # a Global Batch deployment's enqueued-token quota
    # (batch, endpoint, deployment, api-version or "" for v1) -> the path its lines are asked on
    line_path: Callable[[dict[str, Any], str, str, str], str]
    active: Callable[[], bool] = lambda: True  # whether jobs run here now (not in record mode)


class Runner:
    def __init__(
        self,
        store: DataStore,
        answer: AnswerLine,
        setup: Setup,
        owner: str = "",
        clock: Callable[[], float] = time.time,
        counts: Counts | None = None,
    ) -> None:
        self.store, self.answer, self.setup, self.clock = store, answer, setup, clock
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.counts = counts if counts is not None else Counts()
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._claim_forever())
        if self._leases is None or self._leases.done():
            self._leases = asyncio.get_running_loop().create_task(self._keep_leases())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._leases, *self.jobs.values()) if t is not None]
        self._task = self._leases = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for batch_id in list(self.jobs):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, self.owner, batch_id)
        self.jobs.clear()

    async def _claim_forever(self) -> None:
        while True:
            try:
                await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("batch jobs could not be claimed; trying again")
            await asyncio.sleep(self.setup.pace().poll_s)

    async def _keep_leases(self) -> None:
        """Renew the lease of every job held here, however long its lines take (a line may wait
        minutes on a declared hang); a job whose lease another runner took is stopped here."""
        while True:
            lease_s = self.setup.pace().lease_s
            await asyncio.sleep(lease_s / 3)
            for batch_id, task in list(self.jobs.items()):
                try:
                    held = await asyncio.to_thread(self.store.renew, self.owner, batch_id, lease_s)
                except Exception:
                    logger.exception("the lease of batch %s could not be renewed", batch_id)
                    continue
                if not held:
                    logger.warning("batch %s is run by another replica now; stopped here", batch_id)
                    task.cancel()

    async def claim(self) -> list[str]:
        """Take the jobs no live runner holds, and start them."""
        if not self.setup.active():
            return []
        taken: list[str] = await asyncio.to_thread(self.store.claim, self.owner, self.setup.pace().lease_s)
        for batch_id in taken:
            if batch_id not in self.jobs:
                self.jobs[batch_id] = asyncio.get_running_loop().create_task(self._run(batch_id))
        return taken

    async def _run(self, batch_id: str) -> None:
        try:
            await Job(self, batch_id).run()
        except asyncio.CancelledError:
            raise
        except Lost:
            logger.info("batch %s is gone or held by another replica; stopped here", batch_id)
        except Exception:
            logger.exception("batch %s stopped on an error; it is taken up again", batch_id)
        finally:
            self.jobs.pop(batch_id, None)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, self.owner, batch_id)


class Lost(Exception):
    """Another runner holds the job now (this one's lease ran out)."""


class Job:
    """One batch, from wherever its saved status and progress say, to its end."""

    def __init__(self, runner: Runner, batch_id: str) -> None:
        self.runner, self.store, self.id = runner, runner.store, batch_id
        self.batch: dict[str, Any] = {}
        self.progress: dict[str, Any] = {}
        self._read = 0.0  # when the batch was last read from the store (runner's clock)
        self.skipped = 0.0  # how far the job was fast-forwarded

    # --- time -----------------------------------------------------------------------------

    def now(self) -> float:
        """The job's clock: the simulator's, ahead by what the job was fast-forwarded."""
        return self.runner.clock() + self.skipped

    async def refresh(self, at_most_every: float = 0.0) -> None:
        """Read the batch again (a cancel or fast-forward may come from any replica); not again
        within `at_most_every` seconds of the last read."""
        if at_most_every and self.runner.clock() - self._read < at_most_every:
            return
        self._read = self.runner.clock()
        batch = await asyncio.to_thread(self.store.get_batch, self.id)
        if batch is None:
            raise Lost(self.id)
        self.batch = batch
        self.progress = await asyncio.to_thread(self.store.progress, self.id)
        self.skipped = await asyncio.to_thread(self.store.skipped, self.id)

    async def until(self, due: float, statuses: frozenset[str]) -> bool:
        """Wait until the job's clock reaches `due`; False when its status left `statuses`
        meanwhile (cancelled elsewhere)."""
        while True:
            await self.refresh(STEP_S)
            if self.batch["status"] not in statuses:
                return False
            left = due - self.now()
            if left <= 0:
                return True
            await asyncio.sleep(min(STEP_S, left))

    async def save(
        self,
        batch: dict[str, Any],
        progress: dict[str, Any] | None = None,
        deployment: str | None = None,
        tokens: int | None = None,
    ) -> bool:
        """Store the job's next state, unless another replica moved it meanwhile (a cancel):
        then False, and the job is read again."""
        expect = str(self.batch["status"])
        saved = await asyncio.to_thread(self.store.save_batch, batch, progress, expect, deployment, tokens)
        if saved:
            self.batch = batch
            if progress is not None:
                self.progress = progress
        else:
            self._read = 0.0
            await self.refresh()
        return bool(saved)

    # --- the statuses -----------------------------------------------------------------------

    async def run(self) -> None:
        await self.refresh()
        while self.batch["status"] not in TERMINAL:
            status = self.batch["status"]
            if status == "validating":
                await self.validating()
            elif status == "in_progress":
                await self.in_progress()
            elif status == "finalizing":
                await self.finalizing()
            elif status == "cancelling":
                await self.cancelling()
            else:
                raise ValueError(f"batch {self.id} has an unknown status {status!r}")
            await self.refresh()

    async def validating(self) -> None:
        pace = self.runner.setup.pace()
        if not await self.until(float(self.batch["created_at"]) + pace.validating_s, frozenset({"validating"})):
            return
        validation = await asyncio.to_thread(self._validate)
        now = int(self.now())
        if not validation.ok:
            await self.save(results.to_failed(self.batch, now, validation.errors))
            return
        deployment = validation.deployment
        assert deployment is not None
        limit = self.runner.setup.enqueued_limit(deployment.name)
        if limit is not None:
            others = await asyncio.to_thread(self.store.enqueued_tokens, deployment.name)
            if others + validation.tokens > limit:
                error = results.token_limit_exceeded(deployment.name, limit, others, validation.tokens)
                await self.save(results.to_failed(self.batch, now, [error]))
                return
        progress = {
            **self.progress,
            "deployment": deployment.name,
            "tokens": validation.tokens,
            "total": validation.lines,
            "next_line": 1,
            "offset": 0,
            "output_bytes": 0,
            "error_bytes": 0,
            "completed": 0,
            "failed": 0,
        }
        await self.save(
            results.to_in_progress(self.batch, now, validation.lines), progress, deployment.name, validation.tokens
        )

    def _validate(self) -> jsonl.Validation:
        path = self.store.file_path(str(self.batch["input_file_id"]))
        try:
            with open(path, "rb") as file:
                return jsonl.validate(file, str(self.batch["endpoint"]), self.runner.setup.deployment)
        except FileNotFoundError:
            validation = jsonl.Validation()
            validation.errors.append(
                jsonl.error_entry("invalid_request", f"The input file {self.batch['input_file_id']} was not found.")
            )
            return validation

    async def in_progress(self) -> None:
        outputs, errors = self._scratch()
        await asyncio.to_thread(_truncate, outputs, int(self.progress.get("output_bytes", 0)))
        await asyncio.to_thread(_truncate, errors, int(self.progress.get("error_bytes", 0)))
        input_path = self.store.file_path(str(self.batch["input_file_id"]))
        started = float(self.batch.get("in_progress_at") or self.now())
        expires = float(self.batch.get("expires_at") or 0)
        pending: list[jsonl.Line] = []
        source = await asyncio.to_thread(open, input_path, "rb")
        with source:
            lines = jsonl.read_lines(
                source, int(self.progress.get("next_line", 1)), int(self.progress.get("offset", 0))
            )
            done = int(self.progress.get("completed", 0)) + int(self.progress.get("failed", 0))
            while True:
                await self.refresh(STEP_S)
                if self.batch["status"] != "in_progress":
                    return  # cancelled meanwhile: cancelling takes it from here
                if expires and self.now() >= expires:
                    await self.save(results.to_expired(self.batch, int(self.now())))
                    return
                pace = self.runner.setup.pace()
                pending = await asyncio.to_thread(_take, lines, pace.concurrency)
                if not pending:
                    break
                # The group's last line is due `line_s` after the line before it, from the start.
                due = started + (done + len(pending)) * pace.line_s
                if not await self.until(due, frozenset({"in_progress"})):
                    return
                await self._answer_group(pending, outputs, errors)
                done += len(pending)
        await self.save(results.to_finalizing(self.batch, int(self.now())))

    async def _answer_group(self, group: list[jsonl.Line], outputs: Path, errors: Path) -> None:
        deployment = str(self.progress["deployment"])
        endpoint = str(self.batch["endpoint"])
        path = self.runner.setup.line_path(self.batch, endpoint, deployment, str(self.progress.get("api_version", "")))
        answers = await asyncio.gather(*(self._answer_one(path, line) for line in group))
        good = [row for ok, row in answers if ok]
        bad = [row for ok, row in answers if not ok]
        wrote = await asyncio.to_thread(_append, outputs, good), await asyncio.to_thread(_append, errors, bad)
        last = group[-1]
        progress = {
            **self.progress,
            "next_line": last.number + 1,
            "offset": last.end,
            "output_bytes": int(self.progress.get("output_bytes", 0)) + wrote[0],
            "error_bytes": int(self.progress.get("error_bytes", 0)) + wrote[1],
            "completed": int(self.progress.get("completed", 0)) + len(good),
            "failed": int(self.progress.get("failed", 0)) + len(bad),
        }
        counts = {
            "total": int(progress.get("total", 0)),
            "completed": progress["completed"],
            "failed": progress["failed"],
        }
        await self.save({**self.batch, "request_counts": counts}, progress)

    async def _answer_one(self, path: str, line: jsonl.Line) -> tuple[bool, bytes]:
        request = line.request
        given = request.get("body")
        # Batches never stream: a line asking to is answered whole.
        body = (
            {k: v for k, v in given.items() if k not in ("stream", "stream_options")} if isinstance(given, dict) else {}
        )
        answer = await self.runner.answer("POST", path, orjson.dumps(body))
        try:
            answered = orjson.loads(answer.body) if answer.body else None
        except orjson.JSONDecodeError:
            answered = {"error": {"message": answer.body.decode("utf-8", "replace")[:1000]}}
        deployment = str(self.progress.get("deployment", ""))
        ok = answer.status == 200
        counts = self.runner.counts
        counts.lines[(deployment, "completed" if ok else "failed")] += 1
        usage = answered.get("usage") if ok and isinstance(answered, dict) else None
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
            completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
            counts.tokens[(deployment, "prompt")] += int(prompt or 0)
            counts.tokens[(deployment, "completion")] += int(completion or 0)
        row = results.result_line(str(request.get("custom_id", "")), answer.status, answer.request_id, answered)
        return ok, orjson.dumps(row) + b"\n"

    async def finalizing(self) -> None:
        pace = self.runner.setup.pace()
        since = float(self.batch.get("finalizing_at") or self.now())
        if not await self.until(since + pace.finalizing_s, frozenset({"finalizing"})):
            return
        output_id, error_id = await self._files()
        counts = self.batch.get("request_counts") or {}
        if output_id is None or error_id is None:  # the data folder is full: nowhere to put the results
            error = jsonl.error_entry(
                "invalid_request", "The batch's results could not be stored: the data folder is full."
            )
            await self.save(results.to_failed(self.batch, int(self.now()), [error]))
            return
        await self.save(results.to_completed(self.batch, int(self.now()), output_id, error_id, counts))

    async def cancelling(self) -> None:
        pace = self.runner.setup.pace()
        since = float(self.batch.get("cancelling_at") or self.now())
        if not await self.until(since + pace.cancelling_s, frozenset({"cancelling"})):
            return
        output_id, error_id = await self._files()  # what was answered before the cancel is kept
        await self.save(results.to_cancelled(self.batch, int(self.now()), output_id, error_id))

    async def _files(self) -> tuple[str | None, str | None]:
        """The output and error files made from what was written (an error file even when
        empty, as Azure makes one); None for a file the store cannot take (full)."""
        outputs, errors = self._scratch()
        expires = _expires(self.batch, int(self.now()))
        made: list[str | None] = []
        for path, kind in ((outputs, "output"), (errors, "error")):
            if not path.exists():
                await asyncio.to_thread(path.touch)
            try:
                record = await asyncio.to_thread(
                    self.store.add_file_from, path, f"{self.id}_{kind}.jsonl", "batch_output", expires, None
                )
                made.append(record.id)
            except Full as e:
                logger.error("batch %s: its %s file could not be kept: %s", self.id, kind, e.message)
                made.append(None)
        return made[0], made[1]

    def _scratch(self) -> tuple[Path, Path]:
        return self.store.scratch(f"{self.id}.output.jsonl"), self.store.scratch(f"{self.id}.errors.jsonl")


def _expires(batch: dict[str, Any], now: int) -> int | None:
    after = batch.get("output_expires_after")
    if isinstance(after, dict) and isinstance(after.get("seconds"), int):
        return now + int(after["seconds"])
    return None


def _take(lines: Any, count: int) -> list[jsonl.Line]:
    out: list[jsonl.Line] = []
    for line in lines:
        out.append(line)
        if len(out) >= count:
            break
    return out


def _truncate(path: Path, size: int) -> None:
    """What was written after the last saved progress goes: those lines are answered again."""
    if path.exists():
        with open(path, "r+b") as file:
            file.truncate(size)


def _append(path: Path, rows: list[bytes]) -> int:
    if not rows:
        return 0
    data = b"".join(rows)
    with open(path, "ab") as file:
        file.write(data)
        file.flush()
    return len(data)
