"""A `TokenCredential` for tests of keyless (Entra ID) code paths against the simulator: where the
application uses `DefaultAzureCredential()`, the test passes `SimulatorCredential(...)` and the
same code runs without Entra. The simulator must judge tokens by claims
(SIMULATOR_ENTRA_TOKENS=claims); tokens come from its `POST /++/token`, asked with the API key.

    from azure.identity import get_bearer_token_provider
    credential = SimulatorCredential("https://localhost:8000", api_key="…", verify="mitmproxy-ca-cert.pem")
    AzureOpenAI(azure_endpoint="https://localhost:8000", api_version="2024-10-21",
                azure_ad_token_provider=get_bearer_token_provider(
                    credential, "https://cognitiveservices.azure.com/.default"),
                http_client=httpx.Client(verify="mitmproxy-ca-cert.pem"))
    DocumentIntelligenceClient("https://localhost:8000", credential, connection_verify="mitmproxy-ca-cert.pem")

Not an extension: a client-side helper, imported by the test suite.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from azure.core.credentials import AccessToken


class SimulatorCredential:
    """azure-core's TokenCredential protocol (`get_token`), backed by the simulator's /++/token."""

    # Asked for again this long before expiry, as azure-identity's credentials refresh early.
    REFRESH_MARGIN_S = 300

    def __init__(
        self, endpoint: str, api_key: str, *, verify: Any = True, oid: str | None = None, tenant: str | None = None
    ):
        self.url = endpoint.rstrip("/") + "/++/token"
        self.api_key = api_key
        self.verify = verify
        self.claims = {k: v for k, v in (("oid", oid), ("tid", tenant)) if v}
        self._tokens: dict[tuple, AccessToken] = {}  # by scopes and tenant

    def get_token(
        self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, **kwargs: Any
    ) -> AccessToken:
        # The scope names the audience: "https://cognitiveservices.azure.com/.default" -> aud
        # "https://cognitiveservices.azure.com", as Entra issues it.
        token = self._tokens.get((scopes, tenant_id))
        if token is None or token.expires_on - time.time() < self.REFRESH_MARGIN_S:
            body = dict(self.claims)
            if scopes:
                body["aud"] = scopes[0].removesuffix("/.default")
            if tenant_id:
                body["tid"] = tenant_id
            answer = httpx.post(self.url, json=body, headers={"api-key": self.api_key}, verify=self.verify, timeout=10)
            answer.raise_for_status()
            data = answer.json()
            token = self._tokens[(scopes, tenant_id)] = AccessToken(data["access_token"], int(data["expires_on"]))
        return token

    def close(self) -> None:
        pass

    def __enter__(self) -> SimulatorCredential:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
