"""The Responses API's pure parts: checks, the event sequence, input items and their pages,
the stored responses' bound and the prompt cache."""

from __future__ import annotations

import random

import pytest

from aoai.openai import catalogue, chat, responses, tokens
from aoai.openai.catalogue import Normal
from aoai.openai.validation import Invalid
from aoai.runtime.prompt_cache import PromptCache
from aoai.runtime.stored import ResponseStore, StoredResponse
from aoai.runtime.streams import carries_tokens, event_frame

GPT4O = catalogue.MODELS["gpt-4o"]
O4 = catalogue.MODELS["o4-mini"]
SETTINGS = chat.ChatSettings(Normal(30, 0), 1.0)
TOOL = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def answer(body: dict, model=GPT4O, seed: int = 1) -> responses.ResponseAnswer:
    responses.check_responses(body, model)
    enc = tokens.encoding(model.encoding)
    return responses.generate(body, model, responses.count_input(body, [], enc), [], random.Random(seed), SETTINGS)


def kinds(timeline) -> list[str]:
    return [event["type"] for _, event in timeline]


def test_a_text_stream_follows_azures_order():
    timeline = answer({"input": "Hi", "max_output_tokens": 100}).stream_timeline()
    names = kinds(timeline)
    deltas = names.count("response.output_text.delta")
    assert deltas == 30
    assert names == (
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        + ["response.output_text.delta"] * deltas
        + ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    )


def test_sequence_numbers_count_from_zero_and_steps_never_go_back():
    timeline = answer({"input": "Hi", "tools": [TOOL], "tool_choice": "required"}, O4).stream_timeline()
    assert [event["sequence_number"] for _, event in timeline] == list(range(len(timeline)))
    steps = [step for step, _ in timeline]
    assert steps[:2] == [-1, -1] and steps == sorted(steps)
    deltas = [step for step, event in timeline if event["type"] == "response.function_call_arguments.delta"]
    assert deltas == list(range(len(deltas)))  # one token step each


def test_a_reasoning_tool_call_stream():
    a = answer({"input": "Hi", "tools": [TOOL], "tool_choice": "required", "reasoning": {"summary": "auto"}}, O4)
    names = kinds(a.stream_timeline())
    assert names[2:8] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    assert names[8] == "response.output_item.added"
    assert names[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    deltas = "".join(e["delta"] for _, e in a.stream_timeline() if e["type"].endswith("arguments.delta"))
    assert deltas == a.body()["output"][1]["arguments"]
    assert a.reasoning_tokens > 0 and a.usage()["output_tokens_details"]["reasoning_tokens"] == a.reasoning_tokens


def test_a_cut_stream_ends_incomplete():
    a = answer({"input": "Hi", "max_output_tokens": 16})
    timeline = a.stream_timeline()
    assert timeline[-1][1]["type"] == "response.incomplete"
    assert timeline[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert timeline[0][1]["response"]["status"] == "in_progress" and timeline[0][1]["response"]["output"] == []


def test_frames_name_their_event_and_only_deltas_carry_tokens():
    timeline = answer({"input": "Hi", "max_output_tokens": 20}).stream_timeline()
    frame = event_frame(timeline[4][1])
    assert frame.startswith(b"event: response.output_text.delta\ndata: {") and frame.endswith(b"\n\n")
    assert [carries_tokens(e) for _, e in timeline].count(True) == 20


def test_effort_changes_reasoning_tokens():
    spent = {
        effort: answer({"input": "Hi", "reasoning": {"effort": effort}}, O4, seed=3).reasoning_tokens
        for effort in ("minimal", "low", "medium", "high")
    }
    assert spent["minimal"] == 0 < spent["low"] < spent["medium"] < spent["high"]


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({}, "input", "missing_required_parameter"),
        ({"input": []}, "input", "empty_array"),
        ({"input": 3}, "input", "invalid_type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        (
            {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c"}]},
            "input[0].output",
            "missing_required_parameter",
        ),
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type", "unsupported_value"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"}, "tools": [TOOL]}, "tool_choice", None),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        ({"input": "x", "reasoning": {"effort": "high"}}, "reasoning.effort", "unsupported_parameter"),
        ({"input": "x", "truncation": "sometimes"}, "truncation", "invalid_value"),
        ({"input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
        ({"input": "x", "background": True, "store": False}, "background", "invalid_value"),
    ],
)
def test_bad_requests_name_the_field(body, param, code):
    with pytest.raises(Invalid) as raised:
        responses.check_responses(body, GPT4O)
    assert (raised.value.param, raised.value.code) == (param, code)


