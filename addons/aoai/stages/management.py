"""Management: the simulator's own endpoints under /++/ (health, configuration, recordings,
rate limits, test tokens). Auth admits only the simulator's key to them (health, metrics and
image URLs are open).

A PATCH of /++/config is checked whole before anything is applied (`read_patch`), so a later
view can never fail on what it set. With replicas sharing a Redis, the replica a client reaches
writes the whole configuration as the next shared version (runtime/config_sync.py), and the
others take it within a second; the answer's `replicas` says which have it already."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import inspect
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from mitmproxy import ctx, exceptions, http

from .. import wire
from ..runtime import config as cfg
from ..runtime import entra, offload, peers, routes
from ..runtime.cassettes import CassetteSwitch, read_request
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.config_sync import APPLIED, WRITE_TRIES, ConfigSync, Hooks
from ..runtime.faults import FaultProfile
from ..runtime.routes import MANAGEMENT
from ..runtime.services import Services
from ..runtime.state import context_of


class RateLimits(Protocol):
    """What the endpoints ask of the Limits stage (the stack passes it in): its view of the
    quotas and windows (an awaitable of it for shared windows), and emptying the windows."""

    def view(self) -> Any: ...

    async def reset(self) -> None: ...


logger = logging.getLogger(__name__)

_LATENCY_OPS = {"chatCompletions": "chat_completions", "completions": "completions", "embeddings": "embeddings"}


def config_view(config: SimulatorConfig) -> dict:
    latency: dict[str, Any] = {"enabled": config.latency_enabled}
    for key, op in _LATENCY_OPS.items():
        normal = config.latency_defaults.get(op)
        latency[key] = normal.to_json() if normal else None
    return {
        "mode": config.mode,
        "seed": config.seed,
        "allowUndefinedDeployments": config.allow_undefined_deployments,
        "latency": latency,
        "deployments": {name: d.to_json() for name, d in config.deployments.items()},
        "faults": config.default_faults.to_json() if config.default_faults is not None else None,
        "recording": {"dir": config.recording.dir, "autosave": config.recording.autosave},
        "entraTokens": {
            "mode": config.entra.mode,
            "audiences": list(config.entra.audiences),
            "tenants": sorted(config.entra.tenants),
            "principals": sorted(config.entra.principals),
        },
    }


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}: expected true or false")
    return value


@dataclasses.dataclass
class PatchPlan:
    """What a PATCH /++/config asks for, checked: option updates, deployments set or removed,
    and fault profiles (None: back to the default) by deployment name, "*" for the default."""

    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    deployments: dict[str, cfg.Deployment | None] = dataclasses.field(default_factory=dict)
    faults: dict[str, FaultProfile | None] = dataclasses.field(default_factory=dict)
    reset: bool = False  # resetLimits: empty the rate-limit windows once applied
    fields: tuple[str, ...] = ()  # the body's fields, for the log


def _profile(value: Any, where: str) -> FaultProfile | None:
    return None if value is None else cfg.faults_of(value, where)


def patch_plan(config: SimulatorConfig, patch: Any) -> PatchPlan:
    """Check a PATCH body; return the option updates, deployment and fault changes it asks for."""
    if not isinstance(patch, dict):
        raise ConfigError("body: expected a JSON object")
    plan = PatchPlan()
    options, deployments = plan.options, plan.deployments
    for key, value in patch.items():
        if key == "contentFilter":
            continue  # after the deployments, which it may name
        if key == "mode":
            if value not in cfg.MODES:
                raise ConfigError(f"mode: expected one of {', '.join(cfg.MODES)}")
            options["simulator_mode"] = value
        elif key == "seed":
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not SEED_LOW <= value <= SEED_HIGH
            ):
                raise ConfigError(f"seed: expected a whole number from {SEED_LOW} to {SEED_HIGH}, or null")
            options["simulator_seed"] = value
        elif key == "allowUndefinedDeployments":
            options["allow_undefined_openai_deployments"] = _bool(key, value)
        elif key == "latency":
            if not isinstance(value, dict):
                raise ConfigError("latency: expected an object")
            for lkey, lvalue in value.items():
                if lkey == "enabled":
                    options["simulator_latency"] = _bool("latency.enabled", lvalue)
                elif lkey in _LATENCY_OPS:
                    op = _LATENCY_OPS[lkey]
                    if lvalue is None:
                        options[f"latency_openai_{op}_mean"] = None
                        options[f"latency_openai_{op}_std_dev"] = 0.0
                        continue
                    normal = cfg._normal(f"latency.{lkey}", lvalue)
                    options[f"latency_openai_{op}_mean"] = str(normal.mean)
                    options[f"latency_openai_{op}_std_dev"] = float(normal.std_dev)
                else:
                    raise ConfigError(f"latency.{lkey}: unknown field; use enabled, {', '.join(_LATENCY_OPS)}")
        elif key == "deployments":
            if not isinstance(value, dict):
                raise ConfigError("deployments: expected an object of deployment name to settings (null removes)")
            for name, spec in value.items():
                _deployment_name(name)
                if isinstance(spec, dict) and set(spec) == {"faults"} and name in config.deployments:
                    # Only the faults of a deployment there is: the rest of it stays.
                    plan.faults[name] = _profile(spec["faults"], f"deployments.{name}.faults")
                    continue
                deployments[name] = None if spec is None else cfg.parse_deployment(name, spec, f"deployments.{name}")
        elif key == "faults":
            plan.faults[cfg.DEFAULTS_KEY] = _profile(value, "faults")
        else:
            raise ConfigError(
                f"{key}: unknown field; use mode, seed, allowUndefinedDeployments, latency, "
                "deployments, faults, contentFilter"
            )
    if "contentFilter" in patch:
        _content_filters(config, patch["contentFilter"], deployments)
    added = sum(1 for name, d in deployments.items() if d is not None and name not in config.deployments)
    removed = sum(1 for name, d in deployments.items() if d is None and name in config.deployments)
    if len(config.deployments) + added - removed > MAX_DEPLOYMENTS:
        raise ConfigError(f"deployments: at most {MAX_DEPLOYMENTS} deployments may be defined")
    if deployments:
        # A spillover deployment is checked against the deployments as they will be.
        after = {**config.deployments, **deployments}
        cfg.check_spillover({n: d for n, d in after.items() if d is not None}, "deployments")
    return plan


SEED_LOW, SEED_HIGH = -(2**63), 2**63 - 1  # a signed 64-bit integer, as SIMULATOR_SEED
MAX_DEPLOYMENTS = 1000  # every view, scrape and limits check walks them
MAX_NAME_CHARS = 256


def _deployment_name(name: str) -> None:
    # A name no request path could carry would only ever sit in the views.
    if not name or len(name) > MAX_NAME_CHARS or "/" in name or not name.isprintable():
        raise ConfigError(
            f"deployments: a deployment name is 1 to {MAX_NAME_CHARS} printable characters "
            f"without '/', got {cfg._shown(name)}"
        )


def read_patch(config: SimulatorConfig, content: bytes) -> PatchPlan:
    """A PATCH /++/config body, checked whole: nothing is applied yet. Raises ConfigError."""
    try:
        patch = wire.loads(content or b"")
    except ValueError:
        raise ConfigError("body: not valid JSON") from None
    if not isinstance(patch, dict):
        raise ConfigError("body: expected a JSON object")
    reset = patch.pop("resetLimits", False)
    if not isinstance(reset, bool):
        raise ConfigError("resetLimits: expected true or false")
    plan = patch_plan(config, patch)
    plan.reset, plan.fields = reset, tuple(patch)
    if (
        plan.options.get("simulator_mode") == "record"
        and not config.azure_openai_endpoint
        and not config.recording.forwarders
    ):
        # What the record stage refuses when the option changes, told before anything changes.
        raise ConfigError(
            "AZURE_OPENAI_ENDPOINT: record mode forwards to Azure OpenAI; set it to the "
            "resource's endpoint, such as https://NAME.openai.azure.com"
        )
    return plan


@dataclasses.dataclass
class Snapshot:
    """What a change replaced, to put back (a replica whose write met a newer shared version
    puts its change back before it takes that one)."""

    options: dict[str, Any]
    deployments: dict[str, cfg.Deployment]
    default_faults: FaultProfile | None


def apply_plan(config: SimulatorConfig, plan: PatchPlan) -> Snapshot:
    """Apply a checked plan; returns what it replaced. An option a stage refuses raises
    OptionsError with nothing changed (mitmproxy rolls the options back)."""
    snapshot = Snapshot(
        {name: getattr(ctx.options, name) for name in plan.options}, dict(config.deployments), config.default_faults
    )
    if plan.options:
        ctx.options.update(**plan.options)
    for name, deployment in plan.deployments.items():
        if deployment is None:
            config.deployments.pop(name, None)
        else:
            config.deployments[name] = deployment
    for name, profile in plan.faults.items():
        if name == cfg.DEFAULTS_KEY:
            config.default_faults = profile
        elif name in config.deployments:
            config.deployments[name] = dataclasses.replace(config.deployments[name], faults=profile)
    return snapshot


def restore(config: SimulatorConfig, snapshot: Snapshot) -> str:
    """Put back what a change replaced; "" when all of it is back, else what is not."""
    config.deployments.clear()
    config.deployments.update(snapshot.deployments)
    config.default_faults = snapshot.default_faults
    try:
        if snapshot.options:
            ctx.options.update(**snapshot.options)
    except exceptions.OptionsError as e:  # e.g. the mode it had cannot be taken again now
        logger.error("a configuration change could not be fully undone: %s", e)
        return str(e)
    return ""


def state_of(config: SimulatorConfig, starting: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What PATCH can change, as a PATCH body that sets all of it: what replicas share. A
    deployment of the starting configuration that was removed is `null`."""
    view = config_view(config)
    deployments: dict[str, Any] = {name: None for name in sorted(starting) if name not in config.deployments}
    deployments.update(view["deployments"])
    return {
        "mode": config.configured_mode,  # a cassette's mode is this replica's own
        "seed": view["seed"],
        "allowUndefinedDeployments": view["allowUndefinedDeployments"],
        "latency": view["latency"],
        "deployments": deployments,
        "faults": view["faults"],
    }


