"""Background tasks the simulator starts and does not await: held here until they end.

The event loop keeps only weak references to tasks, so a task nobody holds may be collected
before it finishes (and its exception is then never logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)

_RUNNING: set[asyncio.Future[Any]] = set()


def background(work: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> asyncio.Future[Any]:
    """Run `work` on the running loop without awaiting it; it is held until done and an
    exception it ends with is logged."""
    task = asyncio.ensure_future(work)
    _RUNNING.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Future[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("A background task failed: %r", error)


def running() -> int:
    """How many background tasks are still held (for tests)."""
    return len(_RUNNING)
