"""The lines the simulator logs once it listens: where, with which key and deployments, and a
call to try."""

from __future__ import annotations

import shlex
from typing import Any

from .config import SimulatorConfig

DEFAULT_PORT = 8000


def banner(config: SimulatorConfig, addresses: list[Any], ca: str = "", tls_specs: list[str] | None = None) -> str:
    host, port = "localhost", DEFAULT_PORT
    if addresses:
        bound = addresses[0][0]
        port = addresses[0][1]
        host = bound if bound not in ("0.0.0.0", "::", "") else "localhost"
    base = f"http://{host}:{port}"
    chat = next((d for d in config.deployments.values() if d.model.kind == "chat"), None)
    name = chat.name if chat else "gpt-4o"
    deployments = ", ".join(f"{d.name} ({d.model.name})" for d in config.deployments.values()) or "none"
    body = '{"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 20}'
    url = f"{base}/openai/deployments/{name}/chat/completions?api-version=2024-10-21"
    curl = (
        f"curl {shlex.quote(url)} "
        f"-H 'api-key: {config.api_key}' -H 'content-type: application/json' -d {shlex.quote(body)}"
    )
    lines = [
        f"Azure OpenAI simulator: mode {config.mode}, listening on {base}",
        f"  API key:     {config.api_key}",
        f"  Deployments: {deployments}"
        + (" (undefined names answered too)" if config.allow_undefined_deployments else ""),
        f"  Try:         {curl}",
    ]
    if ca:
        lines.append(f"  HTTPS:       https://{host}:{port} on the same port; clients trust the CA file {ca}")
    if tls_specs:
        names = ", ".join(spec.split("=", 1)[0] for spec in tls_specs)
        lines.append(f"               SIMULATOR_TLS_CERT serves {names}")
    if config.entra.enabled:
        # Only claims mode mints: in signature mode the simulator has no private key.
        minting = (
            "POST /++/token with the API key"
            if config.entra.mode == "claims"
            else "scripts/mint_token.py --key KEY.pem (the JWKS's private key)"
        )
        lines.append(f"  Entra ID:    bearer tokens judged by {config.entra.mode}; a token for tests: {minting}")
    return "\n".join(lines)
