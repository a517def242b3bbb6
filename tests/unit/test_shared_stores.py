"""Replicas sharing one Redis behave as one: an image made on one is served by another, an
analysis made on one is polled on another, the prompt cache one filled is seen by another,
and a client told to wait by one is caught retrying early on another. The shared copies
keep the local bounds, and without Redis each replica serves from its own memory."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
import redis.asyncio
from mitmproxy.test import taddons
from redis_server import redis_url  # noqa: F401
from unit_support import admit, chat_path, make_config, make_flow, make_services

from aoai.docintel import layout
from aoai.openai import catalogue
from aoai.runtime import limits, media, prompt_cache
from aoai.runtime.analyses import SharedResults, analysis_of, analysis_value
from aoai.runtime.config import Deployment
from aoai.stages import metrics as metrics_stage
from aoai.stages.generate import Generate
from aoai.stages.management import Management
from aoai.stages.ratelimit import Limits

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens there
_prefixes = itertools.count()


class Replica:
    """One simulator process's services and the stages a test drives, pointed at `url`."""

    def __init__(self, url: str, prefix: str, **config) -> None:
        self.config = make_config(simulator_redis_url=url, **config)
        self.services = make_services(self.config)
        self.services.shared.prefix = prefix
        self.generate = Generate(self.config, self.services)
        self.management = Management(self.config, self.services)

    async def answer(self, flow):
        """The flow through the checks, then Generate, then Management, as the stack runs them."""
        admit(flow, self.config, self.services)
        for stage in (self.generate, self.management):
            if flow.response is None:
                pending = stage.request(flow)
                if pending is not None:
                    await pending
        return flow.response

    async def close(self) -> None:
        await self.services.shared.close()


def pair(url: str, **config) -> tuple[Replica, Replica]:
    prefix = f"t-stores-{next(_prefixes)}:"
    return Replica(url, prefix, **config), Replica(url, prefix, **config)


def run(coro):
    return asyncio.run(coro)


def image_request():
    return make_flow(
        "POST",
        "/openai/deployments/dall-e-3/images/generations?api-version=2024-10-21",
        {"prompt": "A red bicycle", "size": "1024x1024", "response_format": "url"},
    )


def download(url: str):
    return make_flow("GET", url.partition("//")[2].partition("/")[2].join(["/", ""]), key=None)


# --- images --------------------------------------------------------------------------------


def test_an_image_made_on_one_replica_is_served_by_another(redis_url):  # noqa: F811
    async def go():
        a, b = pair(redis_url)
        made = await a.answer(image_request())
        assert made.status_code == 200, made.content
        url = json.loads(made.content)["data"][0]["url"]
        served = await b.answer(download(url))
        assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
        assert served.headers["content-type"] == "image/png"
        assert len(b.services.images) == 0  # read from Redis, not copied into B's memory
        missing = await b.answer(download(url.replace(".png", "0.png")))
        assert missing.status_code == 404
        await a.close()
        await b.close()

    run(go())


def test_an_image_value_keeps_its_type_expiry_and_bytes():
    image = media.StoredImage(b"\x00\x01raw bytes", "image/jpeg", 1_700_000_123.5)
    value = media.image_value(image)
    assert value.endswith(image.data) and b"base64" not in value
    assert media.image_of(value) == image
    assert media.image_of(b"junk") is None


def test_shared_images_keep_the_image_bound(redis_url):  # noqa: F811
    async def go():
        a, b = pair(redis_url)
        for r in (a, b):
            r.services.images.max_bytes = 2500
        names = []
        for _ in range(4):
            name, _ = a.services.images.put(bytes(1000), "image/png", "png")
            await a.services.images.share(name)
            names.append(name)
        usage = await b.services.images.shared_usage()
        assert usage["bytes"] <= 2500 and usage["count"] == 2
        assert await b.services.images.fetch(names[0]) is None  # the oldest left Redis for room
        assert (await b.services.images.fetch(names[-1])).data == bytes(1000)
        await a.close()
        await b.close()

    run(go())


# --- Document Intelligence -------------------------------------------------------------------


def analyze_request():
    flow = make_flow(
        "POST",
        "/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30",
        {"urlSource": "https://example.com/a.pdf"},
    )
    flow.request.headers["host"] = "sim.example"
    return flow


def test_an_analysis_made_on_one_replica_is_polled_on_another(redis_url):  # noqa: F811
    async def go():
        a, b = pair(redis_url)
        made = await a.answer(analyze_request())
        assert made.status_code == 202
        location = made.headers["Operation-Location"]
        poll = make_flow("GET", "/" + location.partition("//")[2].partition("/")[2])
        polled = await b.answer(poll)
        assert polled.status_code == 200, polled.content
        assert json.loads(polled.content)["status"] == "succeeded"  # latency off: ready at once
        assert len(b.services.documents) == 0
        gone = make_flow("GET", poll.request.path.replace("analyzeResults/", "analyzeResults/0"))
        assert (await b.answer(gone)).status_code == 404
        await a.close()
        await b.close()

    run(go())


