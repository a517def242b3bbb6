"""The queues in front of deployments with limited concurrency (`maxConcurrentRequests`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Deployment


class Gates:
    """Per-deployment queues for `maxConcurrentRequests`: requests beyond it wait their turn,
    so time to first token grows under load as on a busy deployment."""

    def __init__(self) -> None:
        self._gates: dict[tuple[str, int], asyncio.Semaphore] = {}

    def gate(self, deployment: Deployment) -> asyncio.Semaphore | None:
        limit = deployment.max_concurrent_requests
        if not limit:
            return None
        key = (deployment.name, limit)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = asyncio.Semaphore(limit)
        return gate
