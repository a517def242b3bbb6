"""Auth: every request but those to open routes (health, metrics) must carry the simulator's key,
a bearer string an extension registered, or (SIMULATOR_ENTRA_TOKENS) an Entra ID token.

The management endpoints take less: the simulator's key only, or in signature mode the token of
a principal SIMULATOR_ENTRA_PRINCIPALS names. In record mode without AZURE_OPENAI_KEY a bearer
the simulator cannot vouch for is passed to Azure, which judges it; such a request is never
answered from the recordings (the replay stage reads `passed_through`)."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http

from .. import wire
from ..runtime import entra, intake, redaction
from ..runtime.config import SimulatorConfig
from ..runtime.entra_policy import entra_mode, entra_policy
from ..runtime.options import Option, declare, names
from ..runtime.options import check as check_options
from ..runtime.routes import MANAGEMENT, TABLE, Route
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_of

logger = logging.getLogger(__name__)

INVALID_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource."
)
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making "
    "requests to an API."
)
INVALID_TOKEN = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)


MANAGEMENT_ONLY = (
    "The simulator's management endpoints take only its API key (api-key, "
    "Ocp-Apim-Subscription-Key or Authorization: Bearer), or in signature mode an Entra ID token "
    "of a principal SIMULATOR_ENTRA_PRINCIPALS names."
)


def _same(given: str, expected: str) -> bool:
    # surrogateescape: a header's undecodable bytes come back as themselves, and simply differ.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


@dataclass(frozen=True)
class Admission:
    """What auth made of a request: its refusal, or None and whether its bearer was passed
    through to Azure unchecked (record mode without AZURE_OPENAI_KEY)."""

    refusal: http.Response | None = None
    passed_through: bool = False


ADMITTED = Admission()
PASSED_THROUGH = Admission(passed_through=True)


def check(
    headers,
    config: SimulatorConfig,
    route: Route | None = None,
    params: dict[str, str] | None = None,
    method: str = "POST",
) -> http.Response | None:
    """None when the request may pass, else Azure's 401 for what was wrong with it."""
    return admit(headers, config, route, params, method).refusal


def admit(
    headers,
    config: SimulatorConfig,
    route: Route | None = None,
    params: dict[str, str] | None = None,
    method: str = "POST",
    query_key: str | None = None,
) -> Admission:
    """`query_key`: an `api-key` query parameter, for the routes that take one (WebSocket
    handshakes: a browser cannot set headers on them); a header wins over it."""
    if route is not None and route.family == MANAGEMENT:
        refusal = check_management(headers, config)
        return ADMITTED if refusal is None else Admission(refusal)
    key = headers.get("api-key") or headers.get("ocp-apim-subscription-key") or query_key
    if key is not None:
        # openai 1.x sends the key twice (api-key and Bearer); the api-key decides.
        if _same(key, config.api_key):
            return ADMITTED
        return Admission(wire.azure_error(401, "401", INVALID_KEY))
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
        if _same(token, config.api_key) or any(_same(token, t) for t in config.bearer_tokens):
            return ADMITTED
        if config.mode == "record" and not config.azure_openai_key and not config.entra.enabled:
            # An Entra ID token for Azure itself: forwarded, and Azure checks it. Nothing here
            # vouches for it, so recorded answers are not its to read.
            return PASSED_THROUGH
        verdict = entra.judge(token, config.entra)
        if verdict.accepted:
            return ADMITTED
        if config.entra.enabled:
            # Azure's answer says nothing of the cause; the log does (never the token itself).
            logger.info("bearer token refused: %s", verdict.reason)
        if verdict.denied:
            return Admission(permission_denied(verdict.principal, route, params or {}, method))
        return Admission(invalid_token())
    # Azure's gateway text; wrapped in "error" as the direct endpoint's other 401s are.
    return Admission(wire.azure_error(401, "401", MISSING_KEY))


def query_key(context: RequestContext) -> str | None:
    """The `api-key` query parameter routing took off the request, where the route takes one."""
    if context.route is None or not context.route.websocket:
        return None
    return next((value for name, value in context.query_secrets if name.lower() == "api-key"), None)


def check_management(headers, config: SimulatorConfig) -> http.Response | None:
    """The simulator's own endpoints (configuration, limits, faults, saves, tokens): its key, or
    in signature mode a token whose principal the settings name; never a bearer passed through
    to Azure, nor a bearer string an extension registered for the API."""
    key = headers.get("api-key") or headers.get("ocp-apim-subscription-key")
    if key is not None:
        return None if _same(key, config.api_key) else wire.azure_error(401, "401", INVALID_KEY)
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() != "bearer ":
        return wire.azure_error(401, "401", MISSING_KEY)
    token = authorization[7:].strip()
    if _same(token, config.api_key) or _named_principal(token, config.entra):
        return None
    return wire.azure_error(401, "401", MANAGEMENT_ONLY)


