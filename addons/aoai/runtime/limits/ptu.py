"""Provisioned throughput (PTU): Azure's utilization model, as plain arithmetic.

Azure's model for provisioned deployments ("What is provisioned throughput?", how the
service decides when to send a 429): a leaky bucket. A request is refused while the
deployment's utilization is above 100 %, with the time until it is back at 100 %; otherwise
its estimated cost (prompt tokens plus the most it may generate, output tokens weighted as
the model's) is added, so one admitted request may take the utilization a little above
100 %. The level drains continuously at the deployment's capacity. Azure does not publish
the bucket's size: here it holds one minute of capacity, so an idle deployment takes a
burst of a minute's worth at once and a busy one is held to exactly its capacity.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .quota import GRACE

PTU_BUCKET_SECONDS = 60.0
UTILIZATION = "utilization"  # the reason of a provisioned deployment's 429
UTILIZATION_HEADER = "azure-openai-deployment-utilization"


@dataclass(frozen=True)
class Capacity:
    """A provisioned deployment's throughput, in input-token equivalents."""

    per_minute: float  # PTUs × input tokens per minute per PTU
    output_weight: float  # input tokens one output token counts as

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0

    @property
    def bucket(self) -> float:
        """What 100 % utilization holds."""
        return self.per_minute * PTU_BUCKET_SECONDS / 60.0

    def cost(self, prompt_tokens: int, output_tokens: int) -> int:
        """A request's estimated cost: its prompt plus its weighted output allowance."""
        return prompt_tokens + math.ceil(output_tokens * self.output_weight)


@functools.lru_cache(maxsize=1024)
def ptu_capacity(ptu: int, input_tpm_per_ptu: int, output_weight: float) -> Capacity:
    return Capacity(float(ptu * input_tpm_per_ptu), float(output_weight))


@dataclass(slots=True)
class Fill:
    """A provisioned deployment's answer for one request."""

    allowed: bool
    utilization: float  # level / bucket: after this request when admitted, else as it stands
    retry_after: float = 0.0  # seconds until the utilization is back at 100 %
    at: float = 0.0  # when the bucket was checked, in the store's clock
    hinted: float = 0.0  # shared buckets: when another replica told this client to retry (0.0: it did not)


def drained(level: float, since: float, now: float, per_second: float) -> float:
    return max(0.0, level - max(0.0, now - since) * per_second)


def admit(level: float, capacity: Capacity, cost: int) -> tuple[bool, float, float]:
    """(admitted, the level after, seconds to wait) for a bucket drained to `level` now.

    A client that waits exactly the time it was told finds the level at 100 % and gets in
    (GRACE absorbs float noise). The Redis script (redis.py) does the same arithmetic."""
    wait = (level - capacity.bucket) / capacity.per_second
    if wait > GRACE:
        return False, level, wait
    return True, level + cost, 0.0
