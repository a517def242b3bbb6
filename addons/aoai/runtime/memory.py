"""Memory that large requests held goes back to the system soon after they end.

mitmproxy's layers and their contexts refer to each other, so a finished flow (its bodies,
and what the stages parsed of them) is freed by Python's cycle collector, not when its last
use ends. The collector runs after so many new objects, not bytes: a 6.7 MiB request is a
few hundred objects, so dozens of them waited together for a full collection (+160 MiB for
24 Responses requests carrying 5 MiB images). `Reclaimer` says when to collect instead: once
large flows have ended, for at most a small share of the time (a full collection walks every
object made since start-up, ~1 ms per 15,000).

glibc's malloc also raises its mmap threshold to the size of each large block freed (up to
32 MiB), after which blocks of that size come from heaps that rarely shrink, so freed
bodies stayed resident. A fixed threshold keeps each large block mapped on its own: freeing
it returns it at once.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

KiB, MiB = 1024, 1024 * 1024

# A flow whose bodies together reach this is counted once it has ended; smaller ones are
# left to Python's own schedule (their objects add up to a collection soon enough).
LARGE_FLOW_BYTES = 256 * KiB
# A large request arriving after this much ended is preceded by a collection.
BEFORE_ARRIVAL_BYTES = 4 * MiB
# Past this, the flows that ended are collected as the next one ends.
PENDING_MAX_BYTES = 16 * MiB
# Collections take at most this share of the time (after one of 1 ms, none for 20 ms).
MAX_SHARE = 0.05

# Blocks this large or larger are mapped on their own, and returned when freed.
MMAP_THRESHOLD_BYTES = 256 * KiB
_M_MMAP_THRESHOLD = -3  # mallopt's parameter (glibc's malloc.h)


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold, so freed large blocks leave the process at once; False where
    the C library is not glibc (musl and macOS return large blocks anyway)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no "this process" library
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


class Reclaimer:
    """Counts the bytes of large flows that ended, and collects when they are worth it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, collect: Callable[[], object] = gc.collect):
        self.clock = clock
        self._collect = collect
        self.pending = 0  # bytes of large flows that ended since the last collection
        self.collections = 0
        self.not_before = 0.0  # no collection before this (the share of time they may take)

    def ended(self, size: int) -> bool:
        """A flow holding `size` bytes of bodies ended; whether to collect now (too much waits)."""
        if size < LARGE_FLOW_BYTES:
            return False
        self.pending += size
        return self.pending > PENDING_MAX_BYTES and self.allowed()

    def arriving(self, size: int) -> bool:
        """A request declaring a body of `size` bytes arrives: whether to collect first what
        ended before it, so the two are never held together."""
        return size >= LARGE_FLOW_BYTES and self.pending >= BEFORE_ARRIVAL_BYTES and self.allowed()

    def allowed(self) -> bool:
        return self.clock() >= self.not_before

    def collect(self, still_held: int = 0) -> float:
        """Collect now; `still_held`: bytes of a flow that has not ended yet, counted for the
        next time. Returns the seconds it took."""
        started = self.clock()
        self._collect()
        took = self.clock() - started
        self.pending = still_held
        self.collections += 1
        self.not_before = started + took / MAX_SHARE
        if took > 0.02:
            logger.info("collecting the memory of ended large requests took %.0f ms", took * 1000)
        return took