def test_an_analysis_keeps_its_wall_clock_times_in_redis():
    analysis = layout.Analysis(
        "id",
        "documentintelligence",
        "prebuilt-read",
        "2024-11-30",
        "textElements",
        [1, 2],
        "inch",
        2**64 - 1,
        1.7e9,
        1.7e9 + 0.5,
    )
    assert analysis_of(analysis_value(analysis)) == analysis


def test_shared_analyses_keep_the_count_bound(redis_url):  # noqa: F811
    async def go():
        a, _ = pair(redis_url)
        store: SharedResults = a.services.documents
        store.limit = 2
        for n in range(3):
            analysis = layout.Analysis(
                f"r{n}", "documentintelligence", "prebuilt-read", "v", "textElements", [1], "inch", n, 1.0, 1.0
            )
            store.add(analysis)
            await store.share(analysis.result_id)
        assert (await store.shared_usage())["count"] == 2
        await a.close()

    run(go())


# --- prompt cache ----------------------------------------------------------------------------

LONG = {"messages": [{"role": "user", "content": "word " * 1500}], "max_tokens": 5}


def test_a_prompt_one_replica_saw_is_cached_on_another(redis_url):  # noqa: F811
    async def go():
        a, b = pair(redis_url)
        first = await a.answer(make_flow("POST", chat_path(), LONG))
        assert json.loads(first.content)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        second = await b.answer(make_flow("POST", chat_path(), LONG))
        cached = json.loads(second.content)["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert cached >= 1024 and cached % 128 == 0
        usage = await b.services.prompt_cache.shared_usage()
        assert usage["count"] == cached // 128 - 7 and usage["bytes"] == usage["count"] * prompt_cache.ENTRY_BYTES
        await a.close()
        await b.close()

    run(go())


def test_the_shared_prompt_cache_forgets_idle_entries_and_keeps_its_capacity(redis_url):  # noqa: F811
    async def go():
        a, _ = pair(redis_url)
        cache = a.services.prompt_cache
        cache.max_bytes = 5 * prompt_cache.ENTRY_BYTES
        first = cache.digests("d", list(range(2048)))  # 9 prefixes
        assert await cache.use_shared(first, 0, now=1000.0) == 0
        assert (await cache.shared_usage())["count"] == 5  # trimmed to the capacity
        assert await cache.use_shared(first, 0, now=1001.0) == 2048  # the longest prefixes stayed
        cache.idle_s = 10
        assert await cache.use_shared(first, 0, now=2000.0) == 0  # idle past 10 s: forgotten
        await a.close()

    run(go())


# --- early retries -------------------------------------------------------------------------

TIGHT = Deployment("tight", catalogue.MODELS["gpt-4o"], tokens_per_minute=1000, requests_per_minute=600)


class LimitedReplica:
    """A replica's Limits stage on Redis windows shared with the others."""

    def __init__(self, url: str, prefix: str) -> None:
        self.config = make_config(simulator_redis_url=url, deployments={"tight": TIGHT})
        self.services = make_services(self.config)
        self.services.shared.prefix = prefix
        self.limiter = self.services.limiter
        self.limiter.use(limits.RedisWindows.from_url(url, prefix=prefix))
        self.stage = Limits(self.config, self.limiter)
        self.stage.redis_url = url  # as if configured with it: the windows above stay

    async def send(self):
        flow = make_flow(
            "POST", chat_path("tight"), {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 400}
        )
        flow.request.headers["x-ms-client-request-id"] = "client-1"
        admit(flow, self.config, self.services)
        pending = self.stage.request(flow)
        if pending is not None:
            await pending
        return flow.response

    async def close(self) -> None:
        await self.limiter.store.close()
        await self.services.shared.close()


def test_an_early_retry_after_one_replicas_429_is_counted_on_another(redis_url):  # noqa: F811
    async def go():
        prefix = f"t-hints-{next(_prefixes)}:"
        a, b = LimitedReplica(redis_url, prefix), LimitedReplica(redis_url, prefix)
        with taddons.context(a.stage), taddons.context(b.stage):
            statuses = [(await a.send()) for _ in range(3)]
            assert [s.status_code if s else 200 for s in statuses] == [200, 200, 429]
            assert (await b.services.limiter.hints.shared_usage())["count"] == 1
            again = await b.send()  # at once: long before the retry-after
            assert again is not None and again.status_code == 429
            assert b.limiter.counters.early_retries["tight"] == 1
            assert not a.limiter.counters.early_retries
            # The hint was used: the retry after that is B's own 429's business, counted once more.
            await b.send()
            assert b.limiter.counters.early_retries["tight"] == 2
            assert not a.limiter.counters.early_retries
        await a.close()
        await b.close()

    run(go())


def test_shared_hints_keep_the_local_bound(redis_url):  # noqa: F811
    async def go():
        a = Replica(redis_url, f"t-hints-{next(_prefixes)}:")
        hints = a.services.limiter.hints
        hints.max_bytes = 3 * hints.ENTRY_BYTES
        for n in range(5):
            await hints.share("d:x", bytes([n]) * 16, 1e10)
        assert (await hints.shared_usage())["count"] == 3
        await a.close()

    run(go())


# --- Redis away ------------------------------------------------------------------------------


def test_without_redis_each_replica_serves_from_its_own_memory():
    async def go():
        a = Replica(NOWHERE, "t-away:")
        made = await a.answer(image_request())
        assert made.status_code == 200
        url = json.loads(made.content)["data"][0]["url"]
        assert (await a.answer(download(url))).status_code == 200
        analysis = await a.answer(analyze_request())
        assert analysis.status_code == 202
        poll = make_flow("GET", "/" + analysis.headers["Operation-Location"].partition("//")[2].partition("/")[2])
        assert (await a.answer(poll)).status_code == 200
        await a.answer(make_flow("POST", chat_path(), LONG))
        again = await a.answer(make_flow("POST", chat_path(), LONG))
        assert json.loads(again.content)["usage"]["prompt_tokens_details"]["cached_tokens"] >= 1024
        missing = await a.answer(download(url.replace(".png", "0.png")))
        assert missing.status_code == 404
        shared = a.services.shared
        assert not shared.up and shared.failures >= 1
        limits_view = await a.management.limits(make_flow("GET", "/++/limits"))
        stores = json.loads(limits_view.content)["stores"]
        assert stores["images"]["shared"] is None and stores["images"]["count"] == 1
        await a.close()

    run(go())


def test_what_a_replica_kept_while_redis_was_away_is_written_when_it_is_back(redis_url):  # noqa: F811
    async def go():
        prefix = f"t-back-{next(_prefixes)}:"
        a, b = Replica(redis_url, prefix), Replica(redis_url, prefix)
        a.services.shared.up = False  # as after a failed call: writes are skipped
        made = await a.answer(image_request())
        name = json.loads(made.content)["data"][0]["url"].partition("/++/images/")[2].partition("?")[0]
        assert (await a.answer(analyze_request())).status_code == 202
        await a.answer(make_flow("POST", chat_path(), LONG))
        assert await b.services.images.fetch(name) is None
        a.services.shared.up = True
        for hook in a.services.shared._returns:  # what the probe runs when Redis answers again
            await hook()
        assert (await b.services.images.fetch(name)) is not None
        assert (await b.services.documents.shared_usage())["count"] == 1
        assert (await b.services.prompt_cache.shared_usage())["count"] > 0
        await a.close()
        await b.close()

    run(go())


# --- metrics and views -----------------------------------------------------------------------


def test_the_metrics_show_whether_redis_answers_and_its_failures(redis_url):  # noqa: F811
    async def go():
        a = Replica(redis_url, "t-metrics:")
        collector = metrics_stage.SharedState(a.services.shared)
        samples = {s.name: s.value for family in collector.collect() for s in family.samples}
        assert samples == {"aoai_shared_state_up": 1, "aoai_shared_state_failures_total": 0}
        a.services.shared.up, a.services.shared.failures = False, 3
        samples = {s.name: s.value for family in collector.collect() for s in family.samples}
        assert samples == {"aoai_shared_state_up": 0, "aoai_shared_state_failures_total": 3}
        await a.close()
        nothing = metrics_stage.SharedState(make_services(make_config()).shared)
        assert [s for family in nothing.collect() for s in family.samples] == []

    run(go())


def test_limits_shows_what_redis_holds_of_each_shared_store(redis_url):  # noqa: F811
    async def go():
        a, b = pair(redis_url)
        await a.answer(image_request())
        view = await b.management.limits(make_flow("GET", "/++/limits"))
        stores = json.loads(view.content)["stores"]
        assert stores["images"]["count"] == 0 and stores["images"]["shared"]["count"] == 1
        assert stores["images"]["shared"]["bytes"] > 1000
        for name in ("documentIntelligenceResults", "promptCache", "retryHints"):
            assert stores[name]["shared"] == {"count": 0, "bytes": 0}
        await a.close()
        await b.close()

    run(go())


@pytest.fixture(autouse=True)
def _empty_redis(request):
    """Each test starts from an empty Redis (the server is shared by the module)."""
    if "redis_url" not in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("redis_url")

    async def flush():
        client = redis.asyncio.Redis.from_url(url)
        await client.flushall()
        await client.aclose()

    asyncio.run(flush())
    yield
