"""Batches: Azure OpenAI's Files and Batch APIs (and the data folder they are kept in), in
generate and replay modes. Uploads, lists, retrievals, contents and deletions of files, and the
creation, retrieval, listing and cancelling of batch jobs, are answered from the data folder the
services hold (`Services.data`, aoai/batch/store.py), which every worker pointing at the same
folder shares and which outlives restarts. The jobs themselves are run by a runner each replica
starts (aoai/batch/runner.py): their lines are answered by the simulator's own stages
(runtime/lines.py). In record mode these requests are left to the Record stage, which forwards
them to Azure, and no job runs here.

`/++/batches` shows the jobs not finished (progress, holder), and
`POST /++/batches/{id}/fast-forward` runs a job's clock ahead.

Every call to the store blocks (SQLite, disk), and a large upload is parsed and written in a
worker thread: nothing here runs on the event loop longer than a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, BinaryIO

from mitmproxy import ctx, http

from .. import wire
from ..batch import files, jsonl, results
from ..batch.runner import Pace, Runner, Setup
from ..batch.store import DataStore, FileRecord, Full
from ..openai import forms, tokens, validation
from ..runtime.config import DATA_FOLDER_NAME, DEFAULT_DATA_MAX_BYTES, ConfigError, SimulatorConfig
from ..runtime.lines import LineDriver
from ..runtime.options import Option, check, declare, names
from ..runtime.routes import REQUIRED, TABLE
from ..runtime.services import Services
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_of
from ..runtime.streams import StreamPlan

logger = logging.getLogger(__name__)

FILE_OPERATIONS = frozenset({"files", "files_list", "file", "file_delete", "file_content"})
BATCH_OPERATIONS = frozenset({"batches", "batches_list", "batch", "batch_cancel"})
JOB_OPERATIONS = frozenset({"batch_jobs", "batch_job_fast_forward"})
# The online operation a batch endpoint's lines are, and its path (dated, then v1).
LINE_OPERATIONS = {"/chat/completions": "chat", "/embeddings": "embeddings", "/responses": "responses"}
LINE_PATHS = {
    "/chat/completions": (
        "/openai/deployments/{deployment}/chat/completions?api-version={version}",
        "/openai/v1/chat/completions",
    ),
    "/embeddings": ("/openai/deployments/{deployment}/embeddings?api-version={version}", "/openai/v1/embeddings"),
    "/responses": ("/openai/responses?api-version={version}", "/openai/v1/responses"),
}
LIST_DEFAULT, LIST_MOST = 20, 100

OPTIONS = (
    Option(
        "SIMULATOR_DATA_DIR",
        str,
        "",
        f"Folder where uploaded files and batch jobs are kept, shared by every worker and kept across "
        f"restarts; empty: a folder '{DATA_FOLDER_NAME}' beside RECORDING_DIR.",
    ),
    Option(
        "BATCH_VALIDATING_SECONDS",
        float,
        Pace.validating_s,
        "Seconds a batch job stays validating before its input file is checked.",
    ),
    Option(
        "BATCH_LINE_SECONDS",
        float,
        Pace.line_s,
        "Seconds between one line of a batch job and the next (0: as fast as the lines are answered).",
    ),
    Option(
        "BATCH_FINALIZING_SECONDS",
        float,
        Pace.finalizing_s,
        "Seconds a batch job stays finalizing before its output and error files are made.",
    ),
    Option(
        "FILES_MAX",
        int,
        SimulatorConfig.files_max,
        "Files kept in the data folder at most, uploads and batch outputs (Azure's: 10,000); past it an "
        "upload gets Azure's quotaExceeded error.",
        low=1,
        high=10_000_000,
    ),
    Option(
        "FILES_MAX_WITHOUT_EXPIRY",
        int,
        SimulatorConfig.files_max_without_expiry,
        "Of those, files kept at most that never expire (Azure's: 500); files with expires_after count only "
        "against FILES_MAX.",
        low=1,
        high=10_000_000,
    ),
    Option(
        "SIMULATOR_DATA_MAX_BYTES",
        int,
        DEFAULT_DATA_MAX_BYTES,
        "The most bytes the files in the data folder may take together (uploads and batch outputs); "
        "an upload past it gets Azure's quotaExceeded error.",
        low=1,
    ),
)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the data folder's settings and copy them into `config`; raises ConfigError."""
    check(options, OPTIONS, updated)
    for name in ("batch_validating_seconds", "batch_line_seconds", "batch_finalizing_seconds"):
        if getattr(options, name) < 0 or getattr(options, name) > MAX_WAIT_S:
            raise ConfigError(
                f"{name.upper()}: expected seconds from 0 to {MAX_WAIT_S:g}, got {getattr(options, name)}"
            )
    config.data_dir = options.simulator_data_dir.strip()
    config.data_max_bytes = options.simulator_data_max_bytes
    config.files_max = options.files_max
    config.files_max_without_expiry = min(options.files_max_without_expiry, options.files_max)
    config.batch_pace = Pace(
        validating_s=options.batch_validating_seconds,
        line_s=options.batch_line_seconds,
        finalizing_s=options.batch_finalizing_seconds,
    )


