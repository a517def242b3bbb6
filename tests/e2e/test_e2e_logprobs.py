"""Log probabilities and several tool calls through the openai SDK and LangChain, against a real mitmdump."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from conftest import API_VERSION, Simulator, start_simulator
from helpers import HELLO, WEATHER_TOOL, azure
from langchain_openai import AzureChatOpenAI

DEPLOYMENTS = {
    "chat": {"model": "gpt-4o", "maxParallelToolCalls": 4},
    "reasoner": {"model": "o4-mini"},
    "instruct": {"model": "gpt-35-turbo-instruct"},
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Iterator[Simulator]:
    folder = tmp_path_factory.mktemp("deployments")
    path = folder / "deployments.json"
    path.write_text(json.dumps(DEPLOYMENTS))
    started = start_simulator(folder, {"SIMULATOR_LATENCY": "false", "OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)})
    yield started
    started.stop()


def test_chat_logprobs_parsed_by_the_sdk(sim):
    answer = azure(sim).chat.completions.create(model="chat", messages=HELLO, logprobs=True, top_logprobs=2, seed=3)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == t.logprob for t in content)
    assert all(bytes(t.bytes).decode() == t.token for t in content if t.token.isascii())
    again = azure(sim).chat.completions.create(model="chat", messages=HELLO, logprobs=True, top_logprobs=2, seed=3)
    assert again.choices[0].logprobs == answer.choices[0].logprobs


def test_streamed_chat_logprobs_parsed_by_the_sdk(sim):
    stream = azure(sim).chat.completions.create(
        model="chat", messages=HELLO, logprobs=True, top_logprobs=1, stream=True, seed=3
    )
    text, tokens = "", []
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.logprobs is not None:
                tokens += choice.logprobs.content
    assert text and "".join(t.token for t in tokens) == text


def test_logprobs_checks(sim):
    with pytest.raises(openai.BadRequestError, match="only allowed when 'logprobs' is true"):
        azure(sim).chat.completions.create(model="chat", messages=HELLO, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="'logprobs' is not supported with this model"):
        azure(sim).chat.completions.create(model="reasoner", messages=HELLO, logprobs=True)


def test_completions_logprobs_with_echo(sim):
    answer = azure(sim).completions.create(model="instruct", prompt="Once upon", logprobs=2, echo=True, max_tokens=4)
    probs = answer.choices[0].logprobs
    assert "".join(probs.tokens) == answer.choices[0].text
    assert probs.token_logprobs[0] is None and probs.text_offset[0] == 0
    assert all(len(alternatives) == 2 for alternatives in probs.top_logprobs[1:])


def test_parallel_tool_call_round_trip(sim):
    client = azure(sim)
    messages = [{"role": "user", "content": "Weather in Paris, Oslo and Rome?"}]
    seed = 0
    while True:  # a seed whose answer calls more than one tool
        first = client.chat.completions.create(
            model="chat", messages=messages, tools=[WEATHER_TOOL], tool_choice="required", seed=seed
        )
        if len(first.choices[0].message.tool_calls) > 1:
            break
        seed += 1
        assert seed < 40
    calls = first.choices[0].message.tool_calls
    assert len({c.id for c in calls}) == len(calls)
    # Streamed (another body, so another draw): each call's fragments joined by their index.
    streamed: dict[int, dict] = {}
    for stream_seed in range(40):
        streamed = {}
        for chunk in client.chat.completions.create(
            model="chat", messages=messages, tools=[WEATHER_TOOL], tool_choice="required", seed=stream_seed, stream=True
        ):
            for choice in chunk.choices:
                for part in choice.delta.tool_calls or []:
                    call = streamed.setdefault(part.index, {"id": part.id, "name": part.function.name, "arguments": ""})
                    call["arguments"] += part.function.arguments or ""
        if len(streamed) > 1:
            break
    assert sorted(streamed) == list(range(len(streamed))) and len(streamed) > 1
    for call in streamed.values():
        assert call["id"] and call["name"] == "get_weather"
        json.loads(call["arguments"])
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in calls]
    final = client.chat.completions.create(model="chat", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    single = client.chat.completions.create(
        model="chat", messages=messages[:1], tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False
    )
    assert len(single.choices[0].message.tool_calls) == 1


def test_langchain_logprobs_in_response_metadata(sim):
    model = AzureChatOpenAI(
        azure_endpoint=sim.url, api_key=sim.key, api_version=API_VERSION, azure_deployment="chat", max_retries=0
    )
    message = model.bind(logprobs=True).invoke("Hello!")
    content = message.response_metadata["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == message.content
