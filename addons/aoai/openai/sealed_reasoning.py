"""Reasoning items' `encrypted_content`: an opaque token standing for the reasoning a response
spent, so a client that keeps nothing stored (`store: false`) can pass the reasoning back on
its next turn. Authenticated with a key made per process: the simulator reads back only what
it sealed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Keyed per process (or per set of workers, from their shared secret): the simulator reads back
# what it sealed; anything else fails to verify.
_KEY = secrets.token_bytes(32)
_SEAL_VERSION = b"\x01"
_TAG_BYTES = 16


def share_key(secret: str) -> None:
    """Key sealing by a secret the workers share, so any of them reads what another sealed."""
    global _KEY
    _KEY = hashlib.sha256(b"encrypted reasoning\x00" + secret.encode()).digest()


def seal(reasoning_tokens: int) -> str:
    """An opaque `encrypted_content` standing for `reasoning_tokens` tokens of reasoning."""
    payload = _SEAL_VERSION + secrets.token_bytes(12) + reasoning_tokens.to_bytes(4, "big")
    tag = hmac.new(_KEY, payload, hashlib.sha256).digest()[:_TAG_BYTES]
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
    expected = hmac.new(_KEY, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return int.from_bytes(payload[-4:], "big") if hmac.compare_digest(tag, expected) else None
