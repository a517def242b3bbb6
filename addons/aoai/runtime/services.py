"""What the simulator keeps while it runs, apart from its configuration: the stores, counters,
servers and random generators the stages share.

`SimulatorConfig` holds values (what the options and the deployments file say); `Services`
holds the objects with state. Both are built once, where the stack is built
(`aoai.stack.build_addons`), and passed to each stage that needs them; the built-in generators
reach them through the request's context (`context.services`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ..batch.runner import Counts
from ..batch.store import DataStore
from ..openai import audio, sealed_reasoning
from .analyses import SharedResults
from .config import SimulatorConfig
from .fault_book import FaultBook
from .gates import Gates
from .labels import DeploymentLabels
from .limits import Limiter
from .media import ImageStore
from .peers import Link
from .prompt_cache import PromptCache
from .realtime_server import RealtimeServer
from .recording import RecordingStore
from .shared import Bag, Shared
from .stored import SHARED_TTL_S, ResponseStore
from .streams import StreamServer

logger = logging.getLogger(__name__)

_UNSEEDED = object()  # what `seeded_with` holds before the first configure


@dataclass
class Services:
    streams: StreamServer  # plays paced streams (and serves those that go through mitmproxy's layers)
    recordings: RecordingStore  # the recorded interactions, their index and the pending saves
    gates: Gates = field(default_factory=Gates)  # the queues in front of deployments with limited concurrency
    limiter: Limiter = field(default_factory=Limiter)  # rate-limit windows, 429 counters, retry hints
    responses: ResponseStore = field(default_factory=ResponseStore)  # stored Responses API responses
    prompt_cache: PromptCache = field(default_factory=PromptCache)  # prompt prefixes seen recently (cached_tokens)
    faults: FaultBook = field(default_factory=FaultBook)  # fault draws, quota cuts, counts, hanging requests
    labels: DeploymentLabels = field(default_factory=DeploymentLabels)  # undefined deployments' metric labels
    images: ImageStore = field(default_factory=ImageStore)  # images answered as URLs, served at /++/images/
    documents: SharedResults = field(default_factory=SharedResults)  # Document Intelligence analyses
    peers: Link = field(default_factory=Link)  # the pooled client other workers are reached with
    shared: Shared = field(default_factory=Shared)  # the Redis replicas share state through, when one is set
    # Latency draws, and answers of requests without a seed; seeded by SIMULATOR_SEED when set.
    rng: random.Random = field(default_factory=random.Random)
    seeded_with: object = field(default=_UNSEEDED, repr=False)
    reasoning_secret: str = ""  # what encrypted reasoning is sealed with, when replicas share a Redis
    # Uploaded files and batch jobs, in the data folder every worker shares (None: not opened, in
    # record mode, where Azure keeps them; or the folder cannot be used).
    data: DataStore | None = None
    batch_counts: Counts = field(default_factory=Counts)  # lines and tokens batch jobs answered here (metrics)
    realtime: RealtimeServer = field(default_factory=RealtimeServer)  # where realtime sessions run (loopback)
    codecs_loaded: asyncio.Future[None] | None = field(default=None, repr=False)  # audio.load_codecs, once running

    def __post_init__(self) -> None:
        # Shared copies go to the bags whenever a Redis is set (Shared.use); bounded as the stores.
        self.responses.share_through(
            Bag(self.shared, "responses", SHARED_TTL_S, self.responses.max_bytes),
            Bag(self.shared, "response-items", SHARED_TTL_S, self.responses.max_bytes),
        )
        self.shared.on_return(self.responses.catch_up)
        self.images.share_through(self.shared)
        self.documents.share_through(self.shared)
        self.prompt_cache.share_through(self.shared)
        self.limiter.hints.share_through(self.shared)

    @classmethod
    def build(cls, config: SimulatorConfig) -> Services:
        return cls(streams=StreamServer(), recordings=RecordingStore(config.recording.dir))

    async def start(self) -> None:
        """Once the simulator runs: the audio codecs load in a worker thread, before the first
        audio request needs them; with a Redis, every replica seals encrypted reasoning with
        one key kept there, so any replica reads what another sealed (on any machine)."""
        self.codecs_loaded = asyncio.get_running_loop().run_in_executor(None, audio.load_codecs)
        if not self.shared.enabled:
            return
        self.shared.on_return(self._agree_on_reasoning_key)
        await self._agree_on_reasoning_key()

    async def _agree_on_reasoning_key(self) -> None:
        """Offer this replica's key; take the one Redis holds (the first offered). While Redis
        is away a replica seals with its own, and agrees once it is back (what it sealed
        meanwhile still reads here)."""
        if not self.reasoning_secret:
            self.reasoning_secret = secrets.token_hex(32)
            sealed_reasoning.share_key(self.reasoning_secret)
        key, offered = self.shared.key("sealed-reasoning-key"), self.reasoning_secret

        async def one_key(client: Any) -> bytes | None:
            await client.set(key, offered, nx=True)
            found: bytes | None = await client.get(key)
            return found

        found = await self.shared.call("agreeing on the reasoning key", one_key, None)
        if found is not None and found.decode() != self.reasoning_secret:
            self.reasoning_secret = found.decode()
            sealed_reasoning.share_key(self.reasoning_secret)

    def batch_jobs_by_status(self) -> dict[str, int]:
        """Batch jobs kept in the data folder, by status ({} when it is not open)."""
        return self.data.count_by_status() if self.data is not None else {}

    def _open_data(self, config: SimulatorConfig) -> None:
        """Open the data folder (once; again when it moves); record mode leaves it closed until needed."""
        folder = config.data_folder
        if self.data is not None and self.data.folder == folder:
            self.data.max_bytes = config.data_max_bytes
            self.data.max_files, self.data.max_files_with_expiry = config.files_max_without_expiry, config.files_max
            return
        if config.mode == "record":
            return
        try:
            self.data = DataStore(folder, config.data_max_bytes, config.files_max_without_expiry, config.files_max)
        except (OSError, sqlite3.Error) as e:
            logger.error("SIMULATOR_DATA_DIR: cannot keep files and batches in %s: %s", folder, e)
            self.data = None

    def configure(self, config: SimulatorConfig) -> None:
        """Bound the stores as the settings say, and seed the random generator when the seed
        changed; the `Stores` addon calls this each time the settings change."""
        self.shared.use(config.redis_url)
        bounds = config.bounds
        self.responses.capacity = config.responses_stored
        self.responses.max_bytes = bounds.responses_stored_bytes
        self.responses.bounds_changed()
        self.prompt_cache.max_bytes = bounds.prompt_cache_bytes
        self.prompt_cache.idle_s = config.prompt_cache_idle_s
        self.labels.limit = bounds.metrics_deployment_labels
        self.images.max_bytes = bounds.images_stored_bytes
        self.documents.max_bytes = bounds.doc_intelligence_results_bytes
        self._open_data(config)
        if config.seed != self.seeded_with:
            self.seeded_with = config.seed
            self.rng.seed(f"latency:{config.seed}" if config.seed is not None else None)
