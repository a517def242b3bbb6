"""Management: the simulator's own endpoints under /++/ (health, configuration, recordings,
rate limits, test tokens). Auth admits only the simulator's key to them (health, metrics and
image URLs are open).

A PATCH of /++/config is checked whole before anything is applied (`read_patch`), so a later
view can never fail on what it set. With workers, the worker a client reaches has every other
check the change first, then applies it and has them apply it; if one fails, those that took it
undo it, and the answer's `workers` says how each ended."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import inspect
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, Protocol

from mitmproxy import ctx, exceptions, http

from .. import wire
from ..runtime import config as cfg
from ..runtime import entra, offload, peers, routes
from ..runtime.config import ConfigError, SimulatorConfig
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
    """What a change replaced, to put back (a worker that failed to take it undoes the rest)."""

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
        "images": services.images.shared_usage(),
        "documentIntelligenceResults": services.documents.shared_usage(),
        "promptCache": services.prompt_cache.shared_usage(),
        "retryHints": services.limiter.hints.shared_usage(),
    }
    for name, usage in zip(shared, await asyncio.gather(*shared.values()), strict=True):
        stores[name]["shared"] = usage
    return stores


# Management actions every worker takes (scripts/workers.py runs several); a configuration
# change is coordinated apart (every worker checks it before any takes it).
PASSED_ON = frozenset({"save-recordings", "reset-limits"})
UNDO_KEPT = 16  # changes a worker can still undo when another worker failed to take them


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
        # mitmproxy listens before the stages' `running` hooks are done (the listener swap,
        # the stream server); until then health says "starting", so probes and tests wait.
        self.ready = False
        self.undo: OrderedDict[str, Snapshot] = OrderedDict()  # by change id, changes taken for another worker
        self.handlers = {
            ("health", "GET"): self.health,
            ("config", "GET"): self.get_config,
            ("config", "PATCH"): self.patch_config,
            ("save-recordings", "POST"): self.save_recordings,
            ("token", "POST"): self.token,
            ("limits", "GET"): self.limits,
            ("faults", "GET"): self.faults,
            ("reset-limits", "POST"): self.reset_limits,
            ("image_file", "GET"): self.image_file,
        }

    def running(self) -> None:
        self.ready = True  # the stages before this one in the chain have finished starting

    async def done(self) -> None:
        await self.services.peers.close()

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
        """Check the whole body, then apply it. With workers, the one a client reaches checks
        it, has every other check it, then applies it and has the others apply it; a worker
        that fails to take it has the others undo it (`_patch_everywhere`)."""
        request = flow.request
        step = request.headers.get(peers.CHANGE_HEADER, "") if self._from_peer(flow) else ""
        kind, _, change = step.partition(" ")
        if kind == "undo":
            return self._undo(change, request)
        if offload.heavy(request) or b"contentFilter" in (request.raw_content or b""):
            # A large change, or content-filter rules to compile (about 2 ms each), is read and
            # checked in a worker thread; it is applied here, on the event loop, as any other.
            return self._patch_read_off_loop(flow, kind, change)
        try:
            plan = read_patch(self.config, _content(request))
        except ConfigError as e:
            return wire.azure_error(400, "BadRequest", str(e), request)
        return self._patch_with(flow, plan, kind, change)

    async def _patch_read_off_loop(self, flow: http.HTTPFlow, kind: str, change: str):
        try:
            plan = await asyncio.to_thread(read_patch, self.config, _content(flow.request))
        except ConfigError as e:
            return wire.azure_error(400, "BadRequest", str(e), flow.request)
        answer = self._patch_with(flow, plan, kind, change)
        return await answer if inspect.isawaitable(answer) else answer

    def _patch_with(self, flow: http.HTTPFlow, plan: PatchPlan, kind: str, change: str):
        request = flow.request
        if kind == "check":
            return wire.json_response(200, {"valid": True}, request)
        if self.config.peers and not self._from_peer(flow):
            return self._patch_everywhere(flow, plan)
        try:
            snapshot = apply_plan(self.config, plan)
        except exceptions.OptionsError as e:
            return wire.azure_error(400, "BadRequest", str(e), request)
        if kind == "apply" and change:
            self.undo[change] = snapshot
            while len(self.undo) > UNDO_KEPT:
                self.undo.popitem(last=False)
        return self._applied(plan, request)

    def _applied(self, plan: PatchPlan, request: http.Request, workers: dict[str, str] | None = None):
        logger.info("configuration changed: %s", ", ".join(plan.fields))
        view = config_view(self.config)
        if workers is not None:
            view["workers"] = workers
        answer = view_response(200, view, request)
        if plan.reset and self.limits_stage is not None:
            return self._reset_then(answer)
        return answer

    def _undo(self, change: str, request: http.Request) -> http.Response:
        snapshot = self.undo.pop(change, None)
        if snapshot is None:
            return wire.azure_error(404, "NotFound", f"no change {change!r} to undo", request)
        left = restore(self.config, snapshot)
        if left:
            return wire.azure_error(409, "Conflict", f"undone but for the options: {left}", request)
        logger.warning("configuration change undone: another worker could not take it")
        return wire.json_response(200, {"undone": True}, request)

    async def _patch_everywhere(self, flow: http.HTTPFlow, plan: PatchPlan) -> http.Response:
        """Every worker takes the change or none does; the answer's `workers` says which."""
        request, this = flow.request, self.config.worker or "this"
        content = _content(request)
        checked = await peers.ask_all(self.services.peers, self.config, "PATCH", "/++/config", content, "check")
        refused = {peer: o for peer, o in checked.items() if o.status != 200}
        if refused:
            peer, outcome = next(iter(refused.items()))
            workers = {this: "not applied", **{p: _outcome_text(o, "not applied") for p, o in checked.items()}}
            if outcome.status == 400:
                return wire.azure_error(
                    400, "BadRequest", f"worker {peer}: {outcome.message}; no worker changed", request, workers=workers
                )
            return wire.azure_error(
                503,
                "ServiceUnavailable",
                f"worker {peer} could not check the change ({_outcome_text(outcome, '')}); no worker changed",
                request,
                workers=workers,
            )
        try:
            snapshot = apply_plan(self.config, plan)
        except exceptions.OptionsError as e:
            return wire.azure_error(400, "BadRequest", f"{e}; no worker changed", request)
        change = secrets.token_hex(8)
        applied = await peers.ask_all(
            self.services.peers, self.config, "PATCH", "/++/config", content, f"apply {change}"
        )
        failed = {peer: o for peer, o in applied.items() if o.status != 200}
        if not failed:
            answer = self._applied(plan, request, {this: "applied", **{peer: "applied" for peer in applied}})
            return await answer if inspect.isawaitable(answer) else answer
        # Someone could not take it: put back what the others took.
        left = restore(self.config, snapshot)
        took = tuple(
            peer for peer in self.config.peers if peers.address(peer) in applied and peers.address(peer) not in failed
        )
        undone = (
            await peers.ask_all(self.services.peers, self.config, "PATCH", "/++/config", b"", f"undo {change}", took)
            if took
            else {}
        )
        workers = {this: f"applied; could not be rolled back: {left}" if left else "rolled back"}
        for peer, outcome in applied.items():
            if peer in failed:
                workers[peer] = _outcome_text(outcome, "not applied")
            elif undone[peer].status == 200:
                workers[peer] = "rolled back"
            else:
                workers[peer] = "applied; could not be rolled back: " + _outcome_text(undone[peer], "")
        peer, outcome = next(iter(failed.items()))
        logger.warning("configuration change rolled back: worker %s did not take it", peer)
        status, code = (400, "BadRequest") if outcome.status == 400 else (503, "ServiceUnavailable")
        return wire.azure_error(
            status,
            code,
            f"worker {peer} did not take the change "
            f"({_outcome_text(outcome, '')}); it was rolled back where it was taken",
            request,
            workers=workers,
        )

    async def _reset_then(self, answer: http.Response) -> http.Response:
        await self.limits_stage.reset()
        return answer

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
        """Empty every rate-limit window, so a test starts from a full quota."""
        if self.limits_stage is not None:
            await self.limits_stage.reset()
        return wire.json_response(200, {"reset": True}, flow.request)

    async def save_recordings(self, flow: http.HTTPFlow) -> http.Response:
        # In a worker thread: 64 MiB of recordings waiting take seconds of YAML to write.
        saved = await asyncio.to_thread(self.recordings.save) if self.recordings is not None else 0
        return wire.json_response(200, {"saved": saved}, flow.request)

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


def _outcome_text(outcome: peers.Outcome, ok: str) -> str:
    """How one worker took a step, for the answer's `workers`."""
    if outcome.status is None:
        return f"unreachable: {outcome.message}"
    if outcome.status == 200:
        return ok or "200"
    return f"{outcome.status}: {outcome.message}" if outcome.message else str(outcome.status)


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
