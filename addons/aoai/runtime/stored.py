"""Stored responses of the Responses API: what `retrieve`, `input_items` and a later request's
`previous_response_id` read. Only the newest are kept, at most RESPONSES_STORED of them and
RESPONSES_STORED_MAX_BYTES together, so a long load test (or a client sending large images)
holds bounded memory; an older id then answers as an unknown one does, and so does the id of
a response too large for the whole budget, which is never kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .background import BackgroundRun

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 1000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


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


class ResponseStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()  # extensions may call from other threads

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

    def usage(self) -> dict[str, Any]:
        """For /++/limits: what the store holds and may hold."""
        return {"count": len(self._items), "maxCount": self.capacity, "bytes": self.bytes, "maxBytes": self.max_bytes}
