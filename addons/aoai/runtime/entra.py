"""Entra ID bearer tokens, judged offline as Azure OpenAI judges them.

Three ways to judge a bearer JWT (SIMULATOR_ENTRA_TOKENS):
  off        none is accepted (only the key and registered bearer strings are);
  claims     the audience, the validity period and, when set, the tenant and principal are
             checked; the signature is not, since the simulator cannot reach Entra for its keys;
  signature  the same claims, and the signature against the keys of a JWKS file.

Plain functions on plain values, so they are tested without a proxy; PyJWT parses and checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MODES = ("off", "claims", "signature")

# The Azure AI services first-party application: the audience of tokens asked for with the
# `https://cognitiveservices.azure.com/.default` scope on the v2 endpoint.
COGNITIVE_SERVICES_APP_ID = "7d312290-28c8-473c-a0ed-8e53749b6d6d"
# What Azure OpenAI accepts as `aud`: the resource URI with and without its trailing slash,
# the newer ai.azure.com scope, and the application id.
AZURE_AUDIENCES = (
    "https://cognitiveservices.azure.com",
    "https://cognitiveservices.azure.com/",
    "https://ai.azure.com",
    "https://ai.azure.com/",
    COGNITIVE_SERVICES_APP_ID,
)
# Microsoft's token validation allows five minutes of clock skew.
LEEWAY_S = 300
# Entra signs with RS256; the other asymmetric algorithms serve keys users make themselves.
# Symmetric ones (HS*) and "none" are never accepted.
SIGNATURE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")

# Claims of a minted token when the caller sets none (fixed, so a test can name them).
DEFAULT_TENANT = "00000000-0000-0000-0000-00000000cafe"
DEFAULT_OID = "00000000-0000-0000-0000-0000000000a1"
DEFAULT_LIFETIME_S = 3600
MINT_KID = "simulator"
# Claims naming who and where (tenant, object, application, subject): Entra writes them as short
# strings (GUIDs mostly). Anything else is a token Azure cannot read.
IDENTITY_CLAIMS = ("tid", "oid", "appid", "azp", "sub", "iss")
MAX_CLAIM_CHARS = 1024


@dataclass(frozen=True)
class TokenPolicy:
    mode: str = "off"
    audiences: tuple[str, ...] = AZURE_AUDIENCES
    tenants: frozenset[str] = frozenset()  # empty: any tenant
    principals: frozenset[str] = frozenset()  # object or application ids; empty: any principal
    keys: tuple[jwt.PyJWK, ...] = ()  # signature mode: the JWKS file's keys
    leeway_s: float = LEEWAY_S

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""  # why it was refused, for the log; never the token itself
    principal: str = ""  # oid (else appid / azp / sub) of a readable token
    denied: bool = False  # readable and valid, but the principal is not allowed: PermissionDenied
    claims: dict[str, Any] = field(default_factory=dict)


def judge(token: str, policy: TokenPolicy) -> Verdict:
    """Whether `token` is accepted under `policy`, and why not."""
    if not policy.enabled:
        return Verdict(False, "Entra ID tokens are not accepted (SIMULATOR_ENTRA_TOKENS is off)")
    options: jwt.types.Options = {
        "verify_signature": policy.mode == "signature",
        "verify_exp": True,
        "verify_nbf": True,
        "verify_aud": True,
        "verify_iat": False,
        "require": ["exp", "aud"],
    }
    try:
        if policy.mode == "signature":
            key, algorithm = _signing_key(token, policy.keys)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=list(policy.audiences),
                options=options,
                leeway=policy.leeway_s,
            )
        else:
            claims = jwt.decode(token, options=options, audience=list(policy.audiences), leeway=policy.leeway_s)
    except jwt.ExpiredSignatureError:
        return Verdict(False, "the token has expired")
    except jwt.ImmatureSignatureError:
        return Verdict(False, "the token is not valid yet (nbf)")
    except jwt.InvalidAudienceError:
        return Verdict(False, f"the token's audience is not one of {', '.join(policy.audiences)}")
    except jwt.MissingRequiredClaimError as e:
        return Verdict(False, f"the token has no {e.claim!r} claim")
    except jwt.InvalidSignatureError:
        return Verdict(False, "the token's signature does not match the key in the JWKS")
    except _NoKey as e:
        return Verdict(False, str(e))
    except (jwt.PyJWTError, ValueError, TypeError, ArithmeticError, RecursionError) as e:
        # Not three base64url parts of JSON, a key of the wrong type for the algorithm, …
        return Verdict(False, f"the token cannot be read ({type(e).__name__})")
    odd = odd_claim(claims)
    if odd:
        return Verdict(False, f"the token's {odd!r} claim is not a string of at most {MAX_CLAIM_CHARS} characters")
    principal = _principal(claims)
    tenant = claims.get("tid")
    if policy.tenants and tenant not in policy.tenants:
        return Verdict(False, f"tenant {tenant!r} is not in SIMULATOR_ENTRA_TENANTS", principal, claims=claims)
    if (
        policy.principals
        and not {str(claims.get(c)) for c in ("oid", "appid", "azp") if claims.get(c)} & policy.principals
    ):
        return Verdict(
            False,
            f"principal {principal!r} is not in SIMULATOR_ENTRA_PRINCIPALS",
            principal,
            denied=True,
            claims=claims,
        )
    return Verdict(True, principal=principal, claims=claims)


def odd_claim(claims: dict[str, Any]) -> str | None:
    """The first identity claim that is present but not a short string, or None."""
    for name in IDENTITY_CLAIMS:
        value = claims.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CLAIM_CHARS):
            return name
    return None


def _principal(claims: dict[str, Any]) -> str:
    for name in ("oid", "appid", "azp", "sub"):
        if claims.get(name):
            return str(claims[name])
    return ""


class _NoKey(Exception):
    pass


def _signing_key(token: str, keys: tuple[jwt.PyJWK, ...]) -> tuple[jwt.PyJWK, str]:
    """The JWKS key the token names (by `kid`; the only key when it names none) and its algorithm."""
    header = jwt.get_unverified_header(token)
    algorithm = header.get("alg")
    if algorithm not in SIGNATURE_ALGORITHMS:
        raise _NoKey(
            f"the token's algorithm {algorithm!r} is not accepted; use one of {', '.join(SIGNATURE_ALGORITHMS)}"
        )
    kid = header.get("kid")
    if kid is not None:
        found = [k for k in keys if k.key_id == kid]
    else:
        found = list(keys) if len(keys) == 1 else []
    if not found:
        raise _NoKey(f"the token is signed by a key not in the JWKS (kid {kid!r})")
    return found[0], algorithm


def load_jwks(path: str) -> tuple[jwt.PyJWK, ...]:
    """The public keys of a JWKS file; raises ValueError saying what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the JWKS file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f'{path}: expected a JWKS, a JSON object with a "keys" list')
    keys = []
    for i, entry in enumerate(data["keys"]):
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{path}: keys[{i}]: not a usable signing key ({e})") from None
        if not _public_only(key.key):
            raise ValueError(f"{path}: keys[{i}]: a private key; give the simulator only the public keys")
        keys.append(key)
    if not keys:
        raise ValueError(f"{path}: the JWKS has no keys")
    return tuple(keys)