MAX_WAIT_S = 7 * 86_400.0  # a job's waits: a week is more than any test sits through


def unusable(folder: Path) -> str | None:
    """Why the data folder cannot be written (made if missing), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def _error(error: files.FileError, request: http.Request) -> http.Response:
    return wire.json_response(error.status, error.body(), request)


def _full(error: Full, request: http.Request) -> http.Response:
    return wire.azure_error(error.status, error.code, error.message, request)


def _endpoint(flow: http.HTTPFlow) -> str:
    """The address the client called, for the Location of what it made."""
    scheme = "https" if flow.client_conn.tls_established else "http"
    return f"{scheme}://{flow.request.host_header}"


class Batches:
    def __init__(
        self,
        config: SimulatorConfig,
        services: Services,
        startup: Startup | None = None,
        lines: LineDriver | None = None,
    ):
        self.config = config
        self.services = services
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.lines = lines  # answers a job's lines through the stages an online request meets
        self.runner: Runner | None = None

    def running(self) -> None:
        store = self.services.data
        if store is None or self.lines is None:
            return
        self.runner = Runner(store, self.lines.answer, self._setup(), counts=self.services.batch_counts)
        self.runner.start()

    async def done(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    def _setup(self) -> Setup:
        config = self.config
        return Setup(
            pace=lambda: config.batch_pace,
            deployment=self._deployment,
            enqueued_limit=lambda name: config.deployments[name].enqueued_limit if name in config.deployments else None,
            line_path=_line_path,
            active=lambda: config.mode != "record" and self.services.data is not None,
        )

    def _deployment(self, name: str) -> jsonl.BatchDeployment | None:
        deployment = self.config.deployments.get(name)
        if deployment is None:
            return None
        encoding = tokens.encoding(deployment.model.encoding)

        def count(endpoint: str, body: dict[str, Any]) -> int:
            route = TABLE.operation(LINE_OPERATIONS.get(endpoint, "chat"))
            if route is None or route.prompt_tokens is None:
                return 0
            return route.prompt_tokens(body, encoding)

        return jsonl.BatchDeployment(name, deployment.global_batch, deployment.model.name, count)

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)
        if updated & (NAMES | {"simulator_mode", "recording_dir"}) and self.config.mode != "record":
            folder = self.config.data_folder
            problem = unusable(folder)
            if problem:
                self.startup.refuse(f"SIMULATOR_DATA_DIR: cannot keep files and batches in {folder}: {problem}")

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or self.config.mode == "record":
            return None
        context = context_of(flow)
        if context is None or context.route is None:
            return None
        operation = context.route.operation
        if operation in FILE_OPERATIONS:
            return self._answer(flow, context)
        if operation in BATCH_OPERATIONS:
            return self._batch(flow, context)
        if operation in JOB_OPERATIONS:
            return self._jobs(flow, context)
        return None

    # --- the Batch API --------------------------------------------------------------------------

    async def _batch(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        store, request = self.services.data, flow.request
        if store is None:
            flow.response = _no_folder(self.config, request)
            return
        operation, batch_id = context.route.operation, context.params.get("batch_id", "")
        try:
            if operation == "batches":
                flow.response = await self._create(context, store)
            elif operation == "batches_list":
                after, limit = request.query.get("after") or None, _limit(request.query.get("limit"))
                found, more = await asyncio.to_thread(store.list_batches, after, limit)
                flow.response = wire.json_response(200, _list_body(found, more), request)
            elif operation == "batch":
                batch = await asyncio.to_thread(store.get_batch, batch_id)
                if batch is None:
                    raise _batch_not_found(batch_id)
                flow.response = wire.json_response(200, batch, request)
            elif operation == "batch_cancel":
                flow.response = wire.json_response(200, await asyncio.to_thread(_cancel, store, batch_id), request)
        except validation.Invalid as e:
            flow.response = wire.openai_error(e.status, e.message, param=e.param, code=e.code, request=request)
        except Full as e:
            flow.response = _full(e, request)

    async def _create(self, context: RequestContext, store: DataStore) -> http.Response:
        request = context.request
        try:
            body = wire.loads(request.content or b"")
        except ValueError as e:
            return wire.bad_json(request, str(e))
        asked = results.check_create(body)
        source = await asyncio.to_thread(store.get_file, asked.input_file_id)
        if source is None:
            raise validation.Invalid(
                f"File with id '{asked.input_file_id}' was not found.", "input_file_id", "fileNotFound", status=404
            )
        if source.purpose != "batch":
            raise validation.Invalid(
                f"The file '{asked.input_file_id}' has purpose '{source.purpose}'; a batch's input file needs purpose 'batch'.",
                "input_file_id",
                "invalid_request",
                status=400,
            )
        batch = results.new_batch(
            results.new_batch_id(),
            asked.input_file_id,
            asked.endpoint,
            asked.completion_window,
            asked.metadata,
            asked.output_expires_after,
            int(time.time()),
        )
        version = context.api_version if context.route.api_version == REQUIRED else ""
        await asyncio.to_thread(_add_batch, store, batch, version)
        logger.info("batch %s created: %s lines of %s", batch["id"], source.filename, asked.endpoint)
        return wire.json_response(200, batch, request)

    # --- /++/batches ------------------------------------------------------------------------

    async def _jobs(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        store, request = self.services.data, flow.request
        if store is None:
            flow.response = _no_folder(self.config, request)
            return
        if context.route.operation == "batch_jobs":
            jobs = await asyncio.to_thread(store.active_batches)
            counts = await asyncio.to_thread(store.count_by_status)
            flow.response = wire.json_response(200, {"jobs": jobs, "byStatus": counts}, request)
            return
        batch_id = context.params.get("batch_id", "")
        try:
            asked = wire.loads(request.content or b"{}")
            seconds = asked.get("seconds") if isinstance(asked, dict) else None
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_SKIP_S:
                raise ValueError
        except ValueError:
            flow.response = wire.azure_error(
                400, "BadRequest", f'body: expected {{"seconds": N}}, N from 0 to {MAX_SKIP_S:g}', request
            )
            return
        if not await asyncio.to_thread(store.fast_forward, batch_id, float(seconds)):
            flow.response = wire.azure_error(404, "NotFound", f"no batch {batch_id!r}", request)
            return
        batch = await asyncio.to_thread(store.get_batch, batch_id)
        flow.response = wire.json_response(
            200, {"batch": batch, "skippedSeconds": await asyncio.to_thread(store.skipped, batch_id)}, request
        )

    async def _answer(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        store = self.services.data
        request = flow.request
        if store is None:
            flow.response = wire.azure_error(
                503,
                "ServiceUnavailable",
                f"Files cannot be kept: the data folder {self.config.data_folder} cannot be used.",
                request,
            )
            return
        operation, file_id = context.route.operation, context.params.get("file_id", "")
        try:
            if operation == "files":
                flow.response = await self._upload(flow, context, store)
            elif operation == "files_list":
                query = files.list_query(
                    {k: request.query.get(k) or "" for k in ("purpose", "after", "limit", "order")}
                )
                found, more = await asyncio.to_thread(
                    store.list_files, query.purpose, query.after, query.limit, query.order
                )
                flow.response = wire.json_response(200, files.list_body(found, more), request)
            elif operation == "file":
                record = await asyncio.to_thread(store.get_file, file_id)
                if record is None:
                    raise files.not_found(file_id)
                flow.response = wire.json_response(200, record.to_json(), request)
            elif operation == "file_delete":
                if not await asyncio.to_thread(store.delete_file, file_id):
                    raise files.not_found(file_id)
                flow.response = wire.json_response(200, files.deleted_body(file_id), request)
            elif operation == "file_content":
                opened = await asyncio.to_thread(_open_content, store, file_id)
                if opened is None:
                    raise files.not_found(file_id)
                headers = wire.azure_headers(request, self.config.region, "application/octet-stream")
                file, size = opened
                if size <= WHOLE_CONTENT_BYTES:
                    with file:
                        flow.response = wire.plain_response(200, await asyncio.to_thread(file.read), headers)
                    return
                # A large file (a batch's results may be hundreds of MB) is sent from disk a
                # piece at a time, never held whole.
                headers["content-length"] = str(size)
                plan = StreamPlan(headers, [], source=FileChunks(file), keep_body=False)
                self.services.streams.route(plan)
                context.stream = plan
        except files.FileError as e:
            flow.response = _error(e, request)
        except Full as e:
            flow.response = _full(e, request)

    async def _upload(self, flow: http.HTTPFlow, context: RequestContext, store: DataStore) -> http.Response:
        request = flow.request
        content_type = request.headers.get("content-type", "")
        if forms.boundary_of(content_type) is None:
            return wire.openai_error(
                400,
                f"Invalid Content-Type header ({content_type[:100] or 'none'}), expected multipart/form-data.",
                request=request,
            )
        record = await asyncio.to_thread(_store_upload, store, request.content or b"", content_type)
        dated = context.route.api_version == REQUIRED  # the dated API answers 201 with where the file is
        if dated:
            location = f"{_endpoint(flow)}/openai/files/{record.id}"
            if context.api_version:
                location += f"?api-version={context.api_version}"
            return wire.json_response(201, record.to_json(), request, headers={"location": location})
        return wire.json_response(200, record.to_json(), request)


MAX_SKIP_S = 366 * 86_400.0


def _no_folder(config: SimulatorConfig, request: http.Request) -> http.Response:
    return wire.azure_error(
        503,
        "ServiceUnavailable",
        f"Files and batches cannot be kept: the data folder {config.data_folder} cannot be used.",
        request,
    )


def _batch_not_found(batch_id: str) -> validation.Invalid:
    return validation.Invalid(f"Batch with id '{batch_id}' was not found.", "batch_id", "batchNotFound", status=404)


def _limit(text: str | None) -> int:
    if not text:
        return LIST_DEFAULT
    try:
        limit = int(text)
    except ValueError:
        raise validation.Invalid(
            f"Invalid 'limit': expected an integer, got '{text[:50]}'.", "limit", "invalid_value"
        ) from None
    if not 1 <= limit <= LIST_MOST:
        raise validation.Invalid(
            f"Invalid 'limit': expected a value from 1 to {LIST_MOST}, got {limit}.", "limit", "invalid_value"
        )
    return limit


def _list_body(found: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": found,
        "first_id": found[0]["id"] if found else None,
        "last_id": found[-1]["id"] if found else None,
        "has_more": more,
    }


def _add_batch(store: DataStore, batch: dict[str, Any], version: str) -> None:
    store.add_batch(batch, "", 0)
    # How its lines are asked online: the dated path at this api-version, or the v1 path.
    store.save_batch(batch, {"api_version": version})


def _cancel(store: DataStore, batch_id: str) -> dict[str, Any]:
    """Cancel the job, whichever replica runs it (it sees the status at its next step)."""
    for _ in range(8):
        batch = store.get_batch(batch_id)
        if batch is None:
            raise _batch_not_found(batch_id)
        moved = results.cancel(batch, int(time.time()))
        if moved is batch or moved == batch:
            return batch
        if store.save_batch(moved, expect=str(batch["status"])):
            return moved
    raise validation.Invalid("The batch is changing; try again.", "batch_id", "conflict", status=409)


def _line_path(batch: dict[str, Any], endpoint: str, deployment: str, version: str) -> str:
    """The online path a line of `batch` is asked on, as the application would ask it: the
    dated path at the batch's api-version, or the v1 path (for a v1 batch, and for Responses
    lines of a version older than the Responses API's first, 2025-04-01-preview)."""
    named = jsonl.endpoint_of(endpoint) or "/chat/completions"
    dated, v1 = LINE_PATHS[named]
    if not version or (named == "/responses" and version[:10] < RESPONSES_SINCE):
        return v1
    return dated.format(deployment=deployment, version=version)