def state_plan(config: SimulatorConfig, state: dict[str, Any]) -> PatchPlan:
    """The plan that makes this configuration the shared `state`: deployments it does not hold
    are removed; what is the same already is left alone (with its fault draws). Raises ConfigError."""
    body = dict(state)
    given = body.get("deployments")
    given = given if isinstance(given, dict) else {}
    body["deployments"] = {**{name: None for name in config.deployments if name not in given}, **given}
    plan = read_patch(config, wire.dumps(body))
    for name, deployment in list(plan.deployments.items()):
        old = config.deployments.get(name)
        same = old is None if deployment is None else old is not None and old.to_json() == deployment.to_json()
        if same:
            del plan.deployments[name]
    default = plan.faults.get(cfg.DEFAULTS_KEY)
    if (default.to_json() if default else None) == (config.default_faults.to_json() if config.default_faults else None):
        plan.faults.pop(cfg.DEFAULTS_KEY, None)
    plan.options = {name: v for name, v in plan.options.items() if getattr(ctx.options, name) != v}
    return plan


def view_response(status: int, view: dict, request: http.Request | None) -> http.Response:
    """A management view as JSON. Every value is checked where it is set, so this never needs
    its fallback; if one is odd all the same, it is shown as text rather than failing the view."""
    try:
        return wire.json_response(status, view, request)
    except TypeError:  # orjson: an integer beyond 64 bits, a key that is not a string, an object
        logger.warning("a management view held a value JSON cannot carry; it is shown as text")
        return wire.json_response(status, _plain(view), request)


