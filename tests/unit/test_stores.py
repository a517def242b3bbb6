"""Every store that grows with clients' requests is bounded in bytes (and count), keeps no
whole client-chosen string as a key, and reports what it holds."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import tracemalloc

import pytest
from mitmproxy.test import taddons, tflow
from test_generate import answer
from unit_support import admit, chat_path, json_of, make_config, make_flow, services_for

from aoai.docintel import layout
from aoai.docintel import service as docintel
from aoai.openai import catalogue
from aoai.runtime import labels, limits, media, recording
from aoai.runtime.bounds import Bounds
from aoai.runtime.config import Deployment, SimulatorConfig
from aoai.runtime.fault_book import FaultBook
from aoai.runtime.faults import parse_profile
from aoai.runtime.prompt_cache import ENTRY_BYTES, PromptCache
from aoai.runtime.routes import ROUTES, RouteTable
from aoai.runtime.stored import ResponseStore, StoredResponse
from aoai.runtime.streams import StreamServer
from aoai.stages import checks
from aoai.stages.metrics import Metrics
from aoai.stages.ratelimit import Limits, client_identity

GPT4O = catalogue.MODELS["gpt-4o"]
HELLO = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}


# --- stored responses -------------------------------------------------------------------------


def stored(n: int, size: int) -> StoredResponse:
    return StoredResponse({"id": f"resp_{n}"}, [], [], size)


def test_stored_responses_are_bounded_in_bytes_the_oldest_leaving_first():
    store = ResponseStore(capacity=100, max_bytes=1000)
    for n in range(5):
        assert store.put(stored(n, 300))
    assert [store.get(f"resp_{n}") is not None for n in range(5)] == [False, False, True, True, True]
    assert store.bytes == 900 and store.usage() == {"count": 3, "maxCount": 100, "bytes": 900, "maxBytes": 1000}
    assert store.delete("resp_3") and store.bytes == 600
    store.put(stored(4, 100))  # the same id again replaces it
    assert store.bytes == 400 and len(store) == 2


def test_the_count_bound_still_holds():
    store = ResponseStore(capacity=2, max_bytes=10**9)
    for n in range(4):
        store.put(stored(n, 10))
    assert len(store) == 2 and store.bytes == 20 and store.get("resp_1") is None


def test_a_response_larger_than_the_whole_budget_is_not_stored():
    store = ResponseStore(capacity=10, max_bytes=1000)
    store.put(stored(0, 400))
    assert not store.put(stored(1, 1001))
    assert store.get("resp_1") is None and store.get("resp_0") is not None and store.bytes == 400


def responses_flow(body: dict, headers: dict | None = None):
    return make_flow("POST", "/openai/v1/responses", body, headers)


def test_a_stored_response_counts_its_request_its_answer_and_the_turns_it_carries():
    config = make_config()
    image = "data:image/png;base64," + "A" * 200_000
    first = answer(
        responses_flow(
            {
                "model": "gpt-4o",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "What is this?"},
                            {"type": "input_image", "image_url": image},
                        ],
                    }
                ],
                "max_output_tokens": 20,
            }
        ),
        config,
    )
    first_id = json_of(first.response)["id"]
    first_size = services_for(config).responses.get(first_id).size
    assert len(first.request.content) < first_size < len(first.request.content) + 2048 + 20 * 8 + 3 * 400
    second = answer(
        responses_flow(
            {"model": "gpt-4o", "input": "And now?", "previous_response_id": first_id, "max_output_tokens": 20}
        ),
        config,
    )
    second_size = services_for(config).responses.get(json_of(second.response)["id"]).size
    # The earlier turns (and their image) are held by the new response too: counted with it.
    assert second_size > first_size + len(second.request.content)
    assert services_for(config).responses.bytes == first_size + second_size


def deep_size(value, seen: set[int]) -> int:
    """The bytes Python objects take, each counted once (what a stored response holds)."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        size += sum(deep_size(v, seen) for v in value)
    return size


