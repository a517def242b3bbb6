import asyncio
import json
import time

from mitmproxy import http
from mitmproxy.test import taddons
from unit_support import admit, chat_path, json_of, make_config, make_flow, run, services_for

from aoai import generators
from aoai.runtime import config as cfg
from aoai.runtime import latency
from aoai.runtime.state import RequestContext, context_of
from aoai.runtime.streams import StreamServer
from aoai.stages.generate import Generate

HELLO = {
    "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]
}
EMBEDDINGS = "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
COMPLETIONS = "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21"


def answer(flow, config=None, streams=None, before=()):
    """Route the flow, then let Generate answer it; `before` are generators put ahead of the
    built-in ones."""
    config = config or make_config()
    services = services_for(config, streams)
    addon = Generate(config, services)
    config.generators[:0] = list(before)

    async def main():
        with taddons.context(addon):
            admit(flow, config, services)
            # As mitmproxy does: a hook may answer at once or return something to await.
            pending = addon.request(flow)
            if pending is not None:
                await pending

    run(main())
    return flow


def sse_events(response):
    text = response.content.decode()
    assert text.endswith("data: [DONE]\n\n")
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    return [json.loads(f[6:]) for f in frames[:-1]]


def test_chat():
    flow = answer(make_flow("POST", chat_path(), {**HELLO, "max_tokens": 5}))
    assert flow.response.status_code == 200
    assert flow.response.headers["content-type"] == "application/json"
    body = json_of(flow.response)
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-2024-11-20"
    assert body["usage"]["prompt_tokens"] == 19
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["finish_reason"] == "length"
    assert context_of(flow).values["completion_tokens"] == 5


def test_a_seeded_request_gets_the_same_answer():
    body = {**HELLO, "seed": 42, "max_tokens": 30}
    first = json_of(answer(make_flow("POST", chat_path(), body)).response)
    second = json_of(answer(make_flow("POST", chat_path(), body)).response)
    assert first["choices"] == second["choices"]
    assert first["id"] == second["id"]


def test_the_simulator_seed_makes_answers_reproducible():
    body = {**HELLO, "max_tokens": 30}
    a = json_of(answer(make_flow("POST", chat_path(), body), make_config(seed=3)).response)
    b = json_of(answer(make_flow("POST", chat_path(), body), make_config(seed=3)).response)
    c = json_of(answer(make_flow("POST", chat_path(), body), make_config(seed=4)).response)
    assert a["choices"] == b["choices"]
    assert a["choices"] != c["choices"]