@pytest.mark.parametrize(
    "field, value, default",
    [("temperature", 0.2, 1), ("top_p", 0.9, 1), ("presence_penalty", 0.5, 0), ("frequency_penalty", -1, 0)],
)
def test_reasoning_models_take_sampling_settings_only_at_their_defaults(field, value, default):
    with pytest.raises(Invalid) as raised:
        responses.check_responses({"input": "x", field: value}, O4)
    assert raised.value.message == (
        f"Unsupported value: '{field}' does not support {value} with this model. "
        f"Only the default ({default}) value is supported."
    )
    responses.check_responses({"input": "x", field: default}, O4)


def test_input_items_get_ids_and_pages():
    items = responses.input_items(
        {
            "input": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"type": "function_call_output", "call_id": "c", "output": "d"},
            ]
        },
        random.Random(1),
    )
    assert [i["id"][:4] for i in items] == ["msg_", "msg_", "fco_"]
    assert items[1]["content"] == [{"type": "output_text", "text": "b"}]
    page = responses.item_page(items, "desc", "2", None, None)
    assert [i["id"] for i in page["data"]] == [items[2]["id"], items[1]["id"]] and page["has_more"]
    rest = responses.item_page(items, "desc", "2", page["last_id"], None)
    assert [i["id"] for i in rest["data"]] == [items[0]["id"]] and not rest["has_more"]
    with pytest.raises(Invalid):
        responses.item_page(items, "sideways", None, None, None)


def test_the_store_keeps_the_newest():
    store = ResponseStore(capacity=2)
    for n in range(3):
        store.put(StoredResponse({"id": f"resp_{n}"}, [], []))
    assert store.get("resp_0") is None and store.get("resp_2") is not None and len(store) == 2
    assert store.delete("resp_1") and not store.delete("resp_1")


def test_the_prompt_cache_reports_seen_prefixes_in_steps_of_128_and_forgets_when_idle():
    cache = PromptCache(idle_s=300, capacity=1000)
    prompt = list(range(1500))
    assert cache.use("gpt-4o", prompt, now=0) == 0
    assert cache.use("gpt-4o", prompt, now=10) == 1408  # 1024 + 3 x 128
    assert cache.use("other", prompt, now=11) == 0  # another deployment has its own cache
    assert cache.use("gpt-4o", prompt[:1100] + [9] * 400, now=12) == 1024
    assert cache.use("gpt-4o", list(range(1000)), now=13) == 0  # too short to cache
    assert cache.use("gpt-4o", prompt, now=400) == 0  # idle for longer than 5 minutes: forgotten


def test_the_prompt_cache_is_bounded():
    cache = PromptCache(idle_s=300, capacity=10)
    for n in range(50):
        cache.use("gpt-4o", [n] * 2048, now=n)
    assert len(cache) == 10


def _with_openai_only_fields(value):
    """`cache_write_tokens` is in OpenAI's usage but not in Azure's (its v1 spec lists only
    cached_tokens): fill it in so the SDK's models can check everything else."""
    if isinstance(value, dict):
        value = {k: _with_openai_only_fields(v) for k, v in value.items()}
        if "cached_tokens" in value:
            value.setdefault("cache_write_tokens", 0)
    elif isinstance(value, list):
        value = [_with_openai_only_fields(v) for v in value]
    return value


@pytest.mark.parametrize(
    "model, body",
    [
        (GPT4O, {"input": "Hi", "max_output_tokens": 20}),
        (
            GPT4O,
            {
                "input": "Hi",
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                        "strict": True,
                    }
                },
            },
        ),
        (O4, {"input": "Hi", "tools": [TOOL], "tool_choice": "required", "reasoning": {"summary": "auto"}}),
    ],
)
def test_the_response_and_every_event_validate_against_the_sdks_models(model, body):
    pydantic = pytest.importorskip("pydantic")
    from openai.types.responses import Response, ResponseItem, ResponseStreamEvent

    a = answer(body, model)
    Response.model_validate(_with_openai_only_fields(a.body()))
    events = pydantic.TypeAdapter(ResponseStreamEvent)
    for _, event in a.stream_timeline():
        parsed = events.validate_python(_with_openai_only_fields(event))
        assert parsed.type == event["type"]
    items = pydantic.TypeAdapter(ResponseItem)
    for item in responses.input_items(
        {
            "input": [
                {"role": "user", "content": "a"},
                {"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "d"},
            ]
        },
        random.Random(1),
    ):
        items.validate_python(item)


def test_equal_seeded_requests_are_stored_as_two_responses():
    import random

    from aoai.openai import catalogue, chat, responses

    body = {"model": "gpt-4o", "input": "Hello!", "seed": 7}
    settings = chat.ChatSettings(catalogue.Normal(20), 1.0)
    first = responses.generate(body, catalogue.MODELS["gpt-4o"], 9, [], random.Random(7), settings)
    second = responses.generate(body, catalogue.MODELS["gpt-4o"], 9, [], random.Random(7), settings)
    assert first.id != second.id and first.id.startswith("resp_")
