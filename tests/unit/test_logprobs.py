"""Log probabilities on chat and legacy completions, and chat answers calling several tools."""

import random

import pytest

from aoai.openai import catalogue, chat, completions, tokens, validation
from aoai.openai.catalogue import Normal
from aoai.runtime.config import ConfigError, parse_deployment

GPT4O = catalogue.MODELS["gpt-4o"]
INSTRUCT = catalogue.MODELS["gpt-35-turbo-instruct"]
USER = [{"role": "user", "content": "Hello!"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def settings(most_calls=1):
    return chat.ChatSettings(Normal(20, 0), 1.0, 131_072, most_calls)


def chat_answer(body, seed=1, most_calls=1):
    return chat.generate({"messages": USER, **body}, GPT4O, 9, random.Random(seed), settings(most_calls))


def completion(body, seed=1):
    return completions.generate({"prompt": "Once upon", **body}, INSTRUCT, 2, random.Random(seed), settings())


def check_entry(entry, token_id, top):
    raw = tokens.encoding(GPT4O.encoding).decode_single_token_bytes(token_id)
    assert entry["bytes"] == list(raw)
    assert entry["token"] == raw.decode("utf-8", "replace")
    assert entry["logprob"] <= 0
    alternatives = entry["top_logprobs"]
    assert len(alternatives) == top
    values = [a["logprob"] for a in alternatives]
    assert values == sorted(values, reverse=True)
    if top:
        assert alternatives[0]["token"] == entry["token"] and values[0] == entry["logprob"]
        assert len({a["token"] for a in alternatives}) == top
        enc = tokens.encoding(GPT4O.encoding)
        for a in alternatives:  # real tokens of the encoding, their bytes as given
            assert enc.encode_single_token(bytes(a["bytes"])) >= 0


# --- Chat -----------------------------------------------------------------------------------------


def test_chat_without_logprobs_answers_null():
    body = chat_answer({}).body()
    assert body["choices"][0]["logprobs"] is None
    assert all(e["choices"][0]["logprobs"] is None for e in chat_answer({}).stream_events(False)[1:])


@pytest.mark.parametrize("top", [0, 2, 20])
def test_chat_logprobs_cover_every_generated_token(top):
    answer = chat_answer({"logprobs": True, "top_logprobs": top})
    choice = answer.body()["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["logprobs"]["refusal"] is None
    ids = answer.choices[0].token_ids
    assert len(content) == len(ids) > 0
    for entry, token_id in zip(content, ids, strict=True):
        check_entry(entry, token_id, top)
    assert "".join(e["token"] for e in content) == choice["message"]["content"]


def test_chat_logprobs_without_top_logprobs_have_no_alternatives():
    content = chat_answer({"logprobs": True}).body()["choices"][0]["logprobs"]["content"]
    assert content and all(e["top_logprobs"] == [] for e in content)


def test_chat_logprobs_are_the_same_for_the_same_seed_and_differ_for_another():
    body = {"logprobs": True, "top_logprobs": 3}
    first = chat_answer(body, seed=5).body()["choices"][0]["logprobs"]
    assert chat_answer(body, seed=5).body()["choices"][0]["logprobs"] == first
    assert chat_answer(body, seed=6).body()["choices"][0]["logprobs"] != first


def test_each_stream_chunk_carries_its_own_tokens_logprobs():
    body = {"logprobs": True, "top_logprobs": 2, "n": 2}
    answer = chat_answer(body)
    whole = {c["index"]: c["logprobs"]["content"] for c in answer.body()["choices"]}
    streamed = {0: [], 1: []}
    for event in answer.stream_events(True):
        for c in event["choices"]:
            if c["delta"].get("content"):
                assert len(c["logprobs"]["content"]) == 1
                assert c["logprobs"]["content"][0]["token"] == c["delta"]["content"]
                streamed[c["index"]] += c["logprobs"]["content"]
            else:
                assert c["logprobs"] is None
    assert streamed == whole


def test_a_tool_call_answer_has_no_content_logprobs():
    choice = chat_answer({"tools": [WEATHER], "tool_choice": "required", "logprobs": True}).body()["choices"][0]
    assert choice["message"]["tool_calls"]
    assert choice["logprobs"] == {"content": None, "refusal": None}


def test_fixed_answers_have_logprobs_too():
    answer = chat.fixed("Hello world", {"messages": USER, "logprobs": True}, GPT4O, 3, random.Random(1))
    content = answer.body()["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == "Hello world"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"top_logprobs": 2}, "top_logprobs", "'top_logprobs' is only allowed when 'logprobs' is true"),
        ({"logprobs": False, "top_logprobs": 2}, "top_logprobs", "only allowed when 'logprobs' is true"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer must be between 0 and 20, got 21"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "integer must be between 0 and 20, got -1"),
        ({"logprobs": "yes"}, "logprobs", "expected a boolean"),
    ],
)
def test_chat_logprobs_checks(body, param, message):
    with pytest.raises(validation.Invalid) as raised:
        validation.check_chat({"messages": USER, **body}, GPT4O)
    assert raised.value.param == param and message in raised.value.message and raised.value.status == 400


@pytest.mark.parametrize("model", ["o3-mini", "o4-mini", "gpt-5", "gpt-5-mini"])
@pytest.mark.parametrize(("body", "param"), [({"logprobs": True}, "logprobs"), ({"top_logprobs": 1}, "top_logprobs")])
def test_reasoning_models_refuse_logprobs(model, body, param):
    with pytest.raises(validation.Invalid) as raised:
        validation.check_chat({"messages": USER, **body}, catalogue.MODELS[model])
    assert raised.value.code == "unsupported_parameter" and raised.value.param == param
    assert raised.value.message == f"Unsupported parameter: '{param}' is not supported with this model."


def test_reasoning_models_take_logprobs_false():
    validation.check_chat({"messages": USER, "logprobs": False}, catalogue.MODELS["o3-mini"])


# --- Legacy completions -----------------------------------------------------------------------------


def test_completion_logprobs_shape():
    answer = completion({"logprobs": 3, "max_tokens": 6})
    choice = answer.body()["choices"][0]
    probs = choice["logprobs"]
    assert "".join(probs["tokens"]) == choice["text"]
    assert len(probs["tokens"]) == len(probs["token_logprobs"]) == len(probs["top_logprobs"]) == 6
    assert all(len(alternatives) == 3 for alternatives in probs["top_logprobs"])
    for token, value, alternatives in zip(probs["tokens"], probs["token_logprobs"], probs["top_logprobs"], strict=True):
        assert alternatives[token] == value == max(alternatives.values())
    # Offsets count from the start of the prompt the text continues.
    assert probs["text_offset"][0] == len("Once upon")
    offsets = probs["text_offset"]
    assert all(offsets[i + 1] - offsets[i] == len(probs["tokens"][i]) for i in range(len(offsets) - 1))


def test_completion_logprobs_with_echo_start_with_the_prompt():
    probs = completion({"logprobs": 1, "echo": True, "max_tokens": 4}).body()["choices"][0]["logprobs"]
    assert probs["tokens"][:2] == ["Once", " upon"]
    assert probs["token_logprobs"][0] is None and probs["top_logprobs"][0] is None
    assert probs["token_logprobs"][1] is not None
    assert probs["text_offset"][:3] == [0, 4, 9]


def test_completion_logprobs_zero_gives_no_alternatives():
    probs = completion({"logprobs": 0}).body()["choices"][0]["logprobs"]
    assert probs["tokens"] and all(a == {} for a in probs["top_logprobs"])


def test_completion_without_logprobs_answers_null():
    assert completion({}).body()["choices"][0]["logprobs"] is None


def test_streamed_completion_frames_carry_their_tokens_logprobs():
    answer = completion({"logprobs": 2, "echo": True, "max_tokens": 5, "seed": 3})
    whole = answer.body()["choices"][0]["logprobs"]
    joined = {key: [] for key in whole}
    for event in answer.stream_events(False)[1:]:
        probs = event["choices"][0]["logprobs"]
        if event["choices"][0]["text"]:
            assert "".join(probs["tokens"]) == event["choices"][0]["text"]
            for key in whole:
                joined[key] += probs[key]
    assert joined == whole


def test_completion_logprobs_are_deterministic():
    assert (
        completion({"logprobs": 2}, seed=4).body()["choices"] == completion({"logprobs": 2}, seed=4).body()["choices"]
    )


# --- Several tool calls ---------------------------------------------------------------------------


def calls(body, seed, most_calls=4):
    return chat_answer({"tools": [WEATHER, CLOCK], **body}, seed=seed, most_calls=most_calls).choices[0].tool_calls


def test_parallel_tool_calls_draw_up_to_the_deployment_setting():
    counts = {len(calls({"tool_choice": "required"}, seed)) for seed in range(60)}
    assert counts == {1, 2, 3, 4}
    ids = [c["id"] for seed in range(10) for c in calls({"tool_choice": "auto"}, seed)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "body",
    [
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    ],
)
def test_one_call_when_the_request_allows_only_one(body):
    for seed in range(20):
        assert len(calls(body, seed)) == 1


def test_one_call_when_the_deployment_allows_only_one():
    assert {len(calls({"tool_choice": "required"}, seed, most_calls=1)) for seed in range(20)} == {1}


def test_several_calls_stream_one_after_another_each_with_its_index():
    seed = next(s for s in range(60) if len(calls({"tool_choice": "required"}, s)) >= 3)
    answer = chat_answer({"tools": [WEATHER, CLOCK], "tool_choice": "required"}, seed=seed, most_calls=4)
    expected = answer.choices[0].tool_calls
    joined: dict[int, dict] = {}
    for event in answer.stream_events(False)[1:]:
        for part in event["choices"][0]["delta"].get("tool_calls", []):
            index = part["index"]
            if index not in joined:  # a call's first fragment names it
                assert part["id"] and part["function"]["name"] and part["type"] == "function"
                assert index == len(joined)
                joined[index] = {"id": part["id"], "name": part["function"]["name"], "arguments": ""}
            else:
                assert "id" not in part
            joined[index]["arguments"] += part["function"]["arguments"]
    assert [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]} for c in expected
    ] == [joined[i] for i in range(len(expected))]
    assert answer.body()["choices"][0]["finish_reason"] == "tool_calls"
    assert answer.completion_tokens == answer.choices[0].tokens > 0


def test_deployment_setting_is_read_and_checked():
    deployment = parse_deployment("d", {"model": "gpt-4o", "maxParallelToolCalls": 5}, "deployments.d")
    assert deployment.max_parallel_tool_calls == 5
    assert deployment.to_json()["maxParallelToolCalls"] == 5
    assert parse_deployment("d", {"model": "gpt-4o"}, "deployments.d").max_parallel_tool_calls == 3
    with pytest.raises(ConfigError, match="maxParallelToolCalls"):
        parse_deployment("d", {"model": "gpt-4o", "maxParallelToolCalls": 0}, "deployments.d")
