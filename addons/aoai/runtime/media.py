"""Images answered as URLs: kept in memory for a while and served back at /++/images/{name},
as Azure serves generated images from a signed blob URL that expires.

Bounded two ways: an image expires after `ttl` seconds, and past `max_bytes`
(IMAGES_STORED_MAX_BYTES) the oldest images go first, so a long load test cannot grow the
process without end. An image larger than the whole budget is not kept: its URL answers 404
from the start, as an expired one does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL = 24 * 3600.0  # Azure keeps generated images for 24 hours
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    content_type: str
    expires_at: float  # time.time()


class ImageStore:
    def __init__(
        self, ttl: float = DEFAULT_TTL, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time
    ):
        self.ttl, self.max_bytes, self.clock = ttl, max_bytes, clock
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()  # long answers are made in worker threads

    def put(self, data: bytes, content_type: str, extension: str) -> tuple[str, float]:
        """Keep an image; its file name and when it expires."""
        name = f"{os.urandom(16).hex()}.{extension}"
        image = StoredImage(data, content_type, self.clock() + self.ttl)
        if len(data) > self.max_bytes:
            logger.warning(
                "image %s not kept: its %d bytes are more than IMAGES_STORED_MAX_BYTES (%d); its URL answers 404",
                name,
                len(data),
                self.max_bytes,
            )
            return name, image.expires_at
        with self._lock:
            self._expire()
            self._images[name] = image
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._images)))
        return name, image.expires_at

    def get(self, name: str) -> StoredImage | None:
        with self._lock:
            image = self._images.get(name)
            if image is None:
                return None
            if image.expires_at <= self.clock():
                self._drop(name)
                return None
            return image

    def __len__(self) -> int:
        return len(self._images)

    def usage(self) -> dict[str, Any]:
        """For /++/limits: what the store holds and may hold."""
        return {"count": len(self._images), "bytes": self.bytes, "maxBytes": self.max_bytes}

    def _expire(self) -> None:
        now = self.clock()
        while self._images:
            name, oldest = next(iter(self._images.items()))
            if oldest.expires_at > now:
                break
            self._drop(name)

    def _drop(self, name: str) -> None:
        self.bytes -= len(self._images.pop(name).data)
