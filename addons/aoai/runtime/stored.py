"""Stored responses of the Responses API: what `retrieve`, `input_items` and a later request's
`previous_response_id` read. Only the newest are kept, at most RESPONSES_STORED of them and
RESPONSES_STORED_MAX_BYTES together, so a long load test (or a client sending large images)
holds bounded memory; an older id then answers as an unknown one does, and so does the id of
a response too large for the whole budget, which is never kept.

With a Redis (runtime/shared.py), every response is also written to a shared bag under the
same bounds, and the shared copy is the truth: a replica reads it (`fetch`) before it answers
for a response, so a response made, cancelled or deleted on one replica is seen so on every
other. The local copy is what serves while Redis is away; what was stored meanwhile is
written to Redis when it is back (`catch_up`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .background import BackgroundRun
from .shared import Bag, pack, unpack

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SHARED_TTL_S = 30 * 86_400.0  # Azure keeps stored responses for 30 days
ITEMS_PER_RESPONSE = 8  # reasoning items indexed per kept response, on average, in the shared index
ITEM_ENTRY_BYTES = 64  # an item id and its response id


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]  # the response object as it was answered
    input_items: list[dict[str, Any]]  # this request's input, as items with ids
    conversation: list[dict[str, Any]]  # the earlier turns, this input and this output: what a follow-up continues
    # What it holds, in bytes, as measured when it was made (stages/generate.py, stored_size): counted
    # against RESPONSES_STORED_MAX_BYTES. It includes the earlier turns it carries, so the
    # budget is never smaller than what the kept responses hold together.
    size: int = 0
    run: BackgroundRun | None = None  # a background response: its status and events by the clock

    def to_json(self) -> dict[str, Any]:
        return {
            "body": self.body,
            "inputItems": self.input_items,
            "conversation": self.conversation,
            "size": self.size,
            "run": self.run.to_json() if self.run is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredResponse:
        run = data.get("run")
        return cls(
            data["body"],
            data["inputItems"],
            data["conversation"],
            int(data["size"]),
            BackgroundRun.from_json(run) if run is not None else None,
        )

    def reasoning_ids(self) -> list[str]:
        """The ids of its reasoning output items: what a later request may give back by id alone."""
        return [
            str(item["id"])
            for item in self.body.get("output") or ()
            if isinstance(item, dict) and item.get("type") == "reasoning" and item.get("id")
        ]


class ResponseStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()  # extensions may call from other threads
        self.bag: Bag | None = None  # the shared copies, when replicas share a Redis
        self.item_bag: Bag | None = None  # reasoning item id -> the response holding it, shared
        self._unshared: OrderedDict[str, None] = OrderedDict()  # stored while Redis was away

    def share_through(self, bag: Bag | None, item_bag: Bag | None = None) -> None:
        """Keep shared copies in `bag` (None: this process alone), bounded as this store is."""
        self.bag, self.item_bag = bag, item_bag
        self.bounds_changed()

    def bounds_changed(self) -> None:
        if self.bag is not None:
            self.bag.max_bytes, self.bag.max_count = self.max_bytes, max(self.capacity, 1)
        if self.item_bag is not None:
            self.item_bag.max_count = max(self.capacity, 1) * ITEMS_PER_RESPONSE
            self.item_bag.max_bytes = self.item_bag.max_count * ITEM_ENTRY_BYTES

    @property
    def shared(self) -> bool:
        return self.bag is not None and self.bag.enabled

    def put(self, stored: StoredResponse) -> bool:
        """Keep a response (the oldest leave to make room); False when it alone is larger than
        the whole budget, so it is not kept."""
        key = stored.body["id"]
        with self._lock:
            self._drop(key)
            if stored.size > self.max_bytes:
                logger.info(
                    "response %s not stored: its %d bytes are more than RESPONSES_STORED_MAX_BYTES (%d)",
                    key,
                    stored.size,
                    self.max_bytes,
                )
                return False
            self._items[key] = stored
            self.bytes += stored.size
            while self._items and (len(self._items) > max(self.capacity, 0) or self.bytes > self.max_bytes):
                self.bytes -= self._items.popitem(last=False)[1].size
            return key in self._items

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            return self._items.get(response_id)

    def missing_items(self, item_ids: set[str]) -> set[str]:
        """Which of these output item ids no stored response holds (reasoning items given back
        by id alone). One scan of the store for a request however many ids it names; only
        such rare requests pay for it."""
        missing = set(item_ids)
        for stored in self._items.values():
            if not missing:
                break
            for item in stored.body.get("output") or ():
                if isinstance(item, dict):
                    missing.discard(item.get("id"))
        return missing

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._drop(response_id)

    def _drop(self, response_id: str) -> bool:
        gone = self._items.pop(response_id, None)
        if gone is None:
            return False
        self.bytes -= gone.size
        return True

    def __len__(self) -> int:
        return len(self._items)

    # --- the shared copies ------------------------------------------------------------------

    async def share(self, stored: StoredResponse) -> None:
        """Write `stored` to the shared bag (kept locally already); remembered for later when
        Redis cannot take it now."""
        bag, items = self.bag, self.item_bag
        if bag is None or not bag.enabled:
            return
        key = stored.body["id"]
        if not await bag.put(key, pack(stored.to_json())):
            if stored.size <= self.max_bytes and not bag.shared.up:
                self._unshared[key] = None
                while len(self._unshared) > max(self.capacity, 1):
                    self._unshared.popitem(last=False)
            return
        if items is not None:
            for item_id in stored.reasoning_ids():
                await items.put(item_id, key.encode())

    async def fetch(self, response_id: str) -> StoredResponse | None:
        """The response as the shared bag holds it (kept locally for this request), or the
        local copy while Redis is away."""
        bag = self.bag
        if not response_id or bag is None or not bag.enabled or not bag.shared.up:
            return self.get(response_id)
        data = await bag.get(response_id)
        if not bag.shared.up:  # lost just now
            return self.get(response_id)
        with self._lock:
            if data is None:
                # Deleted or evicted elsewhere: gone here too, unless it waits to be shared.
                if response_id not in self._unshared:
                    self._drop(response_id)
                return self._items.get(response_id)
        try:
            stored = StoredResponse.from_json(unpack(data))
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("shared response %s could not be read (%s); using this replica's copy", response_id, e)
            return self.get(response_id)
        self.put(stored)
        return stored

    async def fetch_items(self, item_ids: set[str]) -> None:
        """Bring here the shared responses holding these reasoning items, when this replica
        holds none of them, so `missing_items` finds them."""
        items = self.item_bag
        if items is None or not items.enabled:
            return
        for response_id in {await items.get(i) for i in self.missing_items(item_ids)} - {None}:
            await self.fetch(response_id.decode() if isinstance(response_id, bytes) else str(response_id))

    async def remove(self, response_id: str) -> bool:
        """Delete it here and from the shared bag; whether either held it."""
        here = self.delete(response_id)
        with self._lock:
            self._unshared.pop(response_id, None)
        there = await self.bag.delete(response_id) if self.bag is not None and self.bag.enabled else False
        return here or there

    async def shared_usage(self) -> dict[str, int] | None:
        """What Redis holds of the shared responses (count, bytes); None without one or while it is away."""
        bag = self.bag
        return await bag.usage() if bag is not None and bag.enabled else None

    async def catch_up(self) -> None:
        """Redis is back: share what was stored while it was away (what this store still holds)."""
        while self._unshared:
            key, _ = self._unshared.popitem(last=False)
            stored = self.get(key)
            if stored is not None:
                await self.share(stored)
            if self.bag is None or not self.bag.shared.up:
                return

    def usage(self) -> dict[str, Any]:
        """For /++/limits: what the store holds and may hold."""
        return {"count": len(self._items), "maxCount": self.capacity, "bytes": self.bytes, "maxBytes": self.max_bytes}
