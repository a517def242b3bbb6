"""A throwaway `redis-server` on a free loopback port, for the shared rate-limit tests.

Import the fixture into a test module: `from redis_server import redis_url  # noqa: F401`.
The tests skip (saying why) where the binary is missing; .ci/run installs it, so CI runs them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simulator_process import start_redis, stop


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    started = start_redis()
    if started is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    process, url = started
    try:
        yield url
    finally:
        stop(process)
