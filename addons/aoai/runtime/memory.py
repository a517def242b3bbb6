"""Memory that large requests held goes back to the system soon after they end.

mitmproxy's layers and their contexts refer to each other, so a finished flow (its bodies,
the parsed body the stages made of it) is freed by Python's cycle collector, not when its
last use ends. Small flows add up to collections often enough; a 6 MiB upload counts as
one allocation, so dozens of them could wait together for the next full collection (+160 MiB
for 24 Responses requests carrying 5 MiB images). `Reclaimer` collects once large flows
have ended, at most a small share of the time.

glibc's malloc also raises its mmap threshold to the size of each large block freed (up to
32 MiB), after which blocks of that size come from heaps that rarely shrink: freed bodies
stay resident. A fixed threshold keeps each large block mapped on its own, so freeing it
returns it at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time

logger = logging.getLogger(__name__)

KiB, MiB = 1024, 1024 * 1024

# A flow whose bodies together reach this is worth a collection once it has ended.
LARGE_FLOW_BYTES = 1 * MiB
# Ended large flows waiting for the collector past this are collected at once, not later.
PENDING_MAX_BYTES = 16 * MiB
# Collections take at most this share of the time (after one that took 2 ms, none for 20 ms).
MAX_SHARE = 0.1

# Blocks this large or larger are mapped on their own, and returned when freed.
MMAP_THRESHOLD_BYTES = 256 * KiB
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold, so freed large blocks leave the process at once; False where
    the C library is not glibc (musl, macOS: their allocators return large blocks anyway)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


class Reclaimer:
    """Counts the bytes of large flows that ended and says when to collect them."""

    def __init__(self, clock=time.monotonic, collect=gc.collect):
        self.clock = clock
        self._collect = collect
        self.pending = 0  # bytes of large flows ended since the last collection
        self.collections = 0
        self.not_before = 0.0  # no collection before this (the share of time they may take)

    def ended(self, size: int) -> bool:
        """A flow holding `size` bytes of bodies ended; whether to collect now (too much waits)."""
        if size < LARGE_FLOW_BYTES:
            return False
        self.pending += size
        return self.pending > PENDING_MAX_BYTES and self.allowed()

    def arriving(self, size: int) -> bool:
        """A request declaring a body of `size` bytes arrives: collect first what ended before."""
        return size >= LARGE_FLOW_BYTES and self.pending > 0 and self.allowed()

    def allowed(self) -> bool:
        return self.clock() >= self.not_before

    def collect(self, still_held: int = 0) -> None:
        """Collect now; `still_held`: bytes of a flow that has not ended yet (collected next time)."""
        started = self.clock()
        self._collect()
        took = self.clock() - started
        self.pending = still_held
        self.collections += 1
        self.not_before = started + took / MAX_SHARE
        if took > 0.02:
            logger.debug("collected the memory of ended large requests in %.0f ms", took * 1000)