@pytest.mark.parametrize("content", [[{"type": "input_text", "text": "hi"}], "hi"])
def test_a_stored_response_of_many_small_items_counts_what_they_take_as_objects(content):
    config = make_config()
    body = {"model": "gpt-4o", "max_output_tokens": 16, "input": [{"role": "user", "content": content}] * 20_000}
    made = answer(responses_flow(body), config)
    stored = services_for(config).responses.get(json_of(made.response)["id"])
    seen: set[int] = set()
    held = sum(deep_size(part, seen) for part in (stored.body, stored.input_items, stored.conversation))
    # Counted by its 0.7 MB body alone, it held 12 MB.
    assert held <= stored.size < 2 * held


def test_a_response_too_large_to_keep_answers_404_when_retrieved():
    config = make_config()
    services_for(config).responses.max_bytes = 10_000
    made = answer(responses_flow({"model": "gpt-4o", "input": "x " * 20_000, "max_output_tokens": 16}), config)
    assert made.response.status_code == 200
    response_id = json_of(made.response)["id"]
    retrieved = answer(make_flow("GET", f"/openai/v1/responses/{response_id}"), config)
    assert retrieved.response.status_code == 404
    assert json_of(retrieved.response)["error"]["message"] == f"Response with id '{response_id}' not found."


# --- the prompt cache ---------------------------------------------------------------------------


def test_the_prompt_cache_is_bounded_in_bytes_and_never_keeps_the_name():
    cache = PromptCache(idle_s=300, max_bytes=10 * ENTRY_BYTES)
    long_name = "d" * 20_000
    for n in range(30):
        cache.use(long_name + str(n), [n] * 2048, now=n)
    assert len(cache) == 10 and cache.usage() == {
        "count": 10,
        "maxCount": 10,
        "bytes": 10 * ENTRY_BYTES,
        "maxBytes": 10 * ENTRY_BYTES,
    }
    assert all(isinstance(k, bytes) and len(k) == 16 for k in cache._seen)


def test_a_prompt_cache_entry_takes_what_entry_bytes_says():
    cache = PromptCache(idle_s=300, max_bytes=10**9)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        prompt = [0] * 1024
        for n in range(1000):
            prompt[0] = n
            cache.use("d" * 5000, prompt, now=0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == 1000 and grown / 1000 <= ENTRY_BYTES


# --- early-retry hints ------------------------------------------------------------------------


def flow_with_id(request_id: str, path: str = "/openai/deployments/d/chat/completions"):
    f = tflow.tflow()
    f.request.path = path
    f.request.headers["x-ms-client-request-id"] = request_id
    return f


def test_a_client_identity_is_a_digest_however_long_the_id():
    long_id = "r" * 1_000_000
    identity = client_identity(flow_with_id(long_id), "d:gpt-4o")
    assert isinstance(identity, bytes) and len(identity) == 16
    assert identity == client_identity(flow_with_id(long_id), "d:gpt-4o")
    assert identity != client_identity(flow_with_id(long_id + "s"), "d:gpt-4o")
    assert identity != client_identity(flow_with_id(long_id), "d:other")
    anonymous = tflow.tflow()
    anonymous.request.path = "/" + "p" * 100_000
    assert len(client_identity(anonymous, "d:gpt-4o")) == 16
    odd = flow_with_id("x")
    odd.request.headers["x-ms-client-request-id"] = "\udcff\u00e9"  # undecodable bytes, as mitmproxy keeps them
    assert len(client_identity(odd, "d:gpt-4o")) == 16


def test_retry_hints_are_bounded_in_bytes_the_oldest_forgotten_first():
    hints = limits.RetryHints(max_bytes=100 * limits.RetryHints.ENTRY_BYTES)
    for n in range(250):
        hints.told(n.to_bytes(16, "little"), due=1000.0 + n, now=0.0)
    assert len(hints) <= 100 and hints.bytes <= hints.max_bytes
    assert hints.arrived((249).to_bytes(16, "little"), 0.0) > 0  # the newest is kept
    assert hints.arrived((0).to_bytes(16, "little"), 0.0) == 0.0  # the oldest forgotten
    assert hints.usage()["maxCount"] == 100
    tiny = limits.RetryHints(max_bytes=1)
    for n in range(5):
        tiny.told(n.to_bytes(16, "little"), due=10.0, now=0.0)
    assert len(tiny) == 1 and tiny.arrived((4).to_bytes(16, "little"), 0.0) == 10.0


def test_a_hint_takes_what_entry_bytes_says():
    hints = limits.RetryHints(max_bytes=10**9)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):
            hints.told(hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16).digest(), 5.0, 0.0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown / 20_000 <= limits.RetryHints.ENTRY_BYTES


