"""Stored responses of the Responses API: what `retrieve`, `input_items` and a later request's
`previous_response_id` read. Only the newest are kept (RESPONSES_STORED), so a long load test
holds bounded memory; an older id then answers as an unknown one does.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_CAPACITY = 1000


@dataclass(frozen=True)
class StoredResponse:
    body: dict  # the response object as it was answered
    input_items: list[dict]  # this request's input, as items with ids
    conversation: list[dict]  # the earlier turns, this input and this output: what a follow-up continues


class ResponseStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._lock = threading.Lock()  # extensions may call from other threads

    def put(self, stored: StoredResponse) -> None:
        with self._lock:
            self._items[stored.body["id"]] = stored
            self._items.move_to_end(stored.body["id"])
            while len(self._items) > max(self.capacity, 0):
                self._items.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._items.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._items)