def _plain(value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and depth < 64:
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 64:
        return [_plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    return str(value)


def _content_filters(config: SimulatorConfig, value: Any, deployments: dict[str, cfg.Deployment | None]) -> None:
    """`contentFilter: {name: settings}`: replace a deployment's content filter, keeping the
    rest of it (null: back to the default policy, no rules)."""
    if not isinstance(value, dict):
        raise ConfigError("contentFilter: expected an object of deployment name to content-filter settings")
    for name, spec in value.items():
        base = deployments[name] if name in deployments else config.deployments.get(name)
        if base is None:
            raise ConfigError(f"contentFilter.{name}: no deployment called {name!r}; define it under deployments")
        policy = None if spec is None else cfg.parse_content_filter(spec, f"contentFilter.{name}")
        deployments[name] = dataclasses.replace(base, content_filter=policy)


def stores_view(services: Services) -> dict:
    """What each store that grows with clients' requests holds (count, bytes) and may hold,
    with the settings that bound it; for GET /++/limits."""

    def store(usage: dict, **settings: str) -> dict:
        return {**usage, "settings": settings} if settings else usage

    stores = {
        "responses": store(
            services.responses.usage(), maxCount="RESPONSES_STORED", maxBytes="RESPONSES_STORED_MAX_BYTES"
        ),
        "images": store(services.images.usage(), maxBytes="IMAGES_STORED_MAX_BYTES"),
        "documentIntelligenceResults": store(services.documents.usage(), maxBytes="DOC_INTELLIGENCE_RESULTS_MAX_BYTES"),
        "promptCache": store(services.prompt_cache.usage(), maxBytes="PROMPT_CACHE_MAX_BYTES"),
        "routeCache": routes.TABLE.usage(),  # a fixed bound: paths longer than maxPathChars are never kept
        "undefinedDeploymentLabels": store(services.labels.usage(), maxCount="METRICS_MAX_DEPLOYMENT_LABELS"),
        "retryHints": store(services.limiter.hints.usage(), maxBytes="RETRY_HINTS_MAX_BYTES"),
    }
    if services.data is not None:  # files and batch jobs in the data folder
        stores["dataFolder"] = store(services.data.usage(), maxBytes="SIMULATOR_DATA_MAX_BYTES")
    if services.recordings is not None:
        usage = services.recordings.usage()
        stores["pendingRecordings"] = store(usage["pending"], maxBytes="RECORDING_PENDING_MAX_BYTES")
        stores["recordingCache"] = store(usage["cache"], maxBytes="RECORDING_CACHE_MAX_BYTES")
    return stores


async def shared_stores_view(services: Services) -> dict:
    """`stores_view`, and for each store the replicas share through Redis what Redis holds of
    it (`shared`: count, bytes; null when Redis cannot say)."""
    stores = stores_view(services)
    shared = {
        "responses": services.responses.shared_usage(),
        "images": services.images.shared_usage(),
        "documentIntelligenceResults": services.documents.shared_usage(),
        "promptCache": services.prompt_cache.shared_usage(),
        "retryHints": services.limiter.hints.shared_usage(),
    }
    for name, usage in zip(shared, await asyncio.gather(*shared.values()), strict=True):
        stores[name]["shared"] = usage
    return stores


# Management actions every worker takes (scripts/workers.py runs several), passed on over HTTP;
# configuration changes and resets reach the others through Redis.
PASSED_ON = frozenset({"save-recordings"})
AWAY_NOTE = "Redis is away: the other replicas are not reached; the change is shared when it is back"


class Management:
    def __init__(
        self,
        config: SimulatorConfig,
        services: Services | None = None,
        limits: RateLimits | None = None,
    ):
        self.config = config
        self.services = services if services is not None else Services.build(config)
        self.streams = self.services.streams
        self.limits_stage = limits
        self.recordings = self.services.recordings
        self.cassettes = CassetteSwitch(config, self.recordings)
        # mitmproxy listens before the stages' `running` hooks are done (the listener swap,
        # the stream server); until then health says "starting", so probes and tests wait.
        self.ready = False
        self.starting: frozenset[str] = frozenset()  # the deployments before any change
        self.sync = ConfigSync(
            self.services.shared,
            self.replica,
            Hooks(
                state=lambda: state_of(self.config, self.starting),
                apply=self._take_state,
                reset=self.services.limiter.hints.clear,
                cut=self.services.faults.take_cut,
            ),
        )
        self.services.faults.on_cut = self.sync.cut_started
        self.handlers = {
            ("health", "GET"): self.health,
            ("config", "GET"): self.get_config,
            ("config", "PATCH"): self.patch_config,
            ("save-recordings", "POST"): self.save_recordings,
            ("cassette", "PUT"): self.put_cassette,
            ("token", "POST"): self.token,
            ("limits", "GET"): self.limits,
            ("faults", "GET"): self.faults,
            ("reset-limits", "POST"): self.reset_limits,
            ("image_file", "GET"): self.image_file,
        }

    def running(self) -> Awaitable[None] | None:
        self.starting = frozenset(self.config.deployments)
        if not self.sync.enabled:
            self.ready = True  # the stages before this one in the chain have finished starting
            return None
        return self._start_sharing()

    async def _start_sharing(self) -> None:
        """Take the configuration the other replicas share before health says healthy."""
        try:
            await self.sync.start()
        except Exception:  # never keeps the simulator from starting: it serves what it has
            logger.exception("the shared configuration could not be read; this replica starts with its own")
        self.ready = True

    async def done(self) -> None:
        await self.sync.stop()
        await self.services.peers.close()

    def replica(self) -> str:
        """This replica's name among the others: its worker address, else a random one."""
        return self.config.worker or self.services.shared.replica

    def _take_state(self, state: dict[str, Any]) -> str:
        """Apply the shared state another replica wrote; "" when taken, else why not."""
        try:
            plan = state_plan(self.config, state)
            apply_plan(self.config, plan)
        except (ConfigError, exceptions.OptionsError) as e:
            return str(e)
        return ""

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        context = context_of(flow)
        if flow.response or context is None or context.route is None or context.route.family != MANAGEMENT:
            return None
        handler = self.handlers.get((context.route.operation, flow.request.method))
        if handler is None:
            return None  # /++/metrics: the metrics stage answers it
        answer = handler(flow)
        if self.config.peers and context.route.operation in PASSED_ON and not self._from_peer(flow):
            return self._pass_on(flow, answer)
        if inspect.isawaitable(answer):  # a handler that waits (shared rate-limit windows, other workers)
            return self._answer_later(flow, answer)
        flow.response = answer
        return None

    def _from_peer(self, flow: http.HTTPFlow) -> bool:
        return peers.from_peer(flow.request.headers, self.config.peer_secret)

    @staticmethod
    async def _answer_later(flow: http.HTTPFlow, answer) -> None:
        flow.response = await answer

    async def _pass_on(self, flow: http.HTTPFlow, answer) -> None:
        """Done here, then by the other workers; the answer says how each took it."""
        if inspect.isawaitable(answer):
            answer = await answer
        if answer.status_code == 200:
            request = flow.request
            taken = await peers.pass_on(
                self.services.peers, self.config, request.method, request.path, request.content or b""
            )
            body = wire.loads(answer.content)
            body["workers"] = {self.config.worker or "this": 200, **taken}
            answer.content = wire.dumps(body)
        flow.response = answer

    def health(self, flow: http.HTTPFlow) -> http.Response:
        if not self.ready:
            return wire.json_response(503, {"status": "starting", "mode": self.config.mode}, flow.request)
        health: dict[str, Any] = {"status": "healthy", "mode": self.config.mode}
        if self.config.worker:
            health["worker"] = self.config.worker
            health["workers"] = len(self.config.peers) + 1
        if self.streams is not None:
            health["streams"] = {"active": self.streams.active, "pending": len(self.streams.plans)}
        shared = self.services.shared
        if shared.enabled:  # still healthy while Redis is away: each replica serves from memory
            health["replica"] = self.replica()
            health["sharedState"] = "up" if shared.up else "away"
        return wire.json_response(200, health, flow.request)

    def image_file(self, flow: http.HTTPFlow):
        """An image answered as a URL, until it expires (then 404, as an expired blob URL).
        One another replica made is read from the shared store (SIMULATOR_REDIS_URL)."""
        name = context_of(flow).params.get("image", "")
        images = self.services.images
        image = images.get(name)
        if image is None:
            if images.bag is not None and images.bag.enabled:
                return self._shared_image(flow, name)
            return wire.azure_error(404, "BlobNotFound", "The specified blob does not exist.", flow.request)
        return self._image(flow, image.data, image.content_type)

    async def _shared_image(self, flow: http.HTTPFlow, name: str) -> http.Response:
        image = await self.services.images.fetch(name)
        if image is None:
            return wire.azure_error(404, "BlobNotFound", "The specified blob does not exist.", flow.request)
        return self._image(flow, image.data, image.content_type)

    @staticmethod
    def _image(flow: http.HTTPFlow, data: bytes, content_type: str) -> http.Response:
        headers = wire.azure_headers(flow.request, "", content_type)
        headers.pop("x-ms-region")
        return wire.plain_response(200, data, headers)

    def get_config(self, flow: http.HTTPFlow) -> http.Response:
        return view_response(200, config_view(self.config), flow.request)

    # --- PATCH /++/config ---------------------------------------------------------------------

    def patch_config(self, flow: http.HTTPFlow):
        """Check the whole body, then apply it; with replicas, share it (`_patch_shared`)."""
        request = flow.request
        if offload.heavy(request) or b"contentFilter" in (request.raw_content or b""):
            # A large change, or content-filter rules to compile (about 2 ms each), is read and
            # checked in a worker thread; it is applied here, on the event loop, as any other.
            return self._patch_read_off_loop(flow)
        try:
            plan = read_patch(self.config, _content(request))
        except ConfigError as e:
            return wire.azure_error(400, "BadRequest", str(e), request)
        return self._patch_with(flow, plan)

    async def _patch_read_off_loop(self, flow: http.HTTPFlow):
        try:
            plan = await asyncio.to_thread(read_patch, self.config, _content(flow.request))
        except ConfigError as e:
            return wire.azure_error(400, "BadRequest", str(e), flow.request)
        answer = self._patch_with(flow, plan)
        return await answer if inspect.isawaitable(answer) else answer

    def _patch_with(self, flow: http.HTTPFlow, plan: PatchPlan):
        if self.sync.enabled:
            return self._patch_shared(flow, plan)
        try:
            apply_plan(self.config, plan)
        except exceptions.OptionsError as e:
            return wire.azure_error(400, "BadRequest", str(e), flow.request)
        return self._applied(plan, flow.request)

    async def _patch_shared(self, flow: http.HTTPFlow, plan: PatchPlan) -> http.Response:
        """Apply the change and write the whole configuration as the next shared version. If
        another replica wrote one first, take that, apply the change on top and try again."""
        request, sync = flow.request, self.sync
        async with sync.lock:
            for attempt in range(WRITE_TRIES):
                if attempt:  # checked again against the configuration as the others left it
                    try:
                        plan = read_patch(self.config, _content(request))
                    except ConfigError as e:
                        return wire.azure_error(400, "BadRequest", f"{e} (after another replica's change)", request)
                try:
                    snapshot = apply_plan(self.config, plan)
                except exceptions.OptionsError as e:
                    return wire.azure_error(400, "BadRequest", str(e), request)
                written = await sync.write(state_of(self.config, self.starting))
                if written.written:
                    break
                if written.away:
                    sync.unpublished = True
                    logger.warning("configuration changed here only: %s", AWAY_NOTE)
                    return await self._applied_shared(plan, request, {self.replica(): APPLIED}, AWAY_NOTE)
                restore(self.config, snapshot)
                sync.take(written.version, written.state)
            else:
                return wire.azure_error(
                    409,
                    "Conflict",
                    "the configuration kept changing on other replicas; nothing changed, try again",
                    request,
                )
        replicas = await sync.wait_for_version(written.version)
        return await self._applied_shared(plan, request, replicas)

    async def _applied_shared(
        self, plan: PatchPlan, request: http.Request, replicas: dict[str, str], note: str = ""
    ) -> http.Response:
        logger.info("configuration changed: %s", ", ".join(plan.fields))
        view = config_view(self.config)
        view["replicas"] = replicas
        if note:
            view["note"] = note
        if plan.reset:
            await self._reset_everywhere()
        return view_response(200, view, request)

    def _applied(self, plan: PatchPlan, request: http.Request):
        logger.info("configuration changed: %s", ", ".join(plan.fields))
        answer = view_response(200, config_view(self.config), request)
        if plan.reset and self.limits_stage is not None:
            return self._reset_then(answer)
        return answer

    async def _reset_then(self, answer: http.Response) -> http.Response:
        await self._reset_windows()
        return answer

    async def _reset_windows(self) -> str:
        """Empty the rate-limit windows (shared ones once, for every replica); "" when done,
        else what went wrong (the local state is emptied all the same)."""
        if self.limits_stage is None:
            self.services.limiter.hints.clear()
            return ""
        try:
            await self.limits_stage.reset()
        except Exception as e:  # Redis away: the shared windows stay as they are
            self.services.limiter.hints.clear()
            logger.error("the shared rate-limit windows could not be emptied: %s", e)
            return f"the shared rate-limit windows could not be emptied: {type(e).__name__}: {e}".rstrip(": ")
        return ""

    async def _reset_everywhere(self) -> tuple[dict[str, str], str]:
        """Empty the windows, and have every replica empty its own state; which replicas did,
        and a note when something could not be done."""
        note = await self._reset_windows()
        replicas = await self.sync.reset_everywhere()
        if replicas is None:
            return {self.replica(): APPLIED}, note or "Redis is away: the other replicas are not reached"
        return replicas, note

    def faults(self, flow: http.HTTPFlow) -> http.Response:
        """The fault profile in force per deployment and by default, quota cuts now, and the
        faults injected so far by deployment and kind."""
        config = self.config
        view = self.services.faults.view(config.deployments, config.default_faults, config.seed)
        return view_response(200, view, flow.request)

    def limits(self, flow: http.HTTPFlow) -> http.Response | Awaitable[http.Response]:
        """Quotas, what the windows hold, the 429 and early-retry counts, and what the stores
        hold against their bounds."""
        view = self.limits_stage.view() if self.limits_stage is not None else {}
        # Shared windows and stores: utilization and what the stores hold are read from Redis.
        if inspect.isawaitable(view) or self.services.shared.enabled:
            return self._limits_later(flow, view)
        view["stores"] = stores_view(self.services)
        return view_response(200, view, flow.request)

    async def _limits_later(self, flow: http.HTTPFlow, view) -> http.Response:
        if inspect.isawaitable(view):
            view = await view
        view["stores"] = (
            await shared_stores_view(self.services) if self.services.shared.enabled else stores_view(self.services)
        )
        return view_response(200, view, flow.request)

    async def reset_limits(self, flow: http.HTTPFlow) -> http.Response:
        """Empty every rate-limit window, so a test starts from a full quota; with replicas,
        each empties what it holds itself, and `replicas` says which did."""
        body: dict[str, Any] = {"reset": True}
        if self.sync.enabled:
            body["replicas"], note = await self._reset_everywhere()
        else:
            note = await self._reset_windows()
        if note:
            body["note"] = note
        return wire.json_response(200, body, flow.request)

    async def save_recordings(self, flow: http.HTTPFlow) -> http.Response:
        # In a worker thread: 64 MiB of recordings waiting take seconds of YAML to write.
        saved = await asyncio.to_thread(self.recordings.save) if self.recordings is not None else 0
        return wire.json_response(200, {"saved": saved}, flow.request)

    async def put_cassette(self, flow: http.HTTPFlow) -> http.Response:
        """Read and write every recording in one file from now on (runtime/cassettes.py)."""
        try:
            answer = await self.cassettes.put(read_request(_content(flow.request)))
        except ConfigError as e:
            return wire.azure_error(400, "BadRequest", str(e), flow.request)
        return wire.json_response(200, answer, flow.request)

    def token(self, flow: http.HTTPFlow) -> http.Response:
        """An Entra ID-shaped access token the simulator accepts in claims mode, for tests of
        keyless code paths. Body (all optional): oid, tid, appid, aud, expiresIn (seconds;
        negative for an expired token), claims (more claims). Only the API key may ask."""
        request = flow.request
        key = (
            request.headers.get("api-key")
            or request.headers.get("ocp-apim-subscription-key")
            or request.headers.get("authorization", "")[7:].strip()
        )
        if not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), self.config.api_key.encode()):
            return wire.azure_error(
                401, "401", "POST /++/token needs the simulator's API key (api-key header)", request
            )
        mode = self.config.entra.mode
        if mode != "claims":
            why = (
                (
                    "the simulator holds only the JWKS's public keys: sign tokens with the private key, e.g. "
                    "scripts/mint_token.py --key KEY.pem"
                )
                if mode == "signature"
                else "SIMULATOR_ENTRA_TOKENS is off, so no token would be accepted; set it to claims"
            )
            return wire.azure_error(409, "Conflict", f"no token minted: {why}", request)
        try:
            body = wire.loads(request.content) if request.content else {}
            claims = _token_request(body)
        except (ValueError, ConfigError) as e:
            return wire.azure_error(400, "BadRequest", str(e), request)
        token = entra.mint(claims)
        return wire.json_response(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": claims["exp"] - claims["iat"],
                "expires_on": claims["exp"],
            },
            request,
        )