# --- images -------------------------------------------------------------------------------------


def test_images_are_bounded_in_bytes_and_one_too_large_is_not_kept(caplog):
    store = media.ImageStore(ttl=60, max_bytes=1000)
    names = [store.put(bytes(400), "image/png", "png")[0] for _ in range(3)]
    assert store.get(names[0]) is None and store.get(names[2]) is not None
    assert store.usage() == {"count": 2, "bytes": 800, "maxBytes": 1000}
    with caplog.at_level(logging.WARNING, "aoai.runtime.media"):
        big, _ = store.put(bytes(1001), "image/png", "png")
    assert store.get(big) is None and store.bytes == 800 and "IMAGES_STORED_MAX_BYTES" in caplog.text


# --- Document Intelligence results ------------------------------------------------------------


def analysis(n: int, pages: int = 1) -> layout.Analysis:
    return layout.Analysis(
        f"result-{n}",
        "documentintelligence",
        "prebuilt-read",
        "2024-11-30",
        "textElements",
        list(range(1, pages + 1)),
        "inch",
        n,
        0,
        0,
    )


def test_document_intelligence_results_are_bounded_in_bytes():
    one = docintel.analysis_bytes(analysis(0))
    store = docintel.ResultStore(limit=1000, max_bytes=3 * one)
    for n in range(5):
        store.add(analysis(n))
    assert len(store) == 3 and store.get("result-1") is None and store.get("result-4") is not None
    assert store.usage() == {"count": 3, "maxCount": 1000, "bytes": 3 * one, "maxBytes": 3 * one}
    store.add(analysis(9, pages=20))  # a larger one makes room for itself
    assert store.bytes <= store.max_bytes and store.get("result-9") is not None


def test_an_analysis_takes_no_more_than_analysis_bytes_says():
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [
            layout.Analysis(
                f"{n:036d}",
                "documentintelligence",
                "prebuilt-read",
                "2024-11-30",
                "textElements",
                list(range(10**6, 10**6 + 20)),
                "inch",
                2**63 + n,
                1.0 * n,
                2.0 * n,
            )
            for n in range(2000)
        ]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown / len(kept) <= docintel.analysis_bytes(kept[0])


# --- recordings ---------------------------------------------------------------------------------


def interaction(n: int, size: int = 1000) -> recording.Interaction:
    return recording.Interaction(
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        [("api-version", "x")],
        {"content-type": "application/json"},
        b'{"n": %d}' % n,
        200,
        {"content-type": "application/json"},
        b'{"a": "' + b"x" * size + b'"}',
    )


def test_pending_recordings_past_their_bound_are_taken_to_be_saved_with_one_warning(tmp_path, caplog):
    store = recording.RecordingStore(tmp_path)
    one = recording.interaction_bytes(interaction(0))
    assert one > 1000
    store.pending_max_bytes = 4 * one + one // 2
    with caplog.at_level(logging.WARNING, "aoai.runtime.recording"):
        for n in range(4):
            assert store.add(interaction(n), autosave=False) and store.overflow() == []
        assert store.usage()["pending"] == {
            "count": 4,
            "bytes": 4 * one,
            "savingBytes": 0,
            "maxBytes": store.pending_max_bytes,
        }
        assert not list(tmp_path.glob("*.yaml"))
        store.add(interaction(4), autosave=False)
        batch = store.overflow()  # past the bound: all of them, to be saved now
        assert len(batch) == 5 and store.pending == [] and store.pending_bytes == 0
        assert store.save(batch) == 5
        for n in range(5, 15):
            store.add(interaction(n), autosave=False)
            store.save(store.overflow())
    assert caplog.text.count("RECORDING_PENDING_MAX_BYTES") == 1
    store.save()
    assert store.load() == 15


