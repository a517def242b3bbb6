"""The limiter the `Limits` stage uses: the store of windows (in memory or Redis), the clock,
and what was refused (counters, and the retry times clients were given, to catch early
retries)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..bounds import Bounds
from ..shared import Bag, Shared
from .headers import whole_ms
from .ptu import Capacity, Fill
from .quota import GRACE, NEVER_SECONDS, TOO_LARGE, Clock, Quota, Verdict
from .redis import RedisWindows
from .windows import MemoryWindows

# A throttled client's identity, hashed by the caller (see ratelimit.client_identity).
Identity = bytes

# How long a hint is kept in Redis: past the token window, the longest retry time most 429s give.
SHARED_TTL_S = 120.0


@dataclass
class Counters:
    """429s by (deployment, reason), early retries by deployment and spilled requests by
    (provisioned deployment, standard deployment), for logs and metrics."""

    throttled: Counter[tuple[str, str]] = field(default_factory=Counter)
    early_retries: Counter[str] = field(default_factory=Counter)
    spilled: Counter[tuple[str, str]] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        throttled: dict[str, dict[str, int]] = {}
        for (name, reason), n in sorted(self.throttled.items()):
            throttled.setdefault(name, {})[reason] = n
        view: dict[str, Any] = {"throttled": throttled, "earlyRetries": dict(sorted(self.early_retries.items()))}
        for (name, to), n in sorted(self.spilled.items()):  # shown once something spilled
            view.setdefault("spilledOver", {}).setdefault(name, {})[to] = n
        return view

    def clear(self) -> None:
        self.throttled.clear()
        self.early_retries.clear()
        self.spilled.clear()


class RetryHints:
    """When each throttled client was told it may retry, to catch those that come back early.

    A client is recognised by an identity the caller derives from the request and hashes
    (see ratelimit.client_identity): every hint takes the same few bytes, however long the
    request id a client sends, and at most `max_bytes` of them are kept (past that, the hints
    already due go, then the oldest half). A hint is used once, by the next request with that
    identity."""

    ENTRY_BYTES = 160  # a 16-byte digest, its due time and its dict slot, measured
    DEFAULT_MAX_BYTES = Bounds.retry_hints_bytes  # RETRY_HINTS_MAX_BYTES's default

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.due: dict[Identity, float] = {}
        self.bag: Bag | None = None

    def share_through(self, shared: Shared) -> None:
        # Every hint kept for as long as the longest retry time worth catching; the count bound
        # is the local one, so Redis holds no more hints than one replica may.
        self.bag = Bag(shared, "retry-hints", SHARED_TTL_S, self.max_bytes, self.capacity)

    @property
    def sharing(self) -> bool:
        return self.bag is not None and self.bag.enabled

    def key(self, quota_key: str, identity: Identity) -> str:
        """Where a client's hint is kept in Redis, for the window check that takes it."""
        assert self.bag is not None
        return self.bag.key(f"{quota_key}:{identity.hex()}")

    async def share(self, quota_key: str, identity: Identity, due: float) -> None:
        """Write a hint to Redis; skipped while Redis is away (a retry reaching this replica
        still finds its own copy)."""
        bag = self.bag
        if bag is None or not bag.enabled:
            return
        bag.max_bytes, bag.max_count = self.max_bytes, self.capacity
        await bag.put(f"{quota_key}:{identity.hex()}", repr(due).encode())

    async def shared_usage(self) -> dict[str, int] | None:
        return await self.bag.usage() if self.bag is not None and self.bag.enabled else None

    def __bool__(self) -> bool:
        return bool(self.due)

    def __len__(self) -> int:
        return len(self.due)

    @property
    def capacity(self) -> int:
        return max(1, self.max_bytes // self.ENTRY_BYTES)

    @property
    def bytes(self) -> int:
        return len(self.due) * self.ENTRY_BYTES

    def told(self, identity: Identity, due: float, now: float) -> None:
        capacity = self.capacity
        if len(self.due) >= capacity:
            self.due = {k: t for k, t in self.due.items() if t > now}
            if len(self.due) >= capacity:  # all still pending: keep the newest half
                self.due = dict(list(self.due.items())[len(self.due) - capacity // 2 :])
        self.due[identity] = due

    def arrived(self, identity: Identity, now: float) -> float:
        """How many seconds too early this request came back (0.0: on time or no hint)."""
        due = self.due.pop(identity, None)
        return due - now if due is not None and due - now > GRACE else 0.0

    def clear(self) -> None:
        self.due.clear()

    def usage(self) -> dict[str, int]:
        """For /++/limits: what the hints hold and may hold."""
        return {"count": len(self.due), "maxCount": self.capacity, "bytes": self.bytes, "maxBytes": self.max_bytes}


SHARED_RETRY_S = 1.0  # after shared windows failed, how long each replica counts alone before asking again


class Limiter:
    """The windows (in memory or Redis), the clock, and what was refused."""

    def __init__(self, store: MemoryWindows | RedisWindows | None = None, clock: Clock | None = None) -> None:
        self.store: MemoryWindows | RedisWindows = store or MemoryWindows()
        # Memory windows need only a steady clock; shared ones need the wall clock all
        # replicas agree on.
        self.clock: Clock = clock or (time.time if self.store.shared else time.monotonic)
        self.counters = Counters()
        self.hints = RetryHints()
        # While shared windows cannot be reached, each replica counts alone in these (looser
        # than one shared quota, but a quota all the same), and asks Redis again after a while.
        self.local = MemoryWindows()
        self.away_until = 0.0

    def lost(self) -> None:
        """The shared windows failed a call: count in the local ones for a while."""
        self.away_until = time.monotonic() + SHARED_RETRY_S

    def _windows(self) -> MemoryWindows | RedisWindows:
        if self.store.shared and time.monotonic() < self.away_until:
            return self.local
        return self.store

    def check_locally(self, key: str, quota: Quota, cost: int) -> Verdict:
        return self.local.check(key, quota, cost, self.clock())

    def fill_locally(self, key: str, capacity: Capacity, cost: int) -> Fill:
        return self.local.fill(key, capacity, cost, self.clock())

    def use(self, store: MemoryWindows | RedisWindows, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or (time.time if store.shared else time.monotonic)
        self.hints.clear()

    def check(
        self, key: str, quota: Quota, cost: int, identity: Identity | None = None
    ) -> Verdict | Awaitable[Verdict]:
        """The verdict, or for shared windows an awaitable of it (with `identity`, carrying the
        retry hint another replica gave that client: `hinted`). A cost above the whole token
        quota is refused at once: no window could ever hold it."""
        if quota.tokens and cost > quota.tokens:
            return Verdict(
                False,
                TOO_LARGE,
                float(NEVER_SECONDS),
                float(NEVER_SECONDS),
                0.0,
                quota.tokens,
                quota.requests,
                self.clock(),
            )
        windows = self._windows()
        if isinstance(windows, RedisWindows):
            return windows.check(key, quota, cost, self.clock(), self._hint_key(key, identity))
        return windows.check(key, quota, cost, self.clock())

    async def peek(self, key: str, quota: Quota, cost: int) -> Verdict:
        """Whether `cost` would fit the windows now, counting nothing (realtime sessions ask
        before each response). Shared windows that fail: the local ones answer."""
        return await self._without_admission(key, quota, cost, "peek")

    async def charge(self, key: str, quota: Quota, cost: int) -> Verdict:
        """Count `cost` tokens an admitted answer used, whatever room is left (a realtime
        response is charged when it is done); the verdict carries what remains."""
        return await self._without_admission(key, quota, cost, "charge")

    async def _without_admission(self, key: str, quota: Quota, cost: int, mode: Literal["peek", "charge"]) -> Verdict:
        windows = self._windows()
        if isinstance(windows, RedisWindows):
            try:
                return await windows.check(key, quota, cost, self.clock(), mode=mode)
            except Exception:
                self.lost()
                windows = self.local
        local = windows.peek if mode == "peek" else windows.charge
        return local(key, quota, cost, self.clock())

    def fill(self, key: str, capacity: Capacity, cost: int, identity: Identity | None = None) -> Fill | Awaitable[Fill]:
        """A provisioned deployment's verdict (a Fill), or for shared windows an awaitable of it."""
        windows = self._windows()
        if isinstance(windows, RedisWindows):
            return windows.fill(key, capacity, cost, self.clock(), self._hint_key(key, identity))
        return windows.fill(key, capacity, cost, self.clock())

    @property
    def shares_hints(self) -> bool:
        """Whether retry hints go to Redis (the windows are there too)."""
        return self.store.shared and self.hints.sharing

    def _hint_key(self, key: str, identity: Identity | None) -> str:
        return self.hints.key(key, identity) if identity is not None and self.hints.sharing else ""

    def throttled(
        self, name: str, reason: str, identity: Identity | None, wait: float, key: str = ""
    ) -> Awaitable[None] | None:
        """Count a 429 and keep the client's retry hint; with shared windows and the quota's
        `key`, an awaitable that writes the hint to Redis (to await before the 429 is sent)."""
        self.counters.throttled[(name, reason)] += 1
        if identity is not None and reason != TOO_LARGE:
            now = self.clock()
            # The client may retry once the rounded-up wait it was given has passed.
            due = now + whole_ms(wait) / 1000
            self.hints.told(identity, due, now)
            if key and self.shares_hints:
                return self.hints.share(key, identity, due)
        return None

    def early(self, name: str, identity: Identity) -> float:
        """Seconds this request came before its retry time (0.0: it did not); counted."""
        early = self.hints.arrived(identity, self.clock())
        if early > 0:
            self.counters.early_retries[name] += 1
        return early

    def early_elsewhere(self, name: str, due: float) -> float:
        """Seconds this request came before the retry time another replica gave it (`due`, from
        the shared windows; 0.0: none); counted."""
        early = due - self.clock() if due else 0.0
        if early > GRACE:
            self.counters.early_retries[name] += 1
            return early
        return 0.0

    async def reset(self) -> None:
        if isinstance(self.store, RedisWindows):
            await self.store.reset()
        else:
            self.store.reset()
        self.local.reset()
        self.hints.clear()
        if self.hints.bag is not None and self.hints.sharing:
            await self.hints.bag.clear()