def _content(request: http.Request) -> bytes:
    try:
        return request.content or b""
    except ValueError:  # a Content-Encoding its bytes are not in
        raise ConfigError("body: cannot be decoded as its Content-Encoding says") from None


_TOKEN_FIELDS = {"oid": "oid", "tid": "tenant", "appid": "appid", "aud": "audience"}
TOKEN_MAX_LIFETIME_S = 366 * 86_400  # expiresIn, either way: a year is more than any test waits
TOKEN_MAX_CLAIMS_BYTES = 16 * 1024  # a token travels in a header; more would not fit one
_LATEST_TIME = 2**53 - 1  # exp, nbf, iat: seconds since 1970 that every JSON reader holds exactly


def _token_request(body: Any) -> dict[str, Any]:
    """The claims a /++/token body asks for; raises ConfigError naming the field."""
    if not isinstance(body, dict):
        raise ConfigError("body: expected a JSON object")
    unknown = set(body) - set(_TOKEN_FIELDS) - {"expiresIn", "claims"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown field; use oid, tid, appid, aud, expiresIn, claims")
    kwargs: dict[str, Any] = {}
    for field, arg in _TOKEN_FIELDS.items():
        if field in body:
            kwargs[arg] = _claim_text(field, body[field])
    if "expiresIn" in body:
        kwargs["lifetime_s"] = _whole(
            body["expiresIn"],
            "expiresIn",
            -TOKEN_MAX_LIFETIME_S,
            TOKEN_MAX_LIFETIME_S,
            "a whole number of seconds (negative for an expired token)",
        )
    extra = body.get("claims", {})
    if not isinstance(extra, dict):
        raise ConfigError("claims: expected an object of claim names to values")
    try:
        size = len(wire.dumps(extra))
    except TypeError:  # nested deeper than a token's JSON is written
        raise ConfigError("claims: nested too deeply") from None
    if size > TOKEN_MAX_CLAIMS_BYTES:
        raise ConfigError(f"claims: at most {TOKEN_MAX_CLAIMS_BYTES} bytes of JSON (a token travels in a header)")
    for name, value in extra.items():
        if name in ("exp", "nbf", "iat"):
            extra[name] = _whole(value, f"claims.{name}", 0, _LATEST_TIME, "a whole number of seconds since 1970")
        elif name == "aud":
            audiences = value if isinstance(value, list) else [value]
            if not audiences:
                raise ConfigError("claims.aud: expected a string or a list of strings")
            for audience in audiences:
                _claim_text("claims.aud", audience)
        elif name in entra.IDENTITY_CLAIMS:
            _claim_text(f"claims.{name}", value)
    return entra.token_claims(extra=extra, **kwargs)


def _claim_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > entra.MAX_CLAIM_CHARS:
        raise ConfigError(f"{field}: expected a non-empty string of at most {entra.MAX_CLAIM_CHARS} characters")
    return value


def _whole(value: Any, field: str, low: int, high: int, what: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and (not value.is_integer()))
    ):
        raise ConfigError(f"{field}: expected {what}")
    if not low <= value <= high:
        raise ConfigError(f"{field}: expected {what} from {low} to {high}")
    return int(value)
