"""Images answered as URLs: kept in memory for a while and served back at /++/images/{name},
as Azure serves generated images from a signed blob URL that expires.

Bounded two ways: an image expires after `ttl` seconds, and past `max_bytes`
(IMAGES_STORED_MAX_BYTES) the oldest images go first, so a long load test cannot grow the
process without end. An image larger than the whole budget is not kept: its URL answers 404
from the start, as an expired one does.

With SIMULATOR_REDIS_URL, each image is also written to a shared bag under the same bounds,
so any replica serves its URL (`share` before the URL is answered, `fetch` to read it back);
images made while Redis was away are written once it is back, as long as they are still here.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .shared import Bag, Shared, pack, unpack

DEFAULT_TTL = 24 * 3600.0  # Azure keeps generated images for 24 hours
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    content_type: str
    expires_at: float  # time.time()


def image_value(image: StoredImage) -> bytes:
    """An image as a shared value: the length of a packed header (content type, expiry), the
    header, then the picture's bytes as they are."""
    header = pack({"type": image.content_type, "expires": image.expires_at})
    return struct.pack(">I", len(header)) + header + image.data


def image_of(value: bytes) -> StoredImage | None:
    """The image a shared value holds; None when it is not one."""
    try:
        (size,) = struct.unpack_from(">I", value)
        header = unpack(value[4 : 4 + size])
        return StoredImage(value[4 + size :], str(header["type"]), float(header["expires"]))
    except (struct.error, ValueError, KeyError, TypeError):
        return None


class ImageStore:
    def __init__(
        self, ttl: float = DEFAULT_TTL, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time
    ):
        self.ttl, self.max_bytes, self.clock = ttl, max_bytes, clock
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()  # long answers are made in worker threads
        self.bag: Bag | None = None  # the shared copy, once `share_through` is called
        self._unshared: set[str] = set()  # kept here while Redis was away: written when it is back

    def share_through(self, shared: Shared) -> None:
        """Write images to `shared` too (when it names a Redis), and catch up when it returns."""
        self.bag = Bag(shared, "images", self.ttl, self.max_bytes)
        shared.on_return(self.catch_up)

    async def share(self, name: str) -> None:
        """Write a kept image to the shared bag; done before its URL is answered, so any
        replica can serve it at once. Nothing when nothing is shared."""
        bag, image = self.bag, self.get(name)
        if bag is None or not bag.enabled or image is None:
            return
        bag.ttl_s, bag.max_bytes = self.ttl, self.max_bytes
        if not await bag.put(name, image_value(image)):
            with self._lock:
                if name in self._images:
                    self._unshared.add(name)

    async def fetch(self, name: str) -> StoredImage | None:
        """The image from this replica's memory, else from the shared bag; None when expired
        or unknown."""
        image = self.get(name)
        if image is not None or self.bag is None or not self.bag.enabled:
            return image
        value = await self.bag.get(name)
        image = image_of(value) if value is not None else None
        return image if image is not None and image.expires_at > self.clock() else None

    async def catch_up(self) -> None:
        """Write what was kept while Redis was away and is still here."""
        with self._lock:
            names, self._unshared = list(self._unshared), set()
        for name in names:
            await self.share(name)

    async def shared_usage(self) -> dict[str, int] | None:
        return await self.bag.usage() if self.bag is not None and self.bag.enabled else None

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
        self._unshared.discard(name)
