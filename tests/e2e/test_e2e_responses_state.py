"""Log probabilities, encrypted reasoning and parallel function calls in the Responses API, end
to end through a real mitmdump with the openai SDK and the OpenAI Agents SDK."""

from __future__ import annotations

import openai
import pytest
from helpers import researcher, v1

LOOKUP = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def test_output_text_logprobs_are_parsed_by_the_sdk_and_streamed(simulator):
    client = v1(simulator)
    response = client.responses.create(
        model="gpt-4o", input="Hi", include=["message.output_text.logprobs"], top_logprobs=2, max_output_tokens=40
    )
    part = response.output[0].content[0]
    assert part.logprobs and "".join(lp.token for lp in part.logprobs) == part.text
    assert all(len(lp.top_logprobs) == 2 and lp.top_logprobs[0].logprob == lp.logprob for lp in part.logprobs)
    with client.responses.stream(
        model="gpt-4o", input="Hi", include=["message.output_text.logprobs"], top_logprobs=1, max_output_tokens=40
    ) as stream:
        deltas = [e for e in stream if e.type == "response.output_text.delta"]
    assert deltas and all(e.logprobs and e.logprobs[0].token == e.delta for e in deltas)


def test_a_reasoning_model_refuses_logprobs(simulator):
    with pytest.raises(openai.BadRequestError) as e:
        v1(simulator).responses.create(model="o4-mini", input="Hi", include=["message.output_text.logprobs"])
    assert e.value.body["code"] == "unsupported_parameter"


def test_encrypted_reasoning_goes_back_without_store_and_counts_as_input(simulator):
    client = v1(simulator)
    first = client.responses.create(
        model="o4-mini", input="Think.", store=False, include=["reasoning.encrypted_content"]
    )
    reasoning = next(o for o in first.output if o.type == "reasoning")
    assert reasoning.encrypted_content
    turn = [{"role": "user", "content": "Think."}, reasoning.model_dump(exclude_none=True)]
    turn.append({"role": "user", "content": "Again."})
    second = client.responses.create(model="o4-mini", input=turn, store=False)
    bare = client.responses.create(
        model="o4-mini", input=[turn[0], turn[2]], store=False, include=["reasoning.encrypted_content"]
    )
    assert second.usage.input_tokens == bare.usage.input_tokens + first.usage.output_tokens_details.reasoning_tokens
    by_id = {"type": "reasoning", "id": reasoning.id, "summary": []}
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="o4-mini", input=[turn[0], by_id], store=False)
    assert "Items are not persisted when `store` is set to false" in e.value.body["message"]


def test_parallel_function_calls_stream_each_with_its_output_index(simulator):
    client = v1(simulator)
    for seed in range(20):
        response = client.responses.create(
            model="gpt-4o", input=f"Look up {seed}", tools=[LOOKUP], tool_choice="required", max_output_tokens=400
        )
        if len(response.output) > 1:
            break
    assert len(response.output) > 1 and all(o.type == "function_call" for o in response.output)
    with client.responses.stream(
        model="gpt-4o", input=f"Look up {seed}", tools=[LOOKUP], tool_choice="required", max_output_tokens=400
    ) as stream:
        added = [e.output_index for e in stream if e.type == "response.output_item.added"]
        final = stream.get_final_response()
    assert added == list(range(len(final.output)))


def test_agents_sdk_carries_encrypted_reasoning_without_store(simulator):
    agents = pytest.importorskip("agents")
    agents, agent, called = researcher(
        simulator,
        "o4-mini",
        "Look it up, then answer.",
        model_settings=agents.ModelSettings(store=False, response_include=["reasoning.encrypted_content"]),
    )
    first = agents.Runner.run_sync(agent, "What is the tallest tree?")
    assert called and first.final_output
    items = first.to_input_list()
    carried = [i for i in items if i.get("type") == "reasoning"]
    assert carried and all(i.get("encrypted_content") for i in carried)
    second = agents.Runner.run_sync(agent, [*items, {"role": "user", "content": "And the oldest?"}])
    assert second.final_output


def test_agents_sdk_runs_parallel_function_calls(simulator):
    agents = pytest.importorskip("agents")
    agents, agent, called = researcher(
        simulator,
        "gpt-4o",
        "Look things up, then answer.",
        model_settings=agents.ModelSettings(tool_choice="required", parallel_tool_calls=True, max_tokens=400),
        tool_use_behavior="stop_on_first_tool",
    )
    runs = 0
    while runs < 20 and len(called) < 2:
        called.clear()
        result = agents.Runner.run_sync(agent, f"Look up three things ({runs}).")
        runs += 1
    calls = [i for i in result.new_items if i.type == "tool_call_item"]
    assert len(called) == len(calls) >= 2
