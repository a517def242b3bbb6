"""Replay: answer from the recordings, at their recorded pace; never open an upstream
connection. In record mode it answers what is already recorded, and the recording stage
forwards the rest."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import tempfile
import uuid
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from .. import wire
from ..openai.catalogue import MEDIA_KINDS
from ..runtime import latency, offload
from ..runtime.config import ConfigError, RecordingConfig, SimulatorConfig
from ..runtime.options import Option, check, declare, names
from ..runtime.realtime_server import BETA, GA, SessionFactory
from ..runtime.recording import (
    BrokenRecording,
    Interaction,
    KeyRules,
    RecordingStore,
    Ref,
    request_key,
    sse_bytes,
)
from ..runtime.recording.sessions import file_name
from ..runtime.recording.sessions_replay import replayer
from ..runtime.routes import MANAGEMENT
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_for, context_of
from ..runtime.streams import StreamPlan, StreamServer, carries_tokens

logger = logging.getLogger(__name__)

TIMINGS = ("recorded", "model", "none")


def unwritable(directory: Path) -> str | None:
    """Why recordings cannot be written to `directory` (made if missing), or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def _from_data_folder(context: RequestContext) -> bool:
    return context.route is not None and context.route.from_data_folder


def key_of(flow: http.HTTPFlow, store: RecordingStore) -> str:
    request, context = flow.request, context_of(flow)
    # The checks read an upload's form already: used when it was read from these very bytes
    # (not when they were encoded, or an extension replaced them since).
    form = (
        context.form
        if context is not None and context.form is not None and context.form.body is request.raw_content
        else None
    )
    return request_key(
        request.method,
        store.canonical_path(request.method, request.path),
        list(request.query.items(multi=True)),
        request.raw_content or b"",
        request.headers.get("content-type", ""),
        store.rules,
        form,
    )


def replay_headers(interaction: Interaction, flow: http.HTTPFlow) -> dict[str, str]:
    request = flow.request
    headers = dict(interaction.response_headers)
    # Fresh request ids, as every Azure answer has its own.
    request_id = str(uuid.uuid4())
    for name in ("apim-request-id", "x-request-id"):
        if name in headers:
            headers[name] = request_id
    client_id = request.headers.get("x-ms-client-request-id")
    if client_id:
        headers["x-ms-client-request-id"] = client_id
    # An async operation's poll URL must lead back here, whatever address served the recording.
    location = headers.get("operation-location")
    if location and "://" in location:
        rest = location.split("://", 1)[1]
        scheme = "https" if flow.client_conn.tls_established else "http"
        headers["operation-location"] = f"{scheme}://{request.host_header}/{rest.partition('/')[2]}"
    return headers


def stream_plan(
    interaction: Interaction,
    headers: dict[str, str],
    timing: str,
    context: RequestContext | None,
    rng: random.Random | None = None,
) -> StreamPlan:
    events = interaction.events or []
    if timing == "model" and context is not None and context.deployment is not None:
        content = [i for i, e in enumerate(events) if carries_tokens(e.data)]
        offsets = latency.token_offsets(
            latency.profile(context.deployment, context.operation, context.config),
            max(1, len(content)),
            rng or random.Random(),
        )
        due, step = [], 0
        for i, _ in enumerate(events):
            due.append(offsets[min(step, len(offsets) - 1)] if i >= (content[0] if content else 0) else 0.0)
            if i in content:
                step += 1
        frames = [(d, sse_bytes(e.data)) for d, e in zip(due, events, strict=False)]
    else:
        scale = 0.0 if timing == "none" else 1.0
        frames = [(e.at_ms / 1000 * scale, sse_bytes(e.data)) for e in events]
    labels = {}
    if context is not None and context.deployment is not None:
        labels = {"deployment": context.deployment.label, "operation": context.route.operation}
    return StreamPlan(
        headers, frames, status=interaction.status, token_frames=[carries_tokens(e.data) for e in events], labels=labels
    )


def miss_response(flow: http.HTTPFlow, store: RecordingStore, key: str, status: int) -> http.Response:
    request = flow.request
    path = request.path.partition("?")[0]
    file = store.directory / store.file_for(request.method, path)
    closest = store.closest(request.method, path, request.raw_content or b"")
    message = f"No recording matches {request.method} {path} (key {key})."
    details: dict = {"key": key, "file": str(file)}
    if closest is not None:
        other, fields = closest
        other_key = other.key(store.rules, store.table)
        differs = ", ".join(fields) if fields else "the path or query"
        message += f" The closest recorded request is {other_key}; it differs in: {differs}."
        details["closest"] = {"key": other_key, "differs": fields}
    else:
        message += " Nothing like it is recorded."
    logger.warning("replay miss: %s %.200s would be recorded in %s", request.method, path, file)
    return wire.azure_error(status, "RecordingNotFound", message, request, **details)


def _suffix(text: str) -> str:
    return text.strip().replace("{hostname}", socket.gethostname())