def test_recordings_still_being_saved_count_against_the_bound(tmp_path):
    """While a batch is written, it is still in memory: what arrives meanwhile is taken to be
    saved at once, not held until pending recordings alone reach the bound again."""
    import threading

    store = recording.RecordingStore(tmp_path)
    one = recording.interaction_bytes(interaction(0))
    store.pending_max_bytes = 2 * one + one // 2
    for n in range(3):
        store.add(interaction(n), autosave=False)
    batch = store.overflow()
    assert len(batch) == 3
    with store._write_lock:  # the disk is slow: the batch's save waits here, its bytes held
        saving = threading.Thread(target=store.save, args=(batch,))
        saving.start()
        deadline = time.monotonic() + 10
        while store.saving_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert store.saving_bytes == 3 * one
        store.add(interaction(3), autosave=False)
        assert [i.request_body for _, i in store.overflow()] == [interaction(3).request_body]
    saving.join(10)
    assert store.saving_bytes == 0 and store.usage()["pending"]["savingBytes"] == 0
    assert store.load() == 3


def test_the_record_stage_saves_them_in_a_worker_thread(tmp_path):
    import asyncio
    import threading

    from aoai.stages.record import Record

    store = recording.RecordingStore(tmp_path)
    store.pending_max_bytes = 1
    config = make_config(mode="record")
    config.recording.autosave = False
    stage = Record(config, store)
    writers = []
    save = store.save
    store.save = lambda batch=None: writers.append(threading.current_thread()) or save(batch)

    async def main():
        flow = tflow.tflow(resp=True)
        stage._save(flow.request, 200, [], b"{}", None, flow.request.timestamp_start + 1)
        assert stage._saving
        await stage.done()

    asyncio.run(main())
    assert writers[0] is not threading.main_thread() and store.load() == 1


def test_pending_streams_count_their_events():
    streamed = interaction(0, 0)
    streamed.events = [recording.Event(float(i), {"choices": [{"delta": {"content": "w" * 100}}]}) for i in range(50)]
    assert recording.interaction_bytes(streamed) > 50 * 100


def test_parsed_recordings_kept_in_memory_are_bounded_in_bytes(tmp_path):
    writer = recording.RecordingStore(tmp_path)
    for n in range(20):
        writer.add(interaction(n), autosave=True)
    store = recording.RecordingStore(tmp_path)
    store.load()
    refs = [refs[0] for refs in store.index.values()]
    assert len({ref.length for ref in refs[10:]}) == 1
    store.cache_max_bytes = 5 * refs[-1].length
    for ref in refs:
        assert store.get(ref).status == 200
    cache = store.usage()["cache"]
    assert cache["count"] == 5 and cache["bytes"] <= cache["maxBytes"]
    assert json.loads(store.get(refs[0]).request_body) == {"n": 0}  # read again from its file
    writer.cache_max_bytes = 3 * refs[-1].length
    writer.add(interaction(99), autosave=True)
    assert writer.usage()["cache"]["count"] <= 3


# --- caches keyed by client strings ----------------------------------------------------------


def test_the_route_cache_never_keeps_a_long_path():
    table = RouteTable(ROUTES)
    long_path = "/openai/deployments/" + "d" * 100_000 + "/chat/completions"
    found = table.resolve("POST", long_path + "?api-version=1")
    assert found is not None and found.route.operation == "chat" and found.params["deployment"] == "d" * 100_000
    assert table.resolve("POST", "/" + "x" * 1000) is None
    assert table.resolve("X" * 100, "/++/health").route is None
    assert len(table._recent) == 0
    table.resolve("POST", chat_path())
    assert len(table._recent) == 1 and table.usage() == {
        "count": 1,
        "maxCount": table.CACHED,
        "maxPathChars": table.CACHED_PATH_CHARS,
    }