RESPONSES_SINCE = "2025-04-01"


def _store_upload(store: DataStore, body: bytes, content_type: str) -> FileRecord:
    """Parse the form, check it and keep the file (in a worker thread: a 200 MB body takes a while)."""
    try:
        form = forms.parse(body, content_type)
    except forms.NotAForm as e:
        raise files.FileError(400, f"Could not parse multipart form: {e}") from None
    upload = files.check_upload(form)
    created_at = int(store.clock())
    return store.add_file(upload.filename, upload.purpose, upload.data, upload.expires_at(created_at))


WHOLE_CONTENT_BYTES = 1024 * 1024  # file contents up to this are answered in one piece
CHUNK_BYTES = 256 * 1024


def _open_content(store: DataStore, file_id: str) -> tuple[BinaryIO, int] | None:
    """The file's contents, open, and their size; None when there is no such file."""
    record = store.get_file(file_id)
    if record is None:
        return None
    try:
        file = open(store.file_path(record.id), "rb")  # noqa: SIM115 (closed by whoever reads it)
    except OSError:
        return None  # deleted meanwhile, by another worker
    return file, os.fstat(file.fileno()).st_size


class FileChunks:
    """A file's contents as the stream server relays them: read a piece at a time in a worker
    thread, closed once sent (or when the client leaves)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await asyncio.to_thread(self.file.read, CHUNK_BYTES):
                yield chunk
        finally:
            self.file.close()

    async def aclose(self) -> None:
        self.file.close()
