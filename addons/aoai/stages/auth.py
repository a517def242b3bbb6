"""Auth: every request but those to open routes (health, metrics) must carry the simulator's key."""

from __future__ import annotations

import hmac
import logging

from mitmproxy import http

from .. import wire
from ..runtime.config import SimulatorConfig
from ..runtime.state import context_of

logger = logging.getLogger(__name__)

INVALID_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
               "key for an active subscription and use a correct regional API endpoint for your resource.")
MISSING_KEY = ("Access denied due to missing subscription key. Make sure to include subscription key when making "
               "requests to an API.")
INVALID_TOKEN = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
                 "(https://cognitiveservices.azure.com), or have expired.")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def check(headers, config: SimulatorConfig) -> http.Response | None:
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
        return wire.json_response(401, {"statusCode": 401, "message": INVALID_TOKEN})
    # Azure's gateway text; wrapped in "error" as the direct endpoint's other 401s are.
    return wire.azure_error(401, "401", MISSING_KEY)


class Auth:
    def __init__(self, config: SimulatorConfig):
        self.config = config

    def request(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if flow.response or (context is not None and context.route is not None and context.route.open):
            return
        denied = check(flow.request.headers, self.config)
        if denied is not None:
            logger.debug("401 for %s %s", flow.request.method, flow.request.path)
            flow.response = denied