def test_long_api_versions_are_never_remembered():
    checks._day_of.cache_clear()
    assert not checks.version_supported("2024-10-21" + "x" * 100_000, False)
    assert checks._day_of.cache_info().currsize == 0
    assert checks.version_supported("2025-04-01-preview", False)
    assert checks._day_of.cache_info().currsize == 1


# --- labels ---------------------------------------------------------------------------------------


def test_label_values_are_capped_and_long_names_stay_apart():
    short = "gpt-4o"
    assert labels.capped(short) is short
    a, b = labels.capped("a" * 200 + "1"), labels.capped("a" * 200 + "2")
    assert len(a) == len(b) == labels.MAX_LABEL_CHARS and a != b and a.startswith("a" * 100)


def test_undefined_deployments_beyond_the_limit_share_one_label():
    config, known = SimulatorConfig(), labels.DeploymentLabels(limit=3)
    names = [f"undefined-{n}" for n in range(5)]
    got = [config.deployment(name, catalogue.CHAT, known).label for name in names]
    assert got == names[:3] + [labels.OTHER, labels.OTHER]
    assert config.deployment(names[1], catalogue.CHAT, known).label == names[1]  # still its own
    assert config.deployment("gpt-4o", catalogue.CHAT, known).label == "gpt-4o"  # defined: always its own
    long_name = "L" * 20_000
    config.deployments[long_name] = Deployment(long_name, GPT4O)
    assert len(config.deployment(long_name, catalogue.CHAT, known).label) == labels.MAX_LABEL_CHARS
    assert known.usage() == {"count": 3, "maxCount": 3, "maxLabelChars": labels.MAX_LABEL_CHARS}


def test_metrics_count_undefined_deployments_beyond_the_limit_as_other():
    config = make_config()
    services_for(config).labels.limit = 5
    metrics = Metrics(config, StreamServer())
    with taddons.context(metrics):
        for n in range(50):
            flow = make_flow("POST", chat_path("u" * 2000 + str(n)), HELLO)
            assert admit(flow, config) is None
            flow.response = tflow.tresp()
            metrics.response(flow)
        flow = make_flow("POST", chat_path(), HELLO)
        admit(flow, config)
        flow.response = tflow.tresp()
        metrics.response(flow)
    text = metrics.metrics.text().decode()
    assert len(text) < 60_000
    requests = [line for line in text.splitlines() if line.startswith("aoai_requests_total{")]
    assert len(requests) == 7  # five undefined names, (other) and gpt-4o
    assert 'deployment="(other)"' in text and 'deployment="gpt-4o"' in text
    assert all(len(line) < 400 for line in requests)


def test_the_fault_book_keeps_undefined_deployments_by_label():
    config, known, book = SimulatorConfig(seed=1), labels.DeploymentLabels(limit=2), FaultBook()
    config.default_faults = parse_profile([{"kind": "500", "share": 1.0}], "faults")
    for n in range(100):
        deployment = config.deployment("x" * 5000 + str(n), catalogue.CHAT, known)
        book.choose(deployment, config.default_faults, 1)
        book.count(deployment.label, "500")
    assert len(book._tracks) == 3 and len(book.injected) == 3
    assert book.injected[(labels.OTHER, "500")] == 98
    assert all(len(name) <= labels.MAX_LABEL_CHARS for name, _ in book.injected)


def test_throttled_undefined_deployments_share_windows_and_counters_by_label():
    config = SimulatorConfig(api_key="k")
    services_for(config).labels.limit = 2
    config.default_faults = parse_profile(
        [{"kind": "quotaCut", "tokensPerMinute": 10, "forS": 60, "everyS": 60}], "faults"
    )
    stage = Limits(config, faults=services_for(config).faults)
    with taddons.context(stage):
        for n in range(20):
            flow = make_flow("POST", chat_path("n" * 3000 + str(n)), HELLO, key="k")
            assert admit(flow, config) is None
            stage.request(flow)
            assert flow.response.status_code == 429
            if n == 0:
                assert "n" * 3000 + "0" in json_of(flow.response)["error"]["message"]  # named as sent
    assert len(stage.limiter.store.pairs) <= 3
    assert all(len(key) <= 2 + labels.MAX_LABEL_CHARS for key in stage.limiter.store.pairs)
    assert stage.limiter.counters.throttled[(labels.OTHER, limits.TOO_LARGE)] == 18
    assert len(stage.limiter.hints) == 0  # a request that can never fit leaves no hint


