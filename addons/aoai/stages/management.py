"""Management: the simulator's own endpoints under /++/ (health, configuration, recordings,
rate limits, test tokens)."""

from __future__ import annotations

import dataclasses
import hmac
import inspect
import logging
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, exceptions, http

from .. import wire
from ..docintel import service as docintel
from ..runtime import config as cfg
from ..runtime import entra, media, peers, routes
from ..runtime.config import ConfigError, SimulatorConfig
from ..runtime.faults import FaultProfile
from ..runtime.recording import RecordingStore
from ..runtime.routes import MANAGEMENT
from ..runtime.state import context_of
from ..runtime.streams import StreamServer

if TYPE_CHECKING:
    from .ratelimit import Limits

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
        "faults": config.faults.default.to_json() if config.faults.default is not None else None,
        "recording": {"dir": config.recording.dir, "autosave": config.recording.autosave},
        "entraTokens": {"mode": config.entra.mode, "audiences": list(config.entra.audiences),
                        "tenants": sorted(config.entra.tenants), "principals": sorted(config.entra.principals)},
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
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError("seed: expected a whole number or null")
            options["simulator_seed"] = "" if value is None else str(value)
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
                        options[f"latency_openai_{op}_mean"] = options[f"latency_openai_{op}_std_dev"] = ""
                        continue
                    normal = cfg._normal(f"latency.{lkey}", lvalue)
                    options[f"latency_openai_{op}_mean"] = str(normal.mean)
                    options[f"latency_openai_{op}_std_dev"] = str(normal.std_dev)
                else:
                    raise ConfigError(f"latency.{lkey}: unknown field; use enabled, {', '.join(_LATENCY_OPS)}")
        elif key == "deployments":
            if not isinstance(value, dict):
                raise ConfigError("deployments: expected an object of deployment name to settings (null removes)")
            for name, spec in value.items():
                if isinstance(spec, dict) and set(spec) == {"faults"} and name in config.deployments:
                    # Only the faults of a deployment there is: the rest of it stays.
                    plan.faults[name] = _profile(spec["faults"], f"deployments.{name}.faults")
                    continue
                deployments[name] = None if spec is None else cfg.parse_deployment(name, spec, f"deployments.{name}")
        elif key == "faults":
            plan.faults[cfg.DEFAULTS_KEY] = _profile(value, "faults")
        else:
            raise ConfigError(f"{key}: unknown field; use mode, seed, allowUndefinedDeployments, latency, "
                              "deployments, faults, contentFilter")
    if "contentFilter" in patch:
        _content_filters(config, patch["contentFilter"], deployments)
    return plan


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


def stores_view(config: SimulatorConfig, recordings: RecordingStore | None, limits: Limits | None) -> dict:
    """What each store that grows with clients' requests holds (count, bytes) and may hold,
    with the settings that bound it; for GET /++/limits."""
    def store(usage: dict, **settings: str) -> dict:
        return {**usage, "settings": settings} if settings else usage

    stores = {
        "responses": store(config.stored_responses.usage(), maxCount="RESPONSES_STORED",
                           maxBytes="RESPONSES_STORED_MAX_BYTES"),
        "images": store(media.images.usage(), maxBytes="IMAGES_STORED_MAX_BYTES"),
        "documentIntelligenceResults": store(docintel.SERVICE.store.usage(),
                                             maxBytes="DOC_INTELLIGENCE_RESULTS_MAX_BYTES"),
        "promptCache": store(config.prompt_cache.usage(), maxBytes="PROMPT_CACHE_MAX_BYTES"),
        "routeCache": routes.TABLE.usage(),  # a fixed bound: paths longer than maxPathChars are never kept
        "undefinedDeploymentLabels": store(config.deployment_labels.usage(), maxCount="METRICS_MAX_DEPLOYMENT_LABELS"),
    }
    if limits is not None:
        stores["retryHints"] = store(limits.limiter.hints.usage(), maxBytes="RETRY_HINTS_MAX_BYTES")
    if recordings is not None:
        usage = recordings.usage()
        stores["pendingRecordings"] = store(usage["pending"], maxBytes="RECORDING_PENDING_MAX_BYTES")
        stores["recordingCache"] = store(usage["cache"], maxBytes="RECORDING_CACHE_MAX_BYTES")
    return stores