def _check_suffix(suffix: str) -> None:
    if _suffix(suffix) and not re.fullmatch(r"[A-Za-z0-9._-]+", _suffix(suffix)):
        raise ConfigError(f"RECORDING_FILE_SUFFIX: letters, digits, '.', '_' and '-' only, got {_suffix(suffix)!r}")


def _miss_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ConfigError(f"REPLAY_MISS_STATUS: expected an HTTP error status (400-599), got {status}")


DEFAULTS = RecordingConfig()  # each option's default is the configuration's, written once there

OPTIONS = (
    Option("RECORDING_DIR", str, DEFAULTS.dir, "Folder of the recording files."),
    Option("RECORDING_AUTOSAVE", bool, DEFAULTS.autosave, "Save each recorded interaction as it completes."),
    Option(
        "RECORDING_IGNORE_FIELDS",
        Sequence[str],
        [],
        "Body fields that do not tell recordings apart (comma-separated in the environment).",
    ),
    Option(
        "RECORDING_MATCH_API_VERSION", bool, DEFAULTS.match_api_version, "Tell recordings apart by api-version too."
    ),
    Option(
        "RECORDING_SKIP_BROKEN",
        bool,
        DEFAULTS.skip_broken,
        "Skip recorded interactions that do not parse, with a warning, instead of refusing to start.",
    ),
    Option(
        "RECORDING_FILE_SUFFIX",
        str,
        "",
        "Added to recording file names ({hostname} is this machine's name), so replicas recording "
        "to one shared folder never write the same file.",
        check=_check_suffix,
    ),
    Option(
        "REPLAY_TIMING",
        str,
        DEFAULTS.replay_timing,
        "Replay pace: recorded (as recorded), model (the latency model) or none.",
        choices=("recorded", "model", "none"),
        parse=lambda t: t.strip().lower(),
    ),
    Option(
        "REPLAY_MISS_STATUS",
        int,
        DEFAULTS.miss_status,
        "HTTP status of the answer to a request with no recording.",
        check=_miss_status,
    ),
)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the recording settings and copy them into `config.recording`; raises ConfigError."""
    check(options, OPTIONS, updated)
    recording = config.recording
    recording.dir = options.recording_dir
    recording.autosave = options.recording_autosave
    recording.ignore_fields = tuple(f.strip() for f in options.recording_ignore_fields if f.strip())
    recording.match_api_version = options.recording_match_api_version
    recording.file_suffix = _suffix(options.recording_file_suffix)
    recording.skip_broken = options.recording_skip_broken
    recording.replay_timing = options.replay_timing
    recording.miss_status = options.replay_miss_status


_RECORDING_OPTIONS = {
    "simulator_mode",
    "recording_dir",
    "recording_ignore_fields",
    "recording_match_api_version",
    "recording_file_suffix",
    "recording_skip_broken",
}


class Replay:
    def __init__(
        self,
        config: SimulatorConfig,
        store: RecordingStore,
        streams: StreamServer,
        startup: Startup | None = None,
        rng: random.Random | None = None,
    ):
        self.config = config
        self.store = store
        self.streams = streams
        self.startup = startup or Startup()
        self.rng = rng or random.Random()  # latency draws when replay_timing is "model"
        self.loaded: tuple | None = None
        self.env_error: str | None = None

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def settle(self) -> None:
        """Copy these settings into the config now (for extensions, configured before this stage)."""
        apply(ctx.options, self.config, set(NAMES))

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)
        if not updated & _RECORDING_OPTIONS or self.config.configured_mode == "generate":
            return
        recording = self.config.recording
        self.store.file_suffix, self.store.skip_broken = recording.file_suffix, recording.skip_broken
        if self.config.configured_mode == "record":
            problem = unwritable(Path(recording.dir))
            if problem:
                self.startup.refuse(f"RECORDING_DIR: cannot record to {recording.dir}: {problem}")
                return
        wanted = (recording.dir, KeyRules(recording.ignore_fields, recording.match_api_version), recording.skip_broken)
        if wanted == self.loaded:
            return
        self.store.directory, self.store.rules = Path(wanted[0]), wanted[1]
        try:
            count = self.store.load()
        except BrokenRecording as e:
            self.startup.refuse(f"RECORDING_DIR: {e}")
            return
        except OSError as e:
            self.startup.refuse(f"RECORDING_DIR: cannot read {e.filename or recording.dir}: {e.strerror or e}")
            return
        self.loaded = wanted
        logger.info("%d recorded interactions in %s", count, recording.dir)
        self._load_sessions(recording)

    def _load_sessions(self, recording: RecordingConfig) -> None:
        sessions = self.store.sessions
        sessions.directory, sessions.file_suffix = Path(recording.dir), recording.file_suffix
        sessions.cache_max_bytes = self.config.bounds.recording_cache_bytes
        try:
            count = sessions.load()
        except OSError as e:
            self.startup.refuse(f"RECORDING_DIR: cannot read {e.filename or recording.dir}: {e.strerror or e}")
            return
        if count:
            logger.info("%d recorded realtime sessions in %s", count, recording.dir)

    def realtime_sessions(self, flow: http.HTTPFlow, context: RequestContext) -> SessionFactory | None:
        """Replay mode: the sessions of an admitted realtime handshake, played from its
        deployment's recordings; with none, the handshake gets the miss answer (None)."""
        flavour = BETA if context.route.operation == "realtime" else GA
        name = context.deployment.name
        sessions = self.store.sessions
        refs = sessions.refs(name, flavour)
        if refs:
            recording = self.config.recording
            return replayer(sessions, refs, recording.replay_timing, self.store.rules.ignore_fields, self.rng)
        file = sessions.directory / file_name(name, sessions.file_suffix)
        message = f"No realtime session of {name} is recorded ({'preview' if flavour == BETA else 'GA'} events)."
        other = [f for d, f in sessions.index if d == name]
        if other:
            message += f" Its sessions were recorded with {'preview' if other[0] == BETA else 'GA'} events."
        logger.warning("replay miss: a realtime session of %s would be recorded in %s", name, file)
        flow.response = wire.azure_error(
            self.config.recording.miss_status, "RecordingNotFound", message, flow.request, file=str(file)
        )
        return None

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        mode, context = self.config.mode, context_of(flow)
        if (
            flow.response
            or mode == "generate"
            or context is None
            or context.stream is not None
            or context.websocket is not None
            or (context.route is not None and context.route.family == MANAGEMENT)
            # Files and batches recording forwards each time (a job's polls must reach Azure);
            # replaying answers what was recorded of them, else the data folder does.
            or (mode == "record" and _from_data_folder(context))
            # A cassette being written anew ("all") answers nothing from what it holds.
            or (self.config.cassette is not None and not self.config.cassette.answers)
        ):
            return None
        if offload.heavy(flow.request):
            return self._answer_in_thread(flow, context)
        ref = self._look_up(flow, context)
        if ref is None:
            return None
        if ref.length > offload.OFF_LOOP_BYTES and not self.store.parsed(ref):
            return self._read_in_thread(flow, ref)
        self._answer(flow, self.store.get(ref))
        return None

    async def _answer_in_thread(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        # A large body's key (its JSON sorted, or its form's files hashed) takes milliseconds.
        interaction = await asyncio.to_thread(self._find, flow, context)
        if interaction is not None:
            self._answer(flow, interaction)

    async def _read_in_thread(self, flow: http.HTTPFlow, ref: Ref) -> None:
        # So does parsing a large recording's YAML.
        self._answer(flow, await asyncio.to_thread(self.store.get, ref))

    def _find(self, flow: http.HTTPFlow, context: RequestContext) -> Interaction | None:
        ref = self._look_up(flow, context)
        return None if ref is None else self.store.get(ref)

    def _look_up(self, flow: http.HTTPFlow, context: RequestContext) -> Ref | None:
        """Where the recording that answers the request is, if one does (a miss in replay mode
        gets its 404 here)."""
        key = context.recording_key = key_of(flow, self.store)
        if context.passed_through:
            # A bearer nothing here vouches for reads no recording: Azure answers it, and an
            # exchange already recorded is not saved again.
            if self.store.index.get(key):
                context.recording = False
            return None
        ref = self.store.next_ref(key)
        if ref is None and self.config.mode == "replay" and not _from_data_folder(context):
            flow.response = miss_response(flow, self.store, key, self.config.recording.miss_status)
        return ref

    def _answer(self, flow: http.HTTPFlow, interaction: Interaction) -> None:
        timing = self.config.recording.replay_timing if self.config.latency_enabled else "none"
        headers = replay_headers(interaction, flow)
        context = context_for(flow, self.config)
        if interaction.events is not None and timing != "none":
            plan = stream_plan(interaction, headers, timing, context, self.rng)
            plan.arrived_ago = latency.since_arrival(context)
            self.streams.route(plan)
            context.stream = plan
            return
        if interaction.events is not None:
            body = b"".join(sse_bytes(e.data) for e in interaction.events)
        else:
            body = interaction.response_body
        wait = 0.0
        if timing == "recorded":
            wait = interaction.duration_ms / 1000
        elif (
            timing == "model"
            and context is not None
            and context.deployment is not None
            and context.route.model_kind in MEDIA_KINDS
        ):
            wait = latency.media_seconds(
                context.deployment,
                context.operation,
                context.config,
                getattr(context.checked, "duration", 0.0),
                self.rng,
            )
        elif timing == "model" and context is not None and context.deployment is not None:
            steps = int(context.completion_tokens or _completion_tokens(interaction) or 1)
            wait = latency.generation_seconds(
                latency.profile(context.deployment, context.operation, context.config), steps, self.rng
            )
        if wait > 0:
            latency.hold(context, wait)  # the Pacing stage sends it when due
        flow.response = http.Response.make(interaction.status, body, headers)


def _completion_tokens(interaction: Interaction) -> int:
    try:
        return int(wire.loads(interaction.response_body)["usage"]["completion_tokens"])
    except (ValueError, KeyError, TypeError):
        return 0