def test_a_chat_stream_without_latency_comes_at_once():
    body = {**HELLO, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
    flow = answer(make_flow("POST", chat_path(), body))
    response = flow.response
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-accel-buffering"] == "no"
    events = sse_events(response)
    assert events[0]["id"] == "" and events[0]["choices"] == []
    assert events[1]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["usage"]["completion_tokens"] == 4
    assert events[-1]["usage"]["prompt_tokens"] == 19


def test_a_paced_stream_is_handed_to_the_stream_server():
    config = make_config(latency_enabled=True)
    streams = StreamServer()
    streams.port = 12345
    flow = answer(make_flow("POST", chat_path(), {**HELLO, "max_tokens": 3, "stream": True}), config, streams)
    assert flow.response is None
    plan = context_of(flow).stream
    assert streams.plans[plan.id] is plan
    assert streams.planned(context_of(flow).stream) is plan
    assert plan.frames[-1][1] == b"data: [DONE]\n\n"
    assert plan.frames[0][0] == 0.0  # the prompt-filter frame leaves at once
    times = [t for t, _ in plan.frames]
    assert times == sorted(times) and times[-1] > 0


def test_a_non_streamed_answer_waits_for_its_latency():
    config = make_config(latency_enabled=True)
    config.deployments["fast"] = cfg.parse_deployment(
        "fast",
        {"model": "gpt-4o", "latency": {"timeToFirstTokenMs": {"mean": 150}, "interTokenMs": {"mean": 0}}},
        "test",
    )
    flow = make_flow("POST", chat_path("fast"), {**HELLO, "max_tokens": 3})
    flow.request.timestamp_start = time.time()
    answer(flow, config)
    assert flow.response.status_code == 200
    assert context_of(flow).values["latency_s"] == context_of(flow).latency_s == 0.15
    # Answered at once; the Pacing stage holds it until due.
    assert context_of(flow).hold == latency.Hold(0.15, None)


def test_completions():
    flow = answer(make_flow("POST", COMPLETIONS, {"prompt": "Once", "echo": True}))
    body = json_of(flow.response)
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"].startswith("Once ")


def test_completions_stop_at_the_default_16_tokens():
    # Natural answer lengths are random (mean 150), so a few are shorter than 16 and end with
    # "stop"; none is longer, and every one that reaches the default limit says "length".
    reasons = set()
    for seed in range(40):
        flow = answer(make_flow("POST", COMPLETIONS, {"prompt": "Once", "seed": seed}))
        body = json_of(flow.response)
        used, reason = body["usage"]["completion_tokens"], body["choices"][0]["finish_reason"]
        assert used <= 16
        assert used == 16 if reason == "length" else reason == "stop"
        reasons.add(reason)
    assert "length" in reasons


def test_embeddings():
    flow = answer(make_flow("POST", EMBEDDINGS, {"input": ["a", "b"], "dimensions": 12}))
    body = json_of(flow.response)
    assert [len(d["embedding"]) for d in body["data"]] == [12, 12]
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert body["model"] == "text-embedding-3-small"


def test_embeddings_use_the_deployments_size():
    config = make_config()
    config.deployments["small"] = cfg.parse_deployment(
        "small", {"model": "text-embedding-3-large", "embeddingSize": 64}, "test"
    )
    flow = answer(make_flow("POST", EMBEDDINGS.replace("text-embedding-3-small", "small"), {"input": "a"}), config)
    assert len(json_of(flow.response)["data"][0]["embedding"]) == 64


def test_v1_models_lists_the_deployments():
    config = make_config()
    flow = answer(make_flow("GET", "/openai/v1/models"), config)
    body = json_of(flow.response)
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == list(config.deployments)
    assert body["data"][0] == {
        "id": "gpt-4o",
        "object": "model",
        "created": 0,
        "owned_by": "system",
        "model": "gpt-4o-2024-11-20",
    }


def test_other_paths_are_not_answered():
    flow = answer(make_flow("GET", "/somewhere"))
    assert flow.response is None


def test_extension_generators_run_in_order_sync_and_async():
    calls = []

    def first(context):
        calls.append(("first", context.operation.name))

    async def second(context):
        await asyncio.sleep(0)
        calls.append(("second", context.values["prompt_tokens"]))
        return http.Response.make(299, b"from second")

    def third(context):
        calls.append(("third", None))

    flow = answer(make_flow("POST", chat_path(), HELLO), before=[first, second, third])
    assert calls == [("first", "chat"), ("second", 19)]
    assert (flow.response.status_code, flow.response.content) == (299, b"from second")


def test_an_async_generator_returning_none_passes_to_the_built_in_ones():
    async def nothing(context):
        await asyncio.sleep(0)

    flow = answer(make_flow("POST", chat_path(), {**HELLO, "max_tokens": 2}), before=[nothing])
    assert json_of(flow.response)["usage"]["completion_tokens"] == 2


def test_a_failing_generator_costs_a_500_naming_it():
    def broken_generator(context):
        raise ValueError("boom")

    flow = answer(make_flow("POST", chat_path(), HELLO), before=[broken_generator])
    assert flow.response.status_code == 500
    error = json_of(flow.response)["error"]
    assert error["code"] == "InternalServerError"
    assert "broken_generator" in error["message"]
    assert error["message"].endswith("failed: ValueError: boom")


def test_nothing_happens_outside_generate_mode():
    called = []
    for mode in ("record", "replay"):
        flow = answer(
            make_flow("POST", chat_path(), HELLO), make_config(mode=mode), before=[lambda context: called.append(1)]
        )
        assert flow.response is None
    assert called == []


def test_an_answered_flow_is_left_alone():
    flow = make_flow("POST", chat_path(), HELLO)
    flow.response = http.Response.make(201)
    answer(flow)
    assert flow.response.status_code == 201


def test_rng_for_uses_the_request_seed_first():
    config = make_config(seed=1)
    flow = make_flow("POST", chat_path(), {**HELLO, "seed": 2})
    context = RequestContext(flow, config, body={**HELLO, "seed": 2})
    same = RequestContext(
        make_flow("POST", chat_path(), {**HELLO, "seed": 2}), make_config(seed=9), body={**HELLO, "seed": 2}
    )
    assert generators.rng_for(context).random() == generators.rng_for(same).random()


def test_latency_settings_are_per_token_for_the_whole_answer_as_in_the_seed():
    # LATENCY_OPENAI_CHAT_COMPLETIONS_MEAN=10: 5 tokens take 50 ms, the first one included.
    config = make_config(latency_enabled=True, latency_defaults={"chat_completions": cfg.Normal(10.0)})
    flow = answer(make_flow("POST", chat_path(), {**HELLO, "max_tokens": 5}), config)
    assert context_of(flow).latency_s == 0.05
    # 0 answers at once: no time to first token is left over from the model's defaults.
    config = make_config(latency_enabled=True, latency_defaults={"chat_completions": cfg.Normal(0.0)})
    flow = answer(make_flow("POST", chat_path(), {**HELLO, "max_tokens": 5}), config)
    assert context_of(flow).latency_s == 0.0
