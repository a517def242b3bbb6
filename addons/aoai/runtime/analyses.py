"""Document Intelligence analyses shared between replicas: the docintel result store, whose
analyses are also written to a shared bag (SIMULATOR_REDIS_URL) before the 202 that names
them is answered, so a poll reaching any replica finds them.

An analysis is a few numbers (its result is rebuilt on each poll), and its times are wall
clock (time.time), so every replica judges "running" or "succeeded" alike.
"""

from __future__ import annotations

import dataclasses

from ..docintel.layout import Analysis
from ..docintel.service import MAX_RESULTS, RESULTS_MAX_BYTES, ResultStore
from .shared import Bag, Shared, pack, unpack

SHARED_TTL_S = 24 * 3600.0  # Azure keeps analyze results for 24 hours


def analysis_value(analysis: Analysis) -> bytes:
    return pack(dataclasses.asdict(analysis))


def analysis_of(value: bytes) -> Analysis | None:
    try:
        return Analysis(**unpack(value))
    except (ValueError, TypeError):
        return None


class SharedResults(ResultStore):
    """The result store of this replica, and the shared copy of each analysis it makes."""

    def __init__(self, limit: int = MAX_RESULTS, max_bytes: int = RESULTS_MAX_BYTES) -> None:
        super().__init__(limit, max_bytes)
        self.bag: Bag | None = None
        self._unshared: set[str] = set()  # made while Redis was away: written when it is back

    @property
    def sharing(self) -> bool:
        return self.bag is not None and self.bag.enabled

    def share_through(self, shared: Shared) -> None:
        self.bag = Bag(shared, "analyses", SHARED_TTL_S, self.max_bytes, self.limit)
        shared.on_return(self.catch_up)

    async def share(self, result_id: str) -> None:
        """Write a kept analysis to the shared bag (nothing when nothing is shared)."""
        bag, analysis = self.bag, self.get(result_id)
        if bag is None or not bag.enabled or analysis is None:
            return
        bag.max_bytes, bag.max_count = self.max_bytes, self.limit
        if not await bag.put(result_id, analysis_value(analysis)):
            self._unshared.add(result_id)
            if len(self._unshared) > self.limit:  # only those still kept are worth writing later
                self._unshared = {name for name in self._unshared if self.get(name) is not None}

    async def fetch(self, result_id: str) -> Analysis | None:
        """The analysis from this replica's memory, else from the shared bag."""
        analysis = self.get(result_id)
        if analysis is not None or self.bag is None or not self.bag.enabled:
            return analysis
        value = await self.bag.get(result_id)
        return analysis_of(value) if value is not None else None

    async def catch_up(self) -> None:
        names, self._unshared = self._unshared, set()
        for name in names:
            await self.share(name)

    async def shared_usage(self) -> dict[str, int] | None:
        return await self.bag.usage() if self.bag is not None and self.bag.enabled else None
