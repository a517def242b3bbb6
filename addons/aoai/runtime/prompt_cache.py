"""Prompt caching as Azure reports it: a prompt of at least 1,024 tokens whose beginning the
same deployment saw recently reports that beginning as `cached_tokens`, in steps of 128.

The cache keeps a digest of each prompt prefix at those steps (1,024, 1,152, …), never the
text nor the deployment's name (both are inside the digest), so every entry takes the same
few bytes however long the prompt or the name; an entry not used for `idle_s` is forgotten,
as Azure's cache is after minutes idle, and at most `max_bytes` of entries are kept
(PROMPT_CACHE_MAX_BYTES; the least recently used go first).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MIN_TOKENS = 1024
STEP = 128
DEFAULT_IDLE_S = 300.0
ENTRY_BYTES = 200  # a 16-byte digest, its last use and its ordered-dict slot, measured
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # PROMPT_CACHE_MAX_BYTES's default: about 100,000 entries


class PromptCache:
    def __init__(self, idle_s: float = DEFAULT_IDLE_S, capacity: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.idle_s = idle_s
        # Entries are all the same size: the byte budget is a count (`capacity` sets it directly).
        self.max_bytes = max_bytes if capacity is None else capacity * ENTRY_BYTES
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # prefix digest -> last used
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return max(1, self.max_bytes // ENTRY_BYTES)

    @property
    def bytes(self) -> int:
        return len(self._seen) * ENTRY_BYTES

    def use(self, deployment: str, token_ids: Sequence[int], now: float | None = None) -> int:
        """The tokens of this prompt that were cached; the prompt is remembered for next time."""
        if len(token_ids) < MIN_TOKENS:
            return 0
        now = time.monotonic() if now is None else now
        digests = _prefix_digests(deployment, token_ids)
        cached = 0
        with self._lock:
            self._forget_idle(now)
            for length, digest in digests:
                if digest in self._seen:
                    cached = length
                self._seen[digest] = now
                self._seen.move_to_end(digest)
            capacity = self.capacity
            while len(self._seen) > capacity:
                self._seen.popitem(last=False)
        return cached

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def _forget_idle(self, now: float) -> None:
        # Entries are in order of last use: the idle ones are at the front.
        while self._seen:
            digest, used = next(iter(self._seen.items()))
            if now - used < self.idle_s:
                return
            del self._seen[digest]

    def __len__(self) -> int:
        return len(self._seen)

    def usage(self) -> dict[str, Any]:
        """For /++/limits: what the cache holds and may hold."""
        return {"count": len(self._seen), "maxCount": self.capacity, "bytes": self.bytes, "maxBytes": self.max_bytes}


def _prefix_digests(deployment: str, token_ids: Sequence[int]) -> list[tuple[int, bytes]]:
    """(length, digest) of the prompt's prefixes of 1,024 tokens and every 128 after."""
    running = hashlib.blake2b(deployment.encode() + b"\0", digest_size=16)
    out, start = [], 0
    for length in range(MIN_TOKENS, len(token_ids) + 1, STEP):
        running.update(b"".join(t.to_bytes(4, "little") for t in token_ids[start:length]))
        out.append((length, running.copy().digest()))
        start = length
    return out
