import json
import random

import jsonschema
import pytest

from aoai.openai import catalogue, chat, tokens
from aoai.openai.catalogue import Normal

GPT4O = catalogue.MODELS["gpt-4o"]
GPT35 = catalogue.MODELS["gpt-35-turbo"]
O3 = catalogue.MODELS["o3-mini"]
USER = [{"role": "user", "content": "Hello!"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


def settings(mean=20, share=1.0):
    return chat.ChatSettings(Normal(mean, 0), share)


def generate(body, model=GPT4O, seed=1, prompt_tokens=9, **kw):
    return chat.generate({"messages": USER, **body}, model, prompt_tokens, random.Random(seed), settings(**kw))


def encode(text, model=GPT4O):
    return tokens.encoding(model.encoding).encode(text, disallowed_special=())


@pytest.mark.parametrize("body", [{}, {"n": 3}, {"max_tokens": 5, "n": 2}, {"tools": [WEATHER], "n": 2}])
def test_usage_is_the_sum_of_the_choices(body):
    answer = generate(body)
    usage = answer.body()["usage"]
    assert usage["prompt_tokens"] == 9
    assert usage["completion_tokens"] == sum(c.tokens for c in answer.choices) == answer.completion_tokens
    assert usage["total_tokens"] == 9 + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_text_tokens_are_those_of_the_content():
    for model in (GPT4O, GPT35):
        answer = generate({"n": 2}, model=model)
        for c in answer.choices:
            assert c.tokens == len(c.token_ids) == len(encode(c.content, model))


def test_a_limit_gives_exactly_that_many_tokens_and_length():
    answer = generate({"max_tokens": 5}, mean=200)
    body = answer.body()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["finish_reason"] == "length"
    ids = answer.choices[0].token_ids
    assert len(ids) == 5
    assert body["choices"][0]["message"]["content"] == tokens.encoding(GPT4O.encoding).decode(ids)


def test_max_completion_tokens_wins_over_max_tokens():
    answer = generate({"max_tokens": 50, "max_completion_tokens": 3}, mean=200)
    assert answer.completion_tokens == 3


def test_an_answer_that_ends_naturally_stops():
    answer = generate({"max_tokens": 4000}, mean=20)
    choice = answer.body()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].endswith(".")
    assert 20 <= answer.completion_tokens < 60


def test_n_choices_are_indexed():
    body = generate({"n": 4}).body()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert all(c["message"]["role"] == "assistant" for c in body["choices"])


def test_body_shape():
    body = generate({}).body()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-2024-11-20"
    assert body["system_fingerprint"].startswith("fp_")
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["choices"][0]["content_filter_results"]["protected_material_text"] == {
        "filtered": False,
        "detected": False,
    }


def test_same_seed_same_answer():
    assert generate({}, seed=7).body()["choices"] == generate({}, seed=7).body()["choices"]
    assert generate({}, seed=7).choices[0].content != generate({}, seed=8).choices[0].content


def test_reasoning_tokens_count_in_the_completion():
    answer = generate({"max_completion_tokens": 1000, "reasoning_effort": "high"}, model=O3)
    usage = answer.usage()
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 224 <= reasoning <= 672
    assert usage["completion_tokens"] == reasoning + answer.choices[0].tokens
    assert usage["completion_tokens"] <= 1000


def test_reasoning_can_use_up_the_limit():
    answer = generate({"max_completion_tokens": 10, "reasoning_effort": "high"}, model=O3)
    assert answer.usage()["completion_tokens"] == 10
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].content == ""


def test_a_required_tool_is_called_with_valid_arguments():
    answer = generate({"tools": [WEATHER], "tool_choice": "required"})
    choice = answer.body()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER["function"]["parameters"])
    c = answer.choices[0]
    assert c.tokens == 3 + len(encode("get_weather")) + len(encode(call["function"]["arguments"]))


