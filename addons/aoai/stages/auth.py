"""Auth: every request but those to open routes (health, metrics) must carry the simulator's key,
a bearer string an extension registered, or (SIMULATOR_ENTRA_TOKENS) an Entra ID token."""

from __future__ import annotations

import hmac
import logging
import re

from mitmproxy import http

from .. import wire
from ..runtime import entra, intake
from ..runtime.config import SimulatorConfig
from ..runtime.routes import TABLE, Route
from ..runtime.state import context_of

logger = logging.getLogger(__name__)

INVALID_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
               "key for an active subscription and use a correct regional API endpoint for your resource.")
MISSING_KEY = ("Access denied due to missing subscription key. Make sure to include subscription key when making "
               "requests to an API.")
INVALID_TOKEN = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
                 "(https://cognitiveservices.azure.com), or have expired.")


def _same(given: str, expected: str) -> bool:
    # Header values hold bytes that are not UTF-8 as surrogates (mitmproxy decodes them so).
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def check(headers, config: SimulatorConfig, route: Route | None = None, params: dict[str, str] | None = None,
          method: str = "POST") -> http.Response | None:
    """None when the request may pass, else Azure's 401 for what was wrong with it."""
    key = headers.get("api-key") or headers.get("ocp-apim-subscription-key")
    if key is not None:
        # openai 1.x sends the key twice (api-key and Bearer); the api-key decides.
        if _same(key, config.api_key):
            return None
        return wire.azure_error(401, "401", INVALID_KEY)
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
        if _same(token, config.api_key) or any(_same(token, t) for t in config.bearer_tokens):
            return None
        if config.mode == "record" and not config.azure_openai_key:
            return None  # an Entra ID token for Azure itself: forwarded, and Azure checks it
        verdict = entra.judge(token, config.entra)
        if verdict.accepted:
            return None
        if config.entra.enabled:
            # Azure's answer says nothing of the cause; the log does (never the token itself).
            logger.info("bearer token refused: %s", verdict.reason)
        if verdict.denied:
            return permission_denied(verdict.principal, route, params or {}, method)
        return invalid_token()
    # Azure's gateway text; wrapped in "error" as the direct endpoint's other 401s are.
    return wire.azure_error(401, "401", MISSING_KEY)


def invalid_token() -> http.Response:
    """Azure's one answer for a token that is missing, unreadable, expired or for another audience."""
    return wire.json_response(401, {"statusCode": 401, "message": INVALID_TOKEN})


# Azure sends PermissionDenied (a valid token whose principal has no role assignment granting
# the data action) with status 401, not 403: SDKs raise their authentication error for it.
PERMISSION_DENIED_STATUS = 401
_PARAM_NAMES = {"deployment": "deployment-id", "model": "modelId", "result": "resultId"}


def permission_denied(principal: str, route: Route | None, params: dict[str, str], method: str) -> http.Response:
    action = route.data_action if route is not None and route.data_action else \
        "Microsoft.CognitiveServices/accounts/OpenAI/*"
    operation = f"{method} {azure_path(route, params)}" if route is not None else method
    message = (f"The principal `{principal}` lacks the required data action `{action}` to perform "
               f"`{operation}` operation.")
    return wire.azure_error(PERMISSION_DENIED_STATUS, "PermissionDenied", message)


def azure_path(route: Route, params: dict[str, str]) -> str:
    """The route's path as Azure's messages spell it: `/openai/deployments/{deployment-id}/…`."""
    def name(m: re.Match) -> str:
        param, choices = m.group(1), m.group(2)
        if choices:  # a fixed word spelled by the request (formrecognizer, documentintelligence)
            return params.get(param, choices.split("|")[0])
        return "{" + _PARAM_NAMES.get(param, param) + "}"
    return re.sub(r"\{(\w+)(?::([^}]*))?\}", name, route.pattern)


class Auth:
    def __init__(self, config: SimulatorConfig):
        self.config = config

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
        flow.response = check(flow.request.headers, self.config, route, found.params if found else None,
                              flow.request.method)

    def request(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if flow.response or (context is not None and context.route is not None and context.route.open):
            return
        denied = check(flow.request.headers, self.config, context.route if context else None,
                       context.params if context else None, flow.request.method)
        if denied is not None:
            logger.debug("401 for %s %s", flow.request.method, flow.request.path)
            flow.response = denied