# Management changes every worker takes (scripts/workers.py runs several).
PASSED_ON = frozenset({"config", "save-recordings", "reset-limits"})


class Management:
    def __init__(self, config: SimulatorConfig, streams: StreamServer | None = None, limits: Limits | None = None,
                 recordings: RecordingStore | None = None):
        self.config = config
        self.streams = streams
        self.limits_stage = limits
        self.recordings = recordings
        # mitmproxy listens before the stages' `running` hooks are done (the listener swap,
        # the stream server); until then health says "starting", so probes and tests wait.
        self.ready = False
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

    def request(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if flow.response or context is None or context.route is None or context.route.family != MANAGEMENT:
            return
        handler = self.handlers.get((context.route.operation, flow.request.method))
        if handler is None:
            return  # /++/metrics: the metrics stage answers it
        answer = handler(flow)
        if self.config.peers and context.route.operation in PASSED_ON and flow.request.method != "GET" \
                and not peers.from_peer(flow.request.headers):
            return self._pass_on(flow, answer)
        if inspect.isawaitable(answer):  # a handler that waits (shared rate-limit windows)
            return self._answer_later(flow, answer)
        flow.response = answer

    @staticmethod
    async def _answer_later(flow: http.HTTPFlow, answer) -> None:
        flow.response = await answer

    async def _pass_on(self, flow: http.HTTPFlow, answer) -> None:
        """Done here, then by the other workers; the answer says how each took it."""
        if inspect.isawaitable(answer):
            answer = await answer
        if answer.status_code == 200:
            request = flow.request
            taken = await peers.pass_on(self.config.peers, request.method, request.path, request.content or b"",
                                        self.config.api_key, self.config.worker)
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
        With workers, the one that made it may be another: it is asked."""
        name = context_of(flow).params.get("image", "")
        image = media.images.get(name)
        if image is None:
            if self.config.peers and not peers.from_peer(flow.request.headers):
                return self._image_from_peers(flow)
            return wire.azure_error(404, "BlobNotFound", "The specified blob does not exist.", flow.request)
        return self._image(flow, image.data, image.content_type)

    async def _image_from_peers(self, flow: http.HTTPFlow) -> http.Response:
        found = await peers.relay(self.config.peers, "GET", flow.request.path, self.config.api_key)
        if found is None or found.status_code != 200:
            return wire.azure_error(404, "BlobNotFound", "The specified blob does not exist.", flow.request)
        return self._image(flow, found.content, found.headers.get("content-type", "application/octet-stream"))

    @staticmethod
    def _image(flow: http.HTTPFlow, data: bytes, content_type: str) -> http.Response:
        headers = wire.azure_headers(flow.request, "", content_type)
        headers.pop("x-ms-region")
        return wire.plain_response(200, data, headers)

    def get_config(self, flow: http.HTTPFlow) -> http.Response:
        return wire.json_response(200, config_view(self.config), flow.request)

    def patch_config(self, flow: http.HTTPFlow) -> http.Response:
        try:
            patch = wire.loads(flow.request.content or b"")
        except ValueError:
            return wire.azure_error(400, "BadRequest", "body: not valid JSON", flow.request)
        reset = patch.pop("resetLimits", False) if isinstance(patch, dict) else False
        if not isinstance(reset, bool):
            return wire.azure_error(400, "BadRequest", "resetLimits: expected true or false", flow.request)
        try:
            plan = patch_plan(self.config, patch)
            if plan.options:
                ctx.options.update(**plan.options)
        except (ConfigError, exceptions.OptionsError) as e:
            return wire.azure_error(400, "BadRequest", str(e), flow.request)
        for name, deployment in plan.deployments.items():
            if deployment is None:
                self.config.deployments.pop(name, None)
            else:
                self.config.deployments[name] = deployment
        for name, profile in plan.faults.items():
            if name == cfg.DEFAULTS_KEY:
                self.config.faults.default = profile
            else:
                self.config.deployments[name] = dataclasses.replace(self.config.deployments[name], faults=profile)
        logger.info("configuration changed: %s", ", ".join(patch))
        answer = wire.json_response(200, config_view(self.config), flow.request)
        if reset and self.limits_stage is not None:
            return self._reset_then(answer)
        return answer

    async def _reset_then(self, answer: http.Response) -> http.Response:
        await self.limits_stage.reset()
        return answer

    def faults(self, flow: http.HTTPFlow) -> http.Response:
        """The fault profile in force per deployment and by default, quota cuts now, and the
        faults injected so far by deployment and kind."""
        view = self.config.faults.view(self.config.deployments, self.config.seed)
        return wire.json_response(200, view, flow.request)

    def limits(self, flow: http.HTTPFlow) -> http.Response:
        """Quotas, what the windows hold, the 429 and early-retry counts, and what the stores
        hold against their bounds."""
        view = self.limits_stage.view() if self.limits_stage is not None else {}
        if inspect.isawaitable(view):  # shared windows: utilization is read from Redis
            return self._limits_later(flow, view)
        view["stores"] = stores_view(self.config, self.recordings, self.limits_stage)
        return wire.json_response(200, view, flow.request)

    async def _limits_later(self, flow: http.HTTPFlow, view) -> http.Response:
        view = await view
        view["stores"] = stores_view(self.config, self.recordings, self.limits_stage)
        return wire.json_response(200, view, flow.request)

    async def reset_limits(self, flow: http.HTTPFlow) -> http.Response:
        """Empty every rate-limit window, so a test starts from a full quota."""
        if self.limits_stage is not None:
            await self.limits_stage.reset()
        return wire.json_response(200, {"reset": True}, flow.request)

    def save_recordings(self, flow: http.HTTPFlow) -> http.Response:
        saved = self.recordings.save() if self.recordings is not None else 0
        return wire.json_response(200, {"saved": saved}, flow.request)

    def token(self, flow: http.HTTPFlow) -> http.Response:
        """An Entra ID-shaped access token the simulator accepts in claims mode, for tests of
        keyless code paths. Body (all optional): oid, tid, appid, aud, expiresIn (seconds;
        negative for an expired token), claims (more claims). Only the API key may ask."""
        request = flow.request
        key = request.headers.get("api-key") or request.headers.get("ocp-apim-subscription-key") or \
            request.headers.get("authorization", "")[7:].strip()
        if not hmac.compare_digest(key.encode(), self.config.api_key.encode()):
            return wire.azure_error(401, "401", "POST /++/token needs the simulator's API key (api-key header)",
                                    request)
        mode = self.config.entra.mode
        if mode != "claims":
            why = ("the simulator holds only the JWKS's public keys: sign tokens with the private key, e.g. "
                   "scripts/mint_token.py --key KEY.pem") if mode == "signature" else \
                "SIMULATOR_ENTRA_TOKENS is off, so no token would be accepted; set it to claims"
            return wire.azure_error(409, "Conflict", f"no token minted: {why}", request)
        try:
            body = wire.loads(request.content) if request.content else {}
            claims = _token_request(body)
        except (ValueError, ConfigError) as e:
            return wire.azure_error(400, "BadRequest", str(e), request)
        token = entra.mint(claims)
        return wire.json_response(200, {"access_token": token, "token_type": "Bearer",
                                        "expires_in": claims["exp"] - claims["iat"], "expires_on": claims["exp"]},
                                  request)


_TOKEN_FIELDS = {"oid": "oid", "tid": "tenant", "appid": "appid", "aud": "audience"}


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
            if not isinstance(body[field], str) or not body[field]:
                raise ConfigError(f"{field}: expected a non-empty string")
            kwargs[arg] = body[field]
    if "expiresIn" in body:
        value = body["expiresIn"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("expiresIn: expected a whole number of seconds")
        kwargs["lifetime_s"] = value
    extra = body.get("claims", {})
    if not isinstance(extra, dict):
        raise ConfigError("claims: expected an object of claim names to values")
    return entra.token_claims(extra=extra, **kwargs)
