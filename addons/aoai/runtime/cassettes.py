"""PUT /++/cassette: one file, a cassette, holds every recording the simulator reads and writes
in place of RECORDING_DIR's, switched between tests in milliseconds without a restart.

A switch saves the recordings still pending to the cassette they were recorded for, in a
worker thread (YAML takes time), then indexes the new cassette (a worker thread again) and
puts it in, on the event loop, in one step. Requests already under way finish with the
cassette they began with: one answered from it was answered already, and one forwarded
upstream is saved to the file chosen when it came. Switches wait for each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import wire
from .config import CASSETTE_MODES, Cassette, ConfigError, SimulatorConfig
from .recording import KeyRules, RecordingStore
from .recording.persistence import BrokenRecording

logger = logging.getLogger(__name__)

UPSTREAM_NEEDED = (
    "AZURE_OPENAI_ENDPOINT: a cassette in record mode {mode!r} forwards what it does not hold to Azure "
    "OpenAI; start the simulator with AZURE_OPENAI_ENDPOINT (and AZURE_OPENAI_KEY) set"
)


@dataclass(frozen=True)
class CassetteRequest:
    """A PUT /++/cassette body, checked: the cassette's absolute path (None: take it out) and
    its record mode."""

    path: Path | None
    record_mode: str


def read_request(content: bytes) -> CassetteRequest:
    """Check a PUT /++/cassette body; raises ConfigError naming the field."""
    try:
        body: Any = wire.loads(content or b"")
    except ValueError:
        raise ConfigError("body: not valid JSON") from None
    if not isinstance(body, dict):
        raise ConfigError('body: expected a JSON object such as {"path": "/abs/cassette.yaml", "mode": "none"}')
    unknown = sorted(set(body) - {"path", "mode"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown field; use path, mode")
    if "path" not in body:
        raise ConfigError("path: required, the cassette file's absolute path (null takes the cassette out)")
    record_mode = body.get("mode", "none")
    if record_mode not in CASSETTE_MODES:
        raise ConfigError(f"mode: expected one of {', '.join(CASSETTE_MODES)}")
    raw = body["path"]
    if raw is None:
        return CassetteRequest(None, record_mode)
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError("path: expected the cassette file's absolute path, or null")
    path = Path(raw.strip())
    if not path.is_absolute():
        raise ConfigError(f"path: expected an absolute path (the simulator's folder is not the tests'), got {raw!r}")
    if path.is_dir():
        raise ConfigError(f"path: {path} is a folder; expected a cassette file such as {path / 'test_name.yaml'}")
    return CassetteRequest(Path(os.path.normpath(path)), record_mode)


def _writable(folder: Path) -> str | None:
    """Why the cassette's folder (made if missing) cannot be written, or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return e.strerror or str(e)
    return None if os.access(folder, os.W_OK) else "permission denied"


class CassetteSwitch:
    """Puts cassettes in and takes them out: the store's file and the configuration's mode."""

    def __init__(self, config: SimulatorConfig, store: RecordingStore):
        self.config = config
        self.store = store
        self.lock = asyncio.Lock()

    def view(self, saved: int = 0) -> dict[str, Any]:
        """What PUT /++/cassette answers: the cassette in (path null: none) and how it serves."""
        cassette = self.config.cassette
        return {
            "path": str(cassette.path) if cassette is not None else None,
            "mode": cassette.record_mode if cassette is not None else None,
            "recording": self.config.mode == "record",
            "interactions": self.store.count,
            "simulatorMode": self.config.mode,
            "saved": saved,
        }

    async def put(self, wanted: CassetteRequest) -> dict[str, Any]:
        """Switch to the cassette asked for (or back to RECORDING_DIR); raises ConfigError
        with nothing changed when it cannot be used."""
        async with self.lock:
            cassette = None
            if wanted.path is not None:
                home = self.config.configured_mode
                cassette = Cassette.put_in(wanted.path, wanted.record_mode, home)
                self._check(cassette)
                self._use_rules()
            # The previous cassette's recordings, complete before the next one is read or in.
            saved = await asyncio.to_thread(self.store.save, self.store.take_pending())
            index = None
            if cassette is not None and cassette.answers:
                index = await asyncio.to_thread(self._read, cassette.path)
            if cassette is not None and not cassette.answers:
                await asyncio.to_thread(self._empty, cassette.path)
            self._switch(cassette, index)
            return self.view(saved)

    def _check(self, cassette: Cassette) -> None:
        config = self.config
        if cassette.recording and not config.azure_openai_endpoint and not config.recording.forwarders:
            raise ConfigError(UPSTREAM_NEEDED.format(mode=cassette.record_mode))
        if cassette.recording:
            problem = _writable(cassette.path.parent)
            if problem:
                raise ConfigError(f"path: cannot write the cassette in {cassette.path.parent}: {problem}")

    def _use_rules(self) -> None:
        """The recording settings the store matches by (in generate mode it never loaded them)."""
        recording = self.config.recording
        self.store.rules = KeyRules(recording.ignore_fields, recording.match_api_version)
        self.store.skip_broken = recording.skip_broken

    def _read(self, path: Path) -> Any:
        try:
            return self.store.read_cassette(path)
        except BrokenRecording as e:
            raise ConfigError(f"path: {e}") from None
        except OSError as e:
            raise ConfigError(f"path: cannot read {path}: {e.strerror or e}") from None

    @staticmethod
    def _empty(path: Path) -> None:
        """Record mode "all": the cassette's old content goes (the file, made again by the first
        recording, so a test that records nothing leaves none)."""
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise ConfigError(f"path: cannot write anew {path}: {e.strerror or e}") from None

    def _switch(self, cassette: Cassette | None, index: Any) -> None:
        """On the event loop, in one step: no request sees half a switch."""
        config = self.config
        if cassette is None:
            if config.cassette is not None:
                config.mode = config.cassette.home_mode
            config.cassette = None
            self.store.use_cassette(None)
            logger.info("cassette taken out: recordings in %s again (%s mode)", self.store.directory, config.mode)
            return
        config.cassette = cassette
        config.mode = cassette.mode
        self.store.use_cassette(cassette.path, index)
        logger.info(
            "cassette %s in (%s): %d interactions, %s",
            cassette.path,
            cassette.record_mode,
            self.store.count,
            "recording" if cassette.recording else "replaying",
        )