def _public_only(key: Any) -> bool:
    return not hasattr(key, "private_bytes")


# Minting: tokens shaped as Entra v1 access tokens, for tests that use keyless code paths.


@lru_cache(maxsize=1)
def _throwaway_key() -> rsa.RSAPrivateKey:
    # Claims mode checks no signature; a real RS256 one keeps the token shaped as Entra's.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token_claims(
    *,
    audience: str = AZURE_AUDIENCES[0],
    tenant: str = DEFAULT_TENANT,
    oid: str = DEFAULT_OID,
    appid: str | None = None,
    lifetime_s: float = DEFAULT_LIFETIME_S,
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of an Entra ID access token for Azure AI services."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime_s),
        "tid": tenant,
        "oid": oid,
        "sub": oid,
        "ver": "1.0",
        "uti": uuid.uuid4().hex[:22],
    }
    if appid:
        claims["appid"] = appid
    claims.update(extra or {})
    return claims


def mint(claims: dict[str, Any], private_key: Any = None, kid: str | None = None) -> str:
    """A signed JWT with these claims: with `private_key` (RSA or EC) for signature mode, else a
    throwaway key that only claims mode accepts."""
    key = private_key if private_key is not None else _throwaway_key()
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else _ec_algorithm(key)
    return jwt.encode(
        claims,
        key,
        algorithm=algorithm,
        headers={"kid": kid or (MINT_KID if private_key is None else key_id(key)), "typ": "JWT"},
    )


def _ec_algorithm(key: Any) -> str:
    size = key.curve.key_size
    return {256: "ES256", 384: "ES384", 521: "ES512"}.get(size, "ES256")


def key_id(private_key: Any) -> str:
    """A stable `kid` for a key: its RFC 7638 thumbprint."""
    return _thumbprint(_public_jwk(private_key))


def _public_jwk(private_key: Any) -> dict[str, Any]:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return cast(dict[str, Any], json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key())))
    return cast(dict[str, Any], json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key())))


def _thumbprint(jwk: dict[str, Any]) -> str:
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def jwks_of(private_key: Any, kid: str | None = None) -> dict[str, Any]:
    """The JWKS (public part only) that verifies tokens signed by `private_key`."""
    jwk = _public_jwk(private_key)
    jwk["alg"] = "RS256" if isinstance(private_key, rsa.RSAPrivateKey) else _ec_algorithm(private_key)
    jwk["kid"] = kid or _thumbprint(jwk)
    jwk["use"] = "sig"
    return {"keys": [jwk]}


def new_private_key_pem() -> bytes:
    """A new RSA key in PEM, for a JWKS of one's own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)