def _named_principal(token: str, policy: entra.TokenPolicy) -> bool:
    # Claims mode checks no signature, so anyone can write any principal into a token: only a
    # signed token names one the settings can trust with the simulator's own controls.
    return policy.mode == "signature" and bool(policy.principals) and entra.judge(token, policy).accepted


def invalid_token() -> http.Response:
    """Azure's one answer for a token that is missing, unreadable, expired or for another audience."""
    return wire.json_response(401, {"statusCode": 401, "message": INVALID_TOKEN})


# Azure sends PermissionDenied (a valid token whose principal has no role assignment granting
# the data action) with status 401, not 403: SDKs raise their authentication error for it.
PERMISSION_DENIED_STATUS = 401
_PARAM_NAMES = {"deployment": "deployment-id", "model": "modelId", "result": "resultId"}


def permission_denied(principal: str, route: Route | None, params: dict[str, str], method: str) -> http.Response:
    action = (
        route.data_action
        if route is not None and route.data_action
        else "Microsoft.CognitiveServices/accounts/OpenAI/*"
    )
    operation = f"{method} {azure_path(route, params)}" if route is not None else method
    message = (
        f"The principal `{principal}` lacks the required data action `{action}` to perform `{operation}` operation."
    )
    return wire.azure_error(PERMISSION_DENIED_STATUS, "PermissionDenied", message)


def azure_path(route: Route, params: dict[str, str]) -> str:
    """The route's path as Azure's messages spell it: `/openai/deployments/{deployment-id}/…`."""

    def name(m: re.Match) -> str:
        param, choices = m.group(1), m.group(2)
        if choices:  # a fixed word spelled by the request (formrecognizer, documentintelligence)
            return params.get(param, choices.split("|")[0])
        return "{" + _PARAM_NAMES.get(param, param) + "}"

    return re.sub(r"\{(\w+)(?::([^}]*))?\}", name, route.pattern)


OPTIONS = (
    Option(
        "SIMULATOR_API_KEY",
        str | None,
        None,
        "The key clients must send; unset: one is generated and printed at start.",
    ),
    Option(
        "SIMULATOR_ENTRA_TOKENS",
        str,
        "off",
        "How Entra ID bearer tokens are judged: off (not accepted), claims (audience, expiry, tenant, "
        "principal; no signature check) or signature (claims and a signature by a SIMULATOR_ENTRA_JWKS key).",
        choices=entra.MODES,
        parse=entra_mode,
    ),
    Option(
        "SIMULATOR_ENTRA_AUDIENCES",
        Sequence[str],
        [],
        "Accepted token audiences (aud); empty: those Azure AI services accept.",
    ),
    Option("SIMULATOR_ENTRA_TENANTS", Sequence[str], [], "Accepted tenant ids (tid); empty: any."),
    Option(
        "SIMULATOR_ENTRA_PRINCIPALS",
        Sequence[str],
        [],
        "Allowed object or application ids (oid, appid); empty: any. Others get Azure's PermissionDenied.",
    ),
    Option(
        "SIMULATOR_ENTRA_JWKS",
        str | None,
        None,
        "JWKS file whose public keys sign accepted tokens (signature mode).",
    ),
)
NAMES = names(OPTIONS)
ENTRA_OPTIONS = NAMES - {"simulator_api_key"}


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the key and Entra settings and copy them into `config`; raises ConfigError, changing nothing."""
    check_options(options, OPTIONS, updated)
    policy = config.entra
    if updated & ENTRA_OPTIONS:
        policy = entra_policy(
            options.simulator_entra_tokens,
            options.simulator_entra_audiences,
            options.simulator_entra_tenants,
            options.simulator_entra_principals,
            options.simulator_entra_jwks,
        )
    config.api_key = options.simulator_api_key or config.api_key or secrets.token_urlsafe(24)
    config.entra = policy


class Auth:
    def __init__(self, config: SimulatorConfig, startup: Startup | None = None):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A large body is not read for a request that cannot pass: the 401 leaves from its head
        # (the intake stage sends it), as a gateway refuses an upload without reading it.
        length = intake.declared_length(flow.request)
        if flow.response or (length is not None and length <= intake.SMALL_BODY):
            return
        found = TABLE.resolve(flow.request.method, flow.request.path)
        route = found.route if found is not None else None
        if route is not None and route.open:
            return
        flow.response = check(
            flow.request.headers, self.config, route, found.params if found else None, flow.request.method
        )
        if flow.response is not None:
            redaction.take_query_secrets(flow.request)  # refused here, it never reaches routing's scrub

    def request(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if flow.response or (context is not None and context.route is not None and context.route.open):
            return
        admission = admit(
            flow.request.headers,
            self.config,
            context.route if context else None,
            context.params if context else None,
            flow.request.method,
            query_key(context) if context else None,
        )
        if admission.refusal is not None:
            logger.debug("401 for %s %.200s", flow.request.method, flow.request.path.partition("?")[0])
            flow.response = admission.refusal
        elif admission.passed_through and context is not None:
            context.passed_through = True
