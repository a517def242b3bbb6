"""Keys in query strings: `?api-key=…`, `?subscription-key=…`, a SAS `sig`, a function `code`,
an `access_token`. They are taken off the request as it arrives, so no recording, log line
or flow view (mitmdump's, mitmweb's) holds them, exactly as key headers are never written;
record mode passes them on to Azure only when the client's credentials go through unchanged.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from mitmproxy import http

# Names that carry a credential in the services the simulator stands in for, and in the
# usual OAuth and signed-URL forms.
SECRET_NAMES = frozenset(
    {
        "api-key",
        "api_key",
        "apikey",
        "key",
        "subscription-key",
        "subscription_key",
        "ocp-apim-subscription-key",
        "x-api-key",
        "sig",
        "signature",
        "code",
        "token",
        "access_token",
        "accesstoken",
        "id_token",
        "refresh_token",
        "client_secret",
        "secret",
        "password",
        "pwd",
        "auth",
        "authorization",
    }
)
SECRET_SUFFIXES = ("key", "_token", "-token", "secret", "password", "signature")
# A cheap look at the raw query first (its bytes, not decoded): most requests carry only
# api-version. A "%" may hide a name, so a query with one is read in full.
_HINT = re.compile(rb"key|sig|code|token|secret|pass|pwd|auth|%", re.IGNORECASE)


def secret_query_name(name: str) -> bool:
    """Whether a query parameter of this name carries a credential."""
    lower = name.lower()
    return lower in SECRET_NAMES or lower.endswith(SECRET_SUFFIXES)


def take_query_secrets(request: http.Request) -> tuple[tuple[str, str], ...]:
    """Remove the key-like parameters from the request's query; return them, in order."""
    path = request.data.path
    start = path.find(b"?")
    if start < 0 or _HINT.search(path, start) is None:
        return ()
    items = request.query.items(multi=True)
    secrets = tuple((k, v) for k, v in items if secret_query_name(k))
    if secrets:
        request.query = [(k, v) for k, v in items if not secret_query_name(k)]
    return secrets


def with_query(path: str, extra: tuple[tuple[str, str], ...]) -> str:
    """`path` with more query parameters after its own."""
    if not extra:
        return path
    return path + ("&" if "?" in path else "?") + urlencode(extra)