# --- settings and the view ----------------------------------------------------------------------


def test_the_settings_bound_every_store(monkeypatch):
    from unit_support import clear_settings_env, settings_context, start

    from aoai.runtime.config import DEFAULT_DATA_MAX_BYTES
    from aoai.stack import Stores
    from aoai.stages.generate import Generate
    from aoai.stages.management import Management
    from aoai.stages.record import Record

    clear_settings_env(monkeypatch)
    config = make_config()
    services = services_for(config)
    limits_stage = Limits(config, services.limiter)
    management = Management(config, services, limits_stage)
    tctx, settings = settings_context(
        config,
        Stores(config, services),
        limits_stage,
        Generate(config, services),
        Record(config, services.recordings),
        management,
    )
    with tctx:
        tctx.configure(settings, simulator_api_key=config.api_key)
        start(settings)
        tctx.configure(
            settings,
            responses_stored_max_bytes=1000,
            prompt_cache_max_bytes=4000,
            retry_hints_max_bytes=1600,
            images_stored_max_bytes=2000,
            doc_intelligence_results_max_bytes=3000,
            recording_pending_max_bytes=5000,
            recording_cache_max_bytes=6000,
            metrics_max_deployment_labels=7,
        )
        assert config.bounds == Bounds(
            responses_stored_bytes=1000,
            prompt_cache_bytes=4000,
            retry_hints_bytes=1600,
            images_stored_bytes=2000,
            doc_intelligence_results_bytes=3000,
            recording_pending_bytes=5000,
            recording_cache_bytes=6000,
            metrics_deployment_labels=7,
        )
        flow = make_flow("GET", "/++/limits", key=config.api_key)
        admit(flow, config)
        management.request(flow)
        stores = json_of(flow.response)["stores"]
    assert {name: stores[name]["maxBytes"] for name in stores if "maxBytes" in stores[name]} == {
        "responses": 1000,
        "images": 2000,
        "documentIntelligenceResults": 3000,
        "promptCache": 4000,
        "retryHints": 1600,
        "pendingRecordings": 5000,
        "recordingCache": 6000,
        "dataFolder": DEFAULT_DATA_MAX_BYTES,  # SIMULATOR_DATA_MAX_BYTES, the Batches stage's (not here)
    }
    assert stores["responses"]["settings"] == {"maxCount": "RESPONSES_STORED", "maxBytes": "RESPONSES_STORED_MAX_BYTES"}
    assert stores["undefinedDeploymentLabels"]["maxCount"] == 7
    assert stores["retryHints"]["maxCount"] == 10 and stores["promptCache"]["maxCount"] == 20
    assert stores["routeCache"]["maxPathChars"] == 256
    assert all({"count", "settings"} <= set(view) for name, view in stores.items() if name != "routeCache")


def test_a_conversation_cut_to_its_newest_turns_counts_only_those():
    config = make_config()
    previous, sizes = None, []
    for _ in range(6):
        body = {"model": "gpt-4o", "input": "word " * 30_000, "max_output_tokens": 16, "truncation": "auto"}
        if previous is not None:
            body["previous_response_id"] = previous
        made = answer(responses_flow(body), config)
        assert made.response.status_code == 200, made.response.content[:300]
        previous = json_of(made.response)["id"]
        sizes.append(services_for(config).responses.get(previous).size)
    # gpt-4o's window holds four such turns: the older ones are dropped, and no longer counted.
    assert sizes[1] > 1.9 * sizes[0] and max(sizes[4:]) <= sizes[3], sizes
