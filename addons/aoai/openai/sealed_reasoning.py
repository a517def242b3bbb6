"""Reasoning items' `encrypted_content`: an opaque token standing for the reasoning a response
spent, so a client that keeps nothing stored (`store: false`) can pass the reasoning back on
its next turn. Authenticated with a key made per process: the simulator reads back only what
it sealed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Keyed per process (or per set of replicas, from the secret they share): the simulator reads
# back what it sealed; anything else fails to verify. The first key seals; the ones it replaced
# still unseal, so what was sealed before replicas agreed on one key stays readable.
_KEYS = [secrets.token_bytes(32)]
KEYS_KEPT = 4
_SEAL_VERSION = b"\x01"
_TAG_BYTES = 16


def share_key(secret: str) -> None:
    """Key sealing by a secret the replicas share, so any of them reads what another sealed."""
    key = hashlib.sha256(b"encrypted reasoning\x00" + secret.encode()).digest()
    _KEYS[:] = [key, *(k for k in _KEYS if k != key)][:KEYS_KEPT]


def seal(reasoning_tokens: int) -> str:
    """An opaque `encrypted_content` standing for `reasoning_tokens` tokens of reasoning."""
    payload = _SEAL_VERSION + secrets.token_bytes(12) + reasoning_tokens.to_bytes(4, "big")
    tag = hmac.new(_KEYS[0], payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return "gAAAAA" + base64.urlsafe_b64encode(payload + tag).decode()


def unseal(content: str) -> int | None:
    """The reasoning tokens an `encrypted_content` this process sealed stands for; None when
    it did not seal it (another process, or altered)."""
    if not isinstance(content, str) or not content.startswith("gAAAAA"):
        return None
    try:
        raw = base64.urlsafe_b64decode(content[6:].encode())
    except ValueError:
        return None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(payload) != 17 or payload[:1] != _SEAL_VERSION:
        return None
    for key in _KEYS:
        if hmac.compare_digest(tag, hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]):
            return int.from_bytes(payload[-4:], "big")
    return None
