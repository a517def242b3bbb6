"""The OpenAI API surface, end to end: the openai SDK and httpx against a real mitmdump.

Chat, streaming, completions, embeddings, v1 paths, tools and structured output, each checked
for what a user of the SDK would see.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from typing import Literal

import httpx
import jsonschema
import pytest
from helpers import (
    BOOKING_PARAMETERS,
    BOOKING_TOOL,
    HELLO,
    HELLO_PROMPT_TOKENS,
    ORDER_SCHEMA,
    WEATHER_PARAMETERS,
    WEATHER_TOOL,
    async_azure,
    azure,
    count,
    deployment_url,
    encode,
    v1,
)
from pydantic import BaseModel

USER = [{"role": "user", "content": "Tell me a story."}]


# --- chat completions ---------------------------------------------------------------------


def test_chat_answer_has_text_and_exact_usage(simulator):
    r = azure(simulator).chat.completions.create(model="gpt-4o", messages=HELLO)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "stop"  # no limit: the answer ends by itself
    assert r.usage.prompt_tokens == HELLO_PROMPT_TOKENS
    assert r.usage.completion_tokens == count(choice.message.content)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")


def test_max_tokens_cuts_the_answer_and_says_length(simulator):
    r = azure(simulator).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=7)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7 == count(r.choices[0].message.content)
    assert r.usage.prompt_tokens == HELLO_PROMPT_TOKENS


def test_a_generous_max_tokens_does_not_cut(simulator):
    r = azure(simulator).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=2000)
    assert r.choices[0].finish_reason == "stop"
    assert 0 < r.usage.completion_tokens < 2000
    assert r.usage.completion_tokens == count(r.choices[0].message.content)


def test_max_completion_tokens_limits_like_max_tokens(simulator):
    r = azure(simulator).chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_completion_tokens=4)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4 == count(r.choices[0].message.content)


def test_n_gives_that_many_choices_counted_together(simulator):
    r = azure(simulator).chat.completions.create(model="gpt-4o", messages=HELLO, n=3, max_tokens=30)
    assert [c.index for c in r.choices] == [0, 1, 2]
    contents = [c.message.content for c in r.choices]
    assert all(contents) and len(set(contents)) == 3
    assert r.usage.completion_tokens == sum(count(c) for c in contents)
    assert r.usage.prompt_tokens == HELLO_PROMPT_TOKENS


@pytest.mark.parametrize(
    "deployment, version",
    [
        ("gpt-4o", "gpt-4o-2024-11-20"),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("an-undefined-chat", "gpt-4o-2024-11-20"),
    ],
)
def test_model_is_the_model_version_not_the_deployment(simulator, deployment, version):
    r = azure(simulator).chat.completions.create(model=deployment, messages=HELLO, max_tokens=2)
    assert r.model == version


def test_content_filter_results_and_request_ids(simulator):
    client = azure(simulator)
    client_id = str(uuid.uuid4())
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, max_tokens=3, extra_headers={"x-ms-client-request-id": client_id}
    )
    body = json.loads(raw.http_response.text)
    prompt_filter = body["prompt_filter_results"]
    assert [p["prompt_index"] for p in prompt_filter] == [0]
    assert prompt_filter[0]["content_filter_results"]["jailbreak"] == {"filtered": False, "detected": False}
    answer_filter = body["choices"][0]["content_filter_results"]
    assert {"hate", "self_harm", "sexual", "violence"} <= set(answer_filter)
    assert all(v["filtered"] is False for v in answer_filter.values())
    # The parsed object keeps Azure's extra fields too.
    parsed = raw.parse()
    assert parsed.prompt_filter_results == prompt_filter
    request_id = raw.headers["apim-request-id"]
    assert uuid.UUID(request_id) and raw.headers["x-request-id"] == request_id
    assert raw.headers["x-ms-client-request-id"] == client_id
    again = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO, max_tokens=3)
    assert again.headers["apim-request-id"] != request_id


def test_stop_sequence_ends_the_answer_before_it(simulator):
    client = azure(simulator)
    # Every made-up sentence ends with a full stop, so "." always stops the answer.
    r = client.chat.completions.create(model="gpt-4o", messages=USER, stop=["\n", "."])
    content = r.choices[0].message.content
    assert content and "." not in content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == count(content)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="gpt-4o", messages=USER, stop=".", stream=True)
        if c.choices
    )
    assert streamed and "." not in streamed
    completion = client.completions.create(model="gpt-35-turbo-instruct", prompt="Once", stop=".", max_tokens=200)
    assert completion.choices[0].text and "." not in completion.choices[0].text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == count(completion.choices[0].text, "cl100k_base")


# --- seeds --------------------------------------------------------------------------------


def test_seed_gives_the_same_answer_twice(simulator_factory):
    client = azure(simulator_factory({"SIMULATOR_SEED": "", "SIMULATOR_LATENCY": "false"}))

    def ask(seed: int) -> str:
        return client.chat.completions.create(model="gpt-4o", messages=USER, seed=seed).choices[0].message.content

    assert ask(1234) == ask(1234)
    assert ask(1234) != ask(4321)
    # Without a seed the answers vary.
    free = {client.chat.completions.create(model="gpt-4o", messages=USER).choices[0].message.content for _ in range(3)}
    assert len(free) > 1


def test_simulator_seed_makes_every_answer_reproducible(simulator_factory):
    sim = simulator_factory({"SIMULATOR_SEED": "42", "SIMULATOR_LATENCY": "false"})
    client = azure(sim)
    first = client.chat.completions.create(model="gpt-4o", messages=USER).choices[0].message.content
    second = client.chat.completions.create(model="gpt-4o", messages=USER).choices[0].message.content
    assert first == second
    vectors = [
        client.embeddings.create(model="text-embedding-3-small", input="seeded").data[0].embedding for _ in range(2)
    ]
    assert vectors[0] == vectors[1]
    other = client.chat.completions.create(model="gpt-4o", messages=HELLO).choices[0].message.content
    assert other != first


# --- streaming ----------------------------------------------------------------------------


def test_stream_deltas_join_to_the_counted_text(simulator):
    stream = azure(simulator).chat.completions.create(
        model="gpt-4o", messages=HELLO, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].prompt_filter_results and chunks[0].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    usage_frames = [c for c in chunks if c.usage is not None]
    assert len(usage_frames) == 1 and usage_frames[0] is chunks[-1] and chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage.completion_tokens == 12 == count(text)
    assert usage.prompt_tokens == HELLO_PROMPT_TOKENS
    assert {c.model for c in chunks[1:]} == {"gpt-4o-2024-11-20"}


def test_stream_without_limit_stops_and_has_no_usage_frame(simulator):
    chunks = list(azure(simulator).chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and count(text) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_n_choices_each_finish(simulator):
    chunks = list(
        azure(simulator).chat.completions.create(
            model="gpt-4o", messages=HELLO, n=2, max_tokens=5, stream=True, stream_options={"include_usage": True}
        )
    )
    texts = {0: "", 1: ""}
    finished = {}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert finished == {0: "length", 1: "length"}
    assert count(texts[0]) == count(texts[1]) == 5
    assert chunks[-1].usage.completion_tokens == 10


def test_async_client_streams(simulator):
    async def main() -> tuple[str, str | None, int]:
        client = async_azure(simulator)
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=9, stream=True, stream_options={"include_usage": True}
        )
        text, finish, used = "", None, 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                used = chunk.usage.completion_tokens
        await client.close()
        return text, finish, used

    text, finish, used = asyncio.run(main())
    assert finish == "length" and used == 9 == count(text)


def test_async_client_non_streamed(simulator):
    async def main():
        client = async_azure(simulator)
        answers = await asyncio.gather(
            *(client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5) for _ in range(5))
        )
        await client.close()
        return answers

    answers = asyncio.run(main())
    assert [a.usage.completion_tokens for a in answers] == [5] * 5


def test_raw_stream_is_server_sent_events_ending_with_done(simulator):
    body = {"messages": HELLO, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", deployment_url(simulator, "gpt-4o"), json=body, headers={"api-key": simulator.key}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes())
    assert raw.endswith(b"data: [DONE]\n\n")
    events = [e for e in raw.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    frames = [json.loads(e[6:]) for e in events[:-1]]
    assert frames[0]["prompt_filter_results"] and frames[0]["choices"] == []
    assert frames[1]["choices"][0]["delta"]["role"] == "assistant"
    assert frames[-1]["choices"][0]["finish_reason"] == "length"


# --- completions --------------------------------------------------------------------------


def test_completions_default_to_16_tokens(simulator):
    r = azure(simulator).completions.create(model="gpt-35-turbo-instruct", prompt="Once upon a time")
    choice = r.choices[0]
    assert r.object == "text_completion" and r.model == "gpt-35-turbo-instruct"
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 16 == count(choice.text, "cl100k_base")
    assert r.usage.prompt_tokens == count("Once upon a time", "cl100k_base")


def test_completions_max_tokens_and_echo(simulator):
    prompt = "The quick brown fox"
    r = azure(simulator).completions.create(model="gpt-35-turbo-instruct", prompt=prompt, max_tokens=5, echo=True)
    text = r.choices[0].text
    assert text.startswith(prompt) and len(text) > len(prompt)
    assert count(text[len(prompt) :], "cl100k_base") == 5 == r.usage.completion_tokens


def test_completions_list_of_prompts(simulator):
    prompts = ["First prompt", "A second, longer prompt"]
    raw = azure(simulator).completions.with_raw_response.create(
        model="gpt-35-turbo-instruct", prompt=prompts, max_tokens=3, echo=True
    )
    r = raw.parse()
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.text[: len(p)] for c, p in zip(r.choices, prompts, strict=False)] == prompts
    assert r.usage.prompt_tokens == sum(count(p, "cl100k_base") for p in prompts)
    assert r.usage.completion_tokens == 6
    assert [p["prompt_index"] for p in raw.http_response.json()["prompt_filter_results"]] == [0, 1]


# --- embeddings ---------------------------------------------------------------------------


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in vector))


def test_embeddings_base64_and_float_decode_to_the_same_unit_vector(simulator):
    client = azure(simulator)
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="The same words")
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"  # the SDK's default
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)
    from_base64 = raw.parse().data[0].embedding
    from_float = (
        client.embeddings.create(model="text-embedding-3-small", input="The same words", encoding_format="float")
        .data[0]
        .embedding
    )
    assert len(from_base64) == 1536
    assert from_base64 == pytest.approx(from_float, abs=1e-7)
    assert norm(from_float) == pytest.approx(1.0, abs=1e-5)


def test_embeddings_same_input_same_vector_different_input_different(simulator):
    client = azure(simulator)
    r = client.embeddings.create(model="text-embedding-ada-002", input=["apple", "pear", "apple"])
    assert [d.index for d in r.data] == [0, 1, 2]
    apple, pear, apple_again = (d.embedding for d in r.data)
    assert apple == apple_again and apple != pear
    alone = client.embeddings.create(model="text-embedding-ada-002", input="apple").data[0].embedding
    assert alone == pytest.approx(apple, abs=1e-7)
    assert r.model == "text-embedding-ada-002"


def test_embeddings_dimensions(simulator):
    r = azure(simulator).embeddings.create(model="text-embedding-3-small", input="short", dimensions=256)
    assert len(r.data[0].embedding) == 256
    assert norm(r.data[0].embedding) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "value, vectors, used",
    [
        ("a string of words", 1, None),
        (["one", "two words", "three more words"], 3, None),
        ([9906, 1917, 0], 1, 3),
        ([[9906, 1917], [40, 1097, 264, 8415]], 2, 6),
    ],
)
def test_embeddings_input_forms_and_usage(simulator, value, vectors, used):
    r = azure(simulator).embeddings.create(model="text-embedding-3-small", input=value)
    assert len(r.data) == vectors and all(len(d.embedding) == 1536 for d in r.data)
    if used is None:
        strings = [value] if isinstance(value, str) else value
        used = sum(count(s, "cl100k_base") for s in strings)
    assert r.usage.prompt_tokens == r.usage.total_tokens == used


def test_token_array_embeds_like_its_text(simulator):
    # LangChain sends token arrays; a vector store mixing it with plain strings must still match.
    text = "Hello world, embeddings."
    ids = encode(text, "cl100k_base")
    client = azure(simulator)
    by_text = client.embeddings.create(model="text-embedding-3-small", input=text).data[0].embedding
    by_ids = client.embeddings.create(model="text-embedding-3-small", input=ids).data[0].embedding
    assert by_ids == pytest.approx(by_text, abs=1e-7)


# --- v1 paths -----------------------------------------------------------------------------


def test_v1_chat_and_embeddings_take_the_deployment_from_the_body(simulator):
    client = v1(simulator)
    r = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=6)
    assert r.model == "gpt-4o-mini-2024-07-18"
    assert r.usage.completion_tokens == 6 == count(r.choices[0].message.content)
    e = client.embeddings.create(model="text-embedding-3-small", input="v1 path", dimensions=64)
    assert len(e.data[0].embedding) == 64


def test_v1_models_lists_the_deployments(simulator):
    models = {m.id: m for m in v1(simulator).models.list()}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-35-turbo-instruct", "text-embedding-3-small"} <= set(models)
    assert models["gpt-4o"].model_extra["model"] == "gpt-4o-2024-11-20"


def test_v1_without_model_is_a_bad_request(simulator):
    r = httpx.post(
        simulator.url + "/openai/v1/chat/completions",
        json={"messages": HELLO},
        headers={"authorization": f"Bearer {simulator.key}"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


# --- tools --------------------------------------------------------------------------------


def test_required_tool_choice_calls_a_tool_with_valid_arguments(simulator):
    client = azure(simulator)
    for _ in range(5):  # different draws of enum values, bounds and array lengths
        r = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[BOOKING_TOOL], tool_choice="required")
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls  # one or several: parallel calls are allowed
        for call in choice.message.tool_calls:
            assert call.id.startswith("call_") and call.type == "function"
            assert call.function.name == "book_hotel"
            jsonschema.validate(
                json.loads(call.function.arguments), BOOKING_PARAMETERS, format_checker=jsonschema.FormatChecker()
            )


def test_named_tool_choice_calls_that_tool(simulator):
    r = azure(simulator).chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[BOOKING_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
    assert r.usage.prompt_tokens > count(USER[0]["content"])  # the tools count as prompt


def test_streamed_tool_call_assembles_to_valid_arguments(simulator):
    stream = azure(simulator).chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[BOOKING_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function.name:
                call["name"] = delta.function.name
            call["arguments"] += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] == "book_hotel"
    jsonschema.validate(
        json.loads(calls[0]["arguments"]), BOOKING_PARAMETERS, format_checker=jsonschema.FormatChecker()
    )


def test_after_a_tool_result_the_answer_is_text(simulator):
    client = azure(simulator)
    first = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [c.model_dump() for c in first.choices[0].message.tool_calls],
    }
    messages = USER + [assistant, {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].message.content
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_tool_choice_none_answers_in_text(simulator):
    r = azure(simulator).chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=5
    )
    assert r.choices[0].message.tool_calls is None
    assert count(r.choices[0].message.content) == 5


# --- structured output --------------------------------------------------------------------


def test_json_object_content_parses(simulator):
    r = azure(simulator).chat.completions.create(model="gpt-4o", messages=USER, response_format={"type": "json_object"})
    content = r.choices[0].message.content
    assert isinstance(json.loads(content), dict)
    assert r.usage.completion_tokens == count(content)


def test_json_schema_content_validates(simulator):
    client = azure(simulator)
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "strict": True, "schema": ORDER_SCHEMA}}
    for _ in range(8):  # different branches of the anyOf
        content = (
            client.chat.completions.create(model="gpt-4o", messages=USER, response_format=fmt)
            .choices[0]
            .message.content
        )
        value = json.loads(content)
        jsonschema.validate(value, ORDER_SCHEMA)
        assert isinstance(value["items"], list)


class Item(BaseModel):
    name: str
    size: Literal["S", "M", "L"]
    count: int


class Basket(BaseModel):
    owner: str
    items: list[Item]
    coupon: str | None


def test_sdk_parse_with_a_pydantic_model(simulator):
    r = azure(simulator).chat.completions.parse(model="gpt-4o", messages=USER, response_format=Basket)
    basket = r.choices[0].message.parsed
    assert isinstance(basket, Basket)
    assert all(isinstance(i, Item) for i in basket.items)


def test_azure_deployment_argument_picks_the_path(simulator):
    client = azure(simulator, azure_deployment="gpt-4o-mini")
    r = client.chat.completions.create(model="ignored-by-the-path", messages=HELLO, max_tokens=2)
    assert r.model == "gpt-4o-mini-2024-07-18"
