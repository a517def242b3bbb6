"""Sliding windows and provisioned buckets kept in this process: the store a single simulator
uses when no Redis URL is set."""

from __future__ import annotations

import math
from collections import deque

from .ptu import Capacity, Fill, admit, drained
from .quota import GRACE, TOKEN_WINDOW, Quota, Verdict, verdict


class SlidingWindow:
    """Amounts added over time; an amount stops counting `span` seconds after it was added.

    A deque of (time, amount) and a running total: adding and expiring cost O(1) amortized,
    and only a refusal walks the oldest entries to find when enough of them will have left."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, span: float) -> None:
        entries, cutoff = self.entries, now - span + GRACE
        while entries and entries[0][0] <= cutoff:
            self.total -= entries.popleft()[1]

    def wait_for(self, amount: int, limit: int, now: float, span: float) -> float:
        """Seconds until `amount` more fits under `limit` (0.0: it fits now). Call after expire."""
        excess = self.total + amount - limit
        if excess <= 0:
            return 0.0
        freed = 0
        for at, size in self.entries:
            freed += size
            if freed >= excess:
                return max(at + span - now, 1e-6)  # over the limit is never "fits now"
        return math.inf  # larger than the limit itself

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.total += amount


class _Pair:
    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.tokens = SlidingWindow()
        self.requests = SlidingWindow()


class MemoryWindows:
    """Windows of this process only, keyed by deployment (or other limited thing)."""

    shared = False

    def __init__(self) -> None:
        self.pairs: dict[str, _Pair] = {}
        self.buckets: dict[str, tuple[float, float]] = {}  # provisioned deployments: (level, when)

    def check(self, key: str, quota: Quota, cost: int, now: float) -> Verdict:
        """Admit the request and count it, or say how long until it would fit."""
        return self._judge(key, quota, cost, now, count=True)

    def peek(self, key: str, quota: Quota, cost: int, now: float) -> Verdict:
        """Whether `cost` tokens and one request would fit now, counting nothing."""
        if key not in self.pairs:
            return verdict(quota, 0.0, 0.0, 0, 0, True, now)
        return self._judge(key, quota, cost, now, count=False)

    def _judge(self, key: str, quota: Quota, cost: int, now: float, count: bool) -> Verdict:
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = _Pair()
        token_wait = request_wait = 0.0
        tokens, requests = pair.tokens, pair.requests
        if quota.tokens:
            tokens.expire(now, TOKEN_WINDOW)
            token_wait = tokens.wait_for(cost, quota.tokens, now, TOKEN_WINDOW)
        if quota.requests:
            requests.expire(now, quota.request_window)
            request_wait = requests.wait_for(1, quota.requests, now, quota.request_window)
        admitted = token_wait == 0.0 and request_wait == 0.0
        if admitted and count:
            if quota.tokens:
                tokens.add(now, cost)
            if quota.requests:
                requests.add(now, 1)
        return verdict(quota, token_wait, request_wait, tokens.total, requests.total, admitted, now)

    def charge(self, key: str, quota: Quota, cost: int, now: float) -> Verdict:
        """Count `cost` tokens used (not a request), whatever room is left: what an answer
        that was already admitted turned out to use."""
        pair = self.pairs.get(key)
        if pair is None:
            pair = self.pairs[key] = _Pair()
        pair.tokens.expire(now, TOKEN_WINDOW)
        if quota.tokens and cost > 0:
            pair.tokens.add(now, cost)
        pair.requests.expire(now, quota.request_window)
        return verdict(quota, 0.0, 0.0, pair.tokens.total, pair.requests.total, True, now)

    def usage(self, key: str, quota: Quota, now: float) -> tuple[int, int]:
        """Tokens and requests counted now in the key's windows."""
        pair = self.pairs.get(key)
        if pair is None:
            return 0, 0
        pair.tokens.expire(now, TOKEN_WINDOW)
        pair.requests.expire(now, quota.request_window)
        return pair.tokens.total, pair.requests.total

    def fill(self, key: str, capacity: Capacity, cost: int, now: float) -> Fill:
        """A provisioned deployment's bucket: admit the request and add its cost, or say when
        the utilization will be back at 100 %."""
        level, since = self.buckets.get(key, (0.0, now))
        level = drained(level, since, now, capacity.per_second)
        admitted, level, wait = admit(level, capacity, cost)
        self.buckets[key] = (level, now)
        return Fill(admitted, level / capacity.bucket, wait, now)

    def utilization(self, key: str, capacity: Capacity, now: float) -> float:
        level, since = self.buckets.get(key, (0.0, now))
        return drained(level, since, now, capacity.per_second) / capacity.bucket

    def reset(self) -> None:
        self.pairs.clear()
        self.buckets.clear()
