"""Batches: Azure OpenAI's Files API (and the data folder it keeps them in), in generate and
replay modes. Uploads, lists, retrievals, contents and deletions are answered from the data
folder the services hold (`Services.data`, aoai/batch/store.py), which every worker pointing at
the same folder shares and which outlives restarts. In record mode these requests are left to
the Record stage, which forwards them to Azure.

Every call to the store blocks (SQLite, disk), and a large upload is parsed and written in a
worker thread: nothing here runs on the event loop longer than a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from .. import wire
from ..batch import files
from ..batch.store import DataStore, FileRecord, Full
from ..openai import forms
from ..runtime.config import DATA_FOLDER_NAME, DEFAULT_DATA_MAX_BYTES, SimulatorConfig
from ..runtime.options import Option, check, declare, names
from ..runtime.routes import REQUIRED
from ..runtime.services import Services
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_of

logger = logging.getLogger(__name__)

FILE_OPERATIONS = frozenset({"files", "files_list", "file", "file_delete", "file_content"})

OPTIONS = (
    Option(
        "SIMULATOR_DATA_DIR",
        str,
        "",
        f"Folder where uploaded files and batch jobs are kept, shared by every worker and kept across "
        f"restarts; empty: a folder '{DATA_FOLDER_NAME}' beside RECORDING_DIR.",
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
    config.data_dir = options.simulator_data_dir.strip()
    config.data_max_bytes = options.simulator_data_max_bytes


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
    def __init__(self, config: SimulatorConfig, services: Services, startup: Startup | None = None):
        self.config = config
        self.services = services
        self.startup = startup or Startup()
        self.env_error: str | None = None

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
        if context is None or context.route is None or context.route.operation not in FILE_OPERATIONS:
            return None
        return self._answer(flow, context)

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
                content = await asyncio.to_thread(_content, store, file_id)
                if content is None:
                    raise files.not_found(file_id)
                headers = wire.azure_headers(request, self.config.region, "application/octet-stream")
                flow.response = wire.plain_response(200, content, headers)
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


def _store_upload(store: DataStore, body: bytes, content_type: str) -> FileRecord:
    """Parse the form, check it and keep the file (in a worker thread: a 200 MB body takes a while)."""
    try:
        form = forms.parse(body, content_type)
    except forms.NotAForm as e:
        raise files.FileError(400, f"Could not parse multipart form: {e}") from None
    upload = files.check_upload(form)
    created_at = int(store.clock())
    return store.add_file(upload.filename, upload.purpose, upload.data, upload.expires_at(created_at))


def _content(store: DataStore, file_id: str) -> bytes | None:
    record = store.get_file(file_id)
    if record is None:
        return None
    try:
        with open(store.file_path(record.id), "rb") as f:
            return f.read()
    except OSError:
        return None  # deleted meanwhile, by another worker
