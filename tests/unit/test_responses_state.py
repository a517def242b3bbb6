"""The Responses API's log probabilities, encrypted reasoning, `include` values and parallel
function calls: pure functions of the body, the model and a seeded generator."""

from __future__ import annotations

import random

import pytest

from aoai.openai import catalogue, chat, responses, responses_checks, sealed_reasoning, tokens
from aoai.openai.catalogue import Normal
from aoai.openai.validation import Invalid

GPT4O = catalogue.MODELS["gpt-4o"]
O4 = catalogue.MODELS["o4-mini"]
SETTINGS = chat.ChatSettings(Normal(30, 0), 1.0, max_parallel_tool_calls=3)  # a deployment allowing 3 calls
TOOL = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
LOGPROBS = ["message.output_text.logprobs"]


def answer(body: dict, model=GPT4O, seed: int = 1) -> responses.ResponseAnswer:
    responses.check_responses(body, model)
    enc = tokens.encoding(model.encoding)
    return responses.generate(body, model, responses.count_input(body, [], enc), [], random.Random(seed), SETTINGS)


def text_part(a: responses.ResponseAnswer) -> dict:
    return next(o.item for o in a.output if o.item["type"] == "message")["content"][0]


def test_logprobs_are_the_answers_tokens_with_sorted_alternatives():
    a = answer({"input": "Hi", "include": LOGPROBS, "top_logprobs": 3})
    part, ids = text_part(a), next(o.token_ids for o in a.output if o.item["type"] == "message")
    enc = tokens.encoding(GPT4O.encoding)
    assert [bytes(e["bytes"]) for e in part["logprobs"]] == [enc.decode_single_token_bytes(t) for t in ids]
    assert b"".join(bytes(e["bytes"]) for e in part["logprobs"]).decode() == part["text"]
    for entry in part["logprobs"]:
        top = entry["top_logprobs"]
        assert len(top) == 3 and entry["logprob"] <= 0
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0]["token"] == entry["token"] and top[0]["logprob"] == entry["logprob"]
        assert all(t["token"] for t in top) and len({t["token"] for t in top}) == 3


def test_logprobs_are_the_same_for_a_seed_and_leave_the_answer_unchanged():
    asked = answer({"input": "Hi", "include": LOGPROBS, "top_logprobs": 2}, seed=5)
    again = answer({"input": "Hi", "include": LOGPROBS, "top_logprobs": 2}, seed=5)
    plain = answer({"input": "Hi"}, seed=5)
    assert text_part(asked)["logprobs"] == text_part(again)["logprobs"] != []
    assert text_part(asked)["text"] == text_part(plain)["text"]
    assert text_part(plain)["logprobs"] == []


def test_stream_deltas_carry_their_tokens_logprobs():
    a = answer({"input": "Hi", "include": LOGPROBS, "top_logprobs": 1})
    deltas = [e for _, e in a.stream_timeline() if e["type"] == "response.output_text.delta"]
    part = text_part(a)
    assert [d["logprobs"][0]["token"] for d in deltas] == [e["token"] for e in part["logprobs"]]
    assert [d["delta"] for d in deltas] == [e["token"] for e in part["logprobs"]]
    assert all(len(d["logprobs"][0]["top_logprobs"]) == 1 for d in deltas)


def test_top_logprobs_zero_gives_no_alternatives():
    part = text_part(answer({"input": "Hi", "include": LOGPROBS, "top_logprobs": 0}))
    assert part["logprobs"] and all(e["top_logprobs"] == [] for e in part["logprobs"])


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"include": LOGPROBS}, "include[0]", "unsupported_parameter"),
        ({"top_logprobs": 2}, "top_logprobs", "unsupported_parameter"),
    ],
)
def test_reasoning_models_refuse_logprobs(body, param, code):
    with pytest.raises(Invalid) as e:
        responses.check_responses({"input": "Hi", **body}, O4)
    assert (e.value.status, e.value.param, e.value.code) == (400, param, code)


@pytest.mark.parametrize("value", ["web_search_call.results", "message.output_text", ""])
def test_an_include_value_azure_does_not_list_is_refused_by_name(value):
    with pytest.raises(Invalid) as e:
        responses.check_responses({"input": "Hi", "include": ["reasoning.encrypted_content", value]}, GPT4O)
    assert e.value.param == "include[1]" and e.value.code == "invalid_value" and f"'{value}'" in e.value.message


