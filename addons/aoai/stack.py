"""The simulator's stages, stacked in request order.

A request passes the stages below in this order, one module each in `aoai/stages/`; the
first stage to set a response ends the walk (later stages see `flow.response` and step
aside). Routing resolves the request against the route table (`aoai/runtime/routes.py`)
once, into a typed `RequestContext` that every later stage reads. Each stage's flow hooks
are guarded: an exception ends that request with Azure's 500 instead of sending it upstream.

mitmproxy sees one addon, a `Pipeline` (runtime/pipeline.py) holding the stages: for each
event it calls, in this order, just the stages (and extensions) that define that hook. Each
stage stays a class of its own with its own hooks, tested alone with mitmproxy's test context.

`build_addons` is all `addons/simulator.py` runs; tests build the same stack in-process. The
stages receive what they use as constructor arguments: the configuration (values) and the
services (what has state, runtime/services.py).
"""

from __future__ import annotations

from .generators import BUILT_IN
from .realtime import engine as realtime_engine
from .runtime.config import SimulatorConfig
from .runtime.failures import guard
from .runtime.lines import LineDriver
from .runtime.options import Option
from .runtime.pipeline import Pipeline, skip_message_type_checks
from .runtime.services import Services
from .runtime.startup import Startup
from .stages import auth, batches, extensions, flowcap, generate, intake, ratelimit, realtime, record, replay, settings
from .stages.auth import Auth
from .stages.batches import Batches
from .stages.checks import Checks
from .stages.contentfilter import ContentFilter
from .stages.extensions import Extensions
from .stages.faults import Faults, FaultTiming
from .stages.flowcap import FlowCap
from .stages.generate import Generate
from .stages.intake import Intake
from .stages.management import Management
from .stages.metrics import Metrics
from .stages.notfound import NotFound
from .stages.pacing import Pacing
from .stages.ratelimit import Limits
from .stages.realtime import Realtime
from .stages.reclaim import Reclaim
from .stages.record import ForwardTarget, Record
from .stages.replay import Replay
from .stages.routing import Routing
from .stages.settings import Settings
from .stages.streaming import Streaming


class Stores:
    """Bounds the services' stores as the settings say, each time they change (it comes after
    the stages that apply their settings to the configuration)."""

    def __init__(self, config: SimulatorConfig, services: Services):
        self.config = config
        self.services = services

    def configure(self, updated: set[str]) -> None:
        self.services.configure(self.config)

    async def running(self) -> None:
        await self.services.start()

    async def done(self) -> None:
        await self.services.shared.close()


def build_addons(config: SimulatorConfig, services: Services, startup: Startup | None = None) -> list[object]:
    """What mitmproxy registers: the stages of `build_stages` as one Pipeline."""
    skip_message_type_checks()
    return [Pipeline(build_stages(config, services, startup))]


def build_stages(config: SimulatorConfig, services: Services, startup: Startup | None = None) -> list[object]:
    """Every stage, in request order, each guarded (fail closed). `config` is what extensions
    receive in `initialize(config)`; `startup` decides what a bad setting at start-up does
    (stop the process, or raise for a test)."""
    startup = startup or Startup()
    streams, recordings, book = services.streams, services.recordings, services.faults
    # The built-in generators come first; an extension's initialize(config) may replace or remove them.
    config.generators[:0] = [g for g in BUILT_IN if g not in config.generators]
    limits = Limits(config, services.limiter, startup, book)
    forward_target = ForwardTarget(config, startup)
    replay = Replay(config, recordings, streams, startup, services.rng)
    generate = Generate(config, services, startup)
    # mitmproxy configures the stages in this order: the settings of those after the extensions
    # are copied into the config before extensions are initialized with it.
    extensions = Extensions(config, startup, settle=(forward_target.settle, replay.settle, generate.settle))
    routing, checks = Routing(config, services), Checks(services.labels, services.responses)
    content_filter, faults = ContentFilter(config), Faults(config, book, services.limiter.counters)
    # A batch job's lines meet the stages an online request meets, bar the client's connection,
    # the online quota, pacing and metrics (runtime/lines.py).
    lines = LineDriver((routing, checks, content_filter, faults, extensions, replay, generate), lambda: config.api_key)
    addons: list[object] = [
        Settings(config, startup),  # options and environment -> config; the listener
        routing,  # the request's route (operation, path parameters) -> its RequestContext
        Auth(config, startup),  # api-key / Ocp-Apim-Subscription-Key / Bearer, or 401 (open routes: none needed)
        Intake(config, startup=startup),  # bodies, heads and their time bounded before they are read: 413, 431, 408
        checks,  # what Azure refuses first: 405, api-version, body, deployment, …
        limits,  # Azure's quotas, before anything answers or forwards: 429, or quota headers (a quota cut lowers them)
        content_filter,  # prompts the deployment's content filter blocks: Azure's 400 (not in record mode)
        faults,  # declared faults that answer an admitted request: 500, 503, timeouts, hangs, too long
        extensions,  # EXTENSION_PATH: user addons run here; initialize(config) shapes the rest
        forward_target,  # record mode needs AZURE_OPENAI_ENDPOINT or an extension's forwarder
        # Admitted realtime handshakes: to the loopback session server (record mode: on to Azure).
        Realtime(
            config,
            services.realtime,
            realtime_engine.session,
            startup,
            replay.realtime_sessions,
            limits.session_quota,
            book,
        ),
        replay,  # record and replay modes: answer what is recorded
        Record(config, recordings, streams),  # record mode: forward the rest to Azure and save it
        Batches(
            config, services, startup, lines
        ),  # generate and replay modes: files and batch jobs, from the data folder
        generate,  # generate mode: made-up answers, on time
        FaultTiming(config, book),  # declared faults that reshape an answer: slow first byte, trickle, stream cut
        Streaming(streams, lambda: extensions.sees_streams),  # plays paced streams token by token
        Pacing(),  # holds other answers until due, after every hook that may change them
        Management(config, services, limits),  # /++/health, /++/config, /++/limits, /++/reset-limits, …
        Metrics(
            config,
            streams,
            services.limiter,
            book,
            services.peers,
            shared=services.shared,
            batch_counts=services.batch_counts,
            batch_jobs=services.batch_jobs_by_status,
            realtime=services.realtime,
        ),  # /++/metrics; counts and times every flow
        NotFound(config),  # nothing answered: 404, so generate and replay never go upstream
        FlowCap(config, startup),  # under mitmweb: keep only the newest flows in memory (by count and bytes)
        Reclaim(),  # the memory of large requests goes back to the system soon after they end
        # Last, so every stage has applied its settings to the config first (no request hooks).
        Stores(config, services),  # the stores bounded as the settings say; the random generator seeded
    ]
    for stage in addons:
        guard(stage)
    return addons


def declared_options() -> tuple[Option, ...]:
    """Every setting the stages declare: the environment variables the simulator reads."""
    owners = (settings, auth, intake, ratelimit, extensions, record, replay, realtime, batches, generate, flowcap)
    return tuple(option for owner in owners for option in owner.OPTIONS)
