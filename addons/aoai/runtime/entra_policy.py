"""The SIMULATOR_ENTRA_* settings as the token policy `entra.judge` applies."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import entra
from .config import ConfigError

# What SIMULATOR_ENTRA_TOKENS also takes in the environment, for the mode it means.
ALIASES = {"": "off", "on": "claims", "true": "claims", "false": "off"}


def entra_mode(text: str) -> str:
    """SIMULATOR_ENTRA_TOKENS's text as a mode (its choices say which are known)."""
    mode = text.strip().lower()
    return ALIASES.get(mode, mode)


def entra_policy(
    mode: str,
    audiences: Sequence[str] = (),
    tenants: Sequence[str] = (),
    principals: Sequence[str] = (),
    jwks: str | None = None,
) -> entra.TokenPolicy:
    """The token policy of these settings; raises ConfigError naming the variable."""
    if mode not in entra.MODES:
        raise ConfigError(f"SIMULATOR_ENTRA_TOKENS: unknown mode {mode!r}; use off, claims or signature")
    jwks_path = (jwks or "").strip()
    keys: tuple[Any, ...] = ()
    if mode == "signature":
        if not jwks_path:
            raise ConfigError("SIMULATOR_ENTRA_JWKS: signature mode needs the JWKS file of the keys that sign tokens")
        try:
            keys = entra.load_jwks(os.path.expanduser(jwks_path))
        except ValueError as e:
            raise ConfigError(f"SIMULATOR_ENTRA_JWKS: {e}") from None
    elif jwks_path:
        raise ConfigError(f"SIMULATOR_ENTRA_JWKS: used only when SIMULATOR_ENTRA_TOKENS=signature (it is {mode})")
    return entra.TokenPolicy(
        mode=mode,
        audiences=tuple(a.strip() for a in audiences if a.strip()) or entra.AZURE_AUDIENCES,
        tenants=frozenset(t.strip() for t in tenants if t.strip()),
        principals=frozenset(p.strip() for p in principals if p.strip()),
        keys=keys,
    )