def test_a_named_tool_choice_picks_that_tool():
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    body = {"tools": [other, WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    for seed in range(5):
        assert generate(body, seed=seed).choices[0].tool_calls[0]["function"]["name"] == "get_weather"


def test_tool_arguments_are_cut_at_the_limit():
    answer = generate({"tools": [WEATHER], "tool_choice": "required", "max_tokens": 6})
    assert answer.choices[0].finish_reason == "length"
    assert answer.completion_tokens == 6


@pytest.mark.parametrize(
    "body, share",
    [
        ({"tools": [WEATHER], "tool_choice": "none"}, 1.0),
        ({"tools": [WEATHER], "tool_choice": "auto"}, 0.0),
        (
            {
                "tools": [WEATHER],
                "messages": USER
                + [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "sunny"},
                ],
            },
            1.0,
        ),
    ],
)
def test_text_instead_of_a_tool_call(body, share):
    choice = generate(body, share=share).choices[0]
    assert choice.tool_calls == []
    assert choice.finish_reason == "stop"
    assert isinstance(choice.content, str) and choice.content


def test_auto_calls_a_tool_when_the_share_is_one():
    assert generate({"tools": [WEATHER]}, share=1.0).choices[0].finish_reason == "tool_calls"


def test_structured_output_follows_the_schema():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1},
        },
        "required": ["name", "tags"],
    }
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    choice = generate(body).choices[0]
    jsonschema.validate(json.loads(choice.content), schema)
    assert choice.tokens == len(encode(choice.content))
    assert isinstance(json.loads(generate({"response_format": {"type": "json_object"}}).choices[0].content), dict)


# --- streaming


def chunks(events):
    return [e for e in events if e["object"] == "chat.completion.chunk"]


def test_stream_frame_order():
    answer = generate({"max_tokens": 6}, mean=200)
    events = answer.stream_events(include_usage=False)
    first = events[0]
    assert (first["id"], first["object"], first["created"], first["model"], first["choices"]) == ("", "", 0, "", [])
    assert first["prompt_filter_results"][0]["prompt_index"] == 0
    role = events[1]
    assert role["id"] == answer.id and role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert role["choices"][0]["finish_reason"] is None
    content = events[2:-1]
    assert len(content) == 6
    assert all(set(e["choices"][0]["delta"]) == {"content"} for e in content)
    assert "".join(e["choices"][0]["delta"]["content"] for e in content) == answer.choices[0].content
    finish = events[-1]
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in e for e in events)


def test_stream_usage_frame_only_with_include_usage():
    answer = generate({"max_tokens": 4}, mean=200)
    events = answer.stream_events(include_usage=True)
    last = events[-1]
    assert last["choices"] == [] and last["usage"] == answer.usage()
    assert last["usage"]["completion_tokens"] == 4
    assert len(events) == len(answer.stream_events(include_usage=False)) + 1
    earlier = chunks(events[:-1])
    assert earlier and all("usage" in e and e["usage"] is None for e in earlier)


def test_stream_with_n_choices_interleaves_and_each_joins_to_its_content():
    answer = generate({"n": 3, "max_tokens": 5}, mean=200)
    events = answer.stream_events(include_usage=False)
    for c in answer.choices:
        mine = [e["choices"][0] for e in events[1:] if e["choices"][0]["index"] == c.index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert "".join(x["delta"].get("content", "") for x in mine) == c.content
        assert mine[-1]["finish_reason"] == "length"
    # Interleaved step by step: choice indices of the content frames cycle 0, 1, 2.
    indices = [e["choices"][0]["index"] for e in events[1:]]
    assert indices[:6] == [0, 0, 1, 1, 2, 2]  # role frames ride with the first token


def test_stream_timeline_steps():
    answer = generate({"max_tokens": 3}, mean=200)
    timeline = answer.stream_timeline(include_usage=True)
    steps = [s for s, _ in timeline]
    assert steps == [-1, 0, 0, 1, 2, 2, 2]  # filter, role+token, token, token+finish+usage


def test_tool_call_stream_frames():
    answer = generate({"tools": [WEATHER], "tool_choice": "required"})
    call = answer.choices[0].tool_calls[0]
    events = answer.stream_events(include_usage=False)
    header = events[1]["choices"][0]["delta"]
    assert header == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"index": 0, "id": call["id"], "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ],
    }
    fragments = events[2:-1]
    assert fragments
    assert all(list(f["choices"][0]["delta"]) == ["tool_calls"] for f in fragments)
    assert all(f["choices"][0]["delta"]["tool_calls"][0]["index"] == 0 for f in fragments)
    joined = "".join(f["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for f in fragments)
    assert joined == call["function"]["arguments"]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