def test_every_include_value_the_spec_lists_is_accepted():
    responses.check_responses({"input": "Hi", "include": list(responses_checks.INCLUDABLE)}, GPT4O)


def test_encrypted_reasoning_is_returned_read_back_and_counted_as_input():
    a = answer({"input": "Hi", "include": ["reasoning.encrypted_content"], "store": False}, O4)
    reasoning = a.output[0].item
    assert sealed_reasoning.unseal(reasoning["encrypted_content"]) == a.reasoning_tokens > 0
    plain = answer({"input": "Hi", "store": False}, O4)
    assert "encrypted_content" not in plain.output[0].item
    enc = tokens.encoding(O4.encoding)
    turn = [{"role": "user", "content": "Hi"}, reasoning, {"role": "user", "content": "And?"}]
    without = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "And?"}]
    body = {"input": turn, "store": False}
    responses.check_responses(body, O4)
    assert (
        responses.count_input(body, [], enc) == responses.count_input({"input": without}, [], enc) + a.reasoning_tokens
    )


def test_a_reasoning_item_by_id_alone_is_not_found_without_store():
    item = {"type": "reasoning", "id": "rs_abc", "summary": []}
    with pytest.raises(Invalid) as e:
        responses.check_responses({"input": [item], "store": False}, O4)
    assert e.value.status == 404 and e.value.param == "input"
    assert e.value.message.startswith("Item with id 'rs_abc' not found. Items are not persisted when `store`")
    responses.check_responses({"input": [item]}, O4)  # stored responses may resolve it


def test_encrypted_content_the_simulator_did_not_seal_is_refused():
    sealed = sealed_reasoning.seal(100)
    altered = sealed[:-3] + ("AAA" if sealed[-3:] != "AAA" else "BBB")
    for content in (altered, "not-ours"):
        item = {"type": "reasoning", "id": "rs_abc", "summary": [], "encrypted_content": content}
        with pytest.raises(Invalid) as e:
            responses.check_responses({"input": [item], "store": False}, O4)
        assert e.value.code == "invalid_encrypted_content"
    assert sealed_reasoning.unseal(sealed) == 100


def test_parallel_tool_calls_give_several_calls_bounded_by_the_deployments_setting():
    counts = set()
    for seed in range(30):
        a = answer({"input": "Hi", "tools": [TOOL], "tool_choice": "required"}, seed=seed)
        calls = [o for o in a.output if o.item["type"] == "function_call"]
        counts.add(len(calls))
        assert len({c.item["call_id"] for c in calls}) == len(calls)
        assert a.output_tokens >= sum(len(c.token_ids) for c in calls)
    assert counts == set(range(1, SETTINGS.max_parallel_tool_calls + 1))


@pytest.mark.parametrize(
    "body",
    [
        {"parallel_tool_calls": False, "tool_choice": "required"},
        {"tool_choice": {"type": "function", "name": "lookup"}},
    ],
)
def test_one_call_when_parallel_calls_are_off_or_one_function_is_forced(body):
    for seed in range(20):
        a = answer({"input": "Hi", "tools": [TOOL], **body}, seed=seed)
        assert sum(o.item["type"] == "function_call" for o in a.output) == 1


def test_parallel_calls_stream_with_their_own_output_index():
    for seed in range(30):
        a = answer({"input": "Hi", "tools": [TOOL], "tool_choice": "required"}, seed=seed)
        if len(a.output) > 1:
            break
    timeline = [e for _, e in a.stream_timeline()]
    added = [e for e in timeline if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == list(range(len(a.output)))
    for index, output in enumerate(a.output):
        args = "".join(
            e["delta"]
            for e in timeline
            if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index
        )
        assert args == output.item["arguments"] and all(
            e["item_id"] == output.item["id"] for e in timeline if e.get("output_index") == index and "item_id" in e
        )


def test_workers_sharing_a_secret_read_each_others_encrypted_reasoning():
    before = list(sealed_reasoning._KEYS)
    try:
        sealed_reasoning.share_key("a secret the workers share")
        sealed = sealed_reasoning.seal(42)
        sealed_reasoning._KEYS[:] = [b"another process's own key......."]
        assert sealed_reasoning.unseal(sealed) is None
        sealed_reasoning.share_key("a secret the workers share")
        assert sealed_reasoning.unseal(sealed) == 42
    finally:
        sealed_reasoning._KEYS[:] = before
