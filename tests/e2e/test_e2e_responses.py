"""The Responses API end to end, through a real mitmdump with the openai SDK, LangChain and
the OpenAI Agents SDK: create, retrieve, delete, input items, previous_response_id, streams,
reasoning models and their refusals."""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import openai
import pytest
from conftest import API_KEY
from helpers import count, scrape, v1, value
from openai import AzureOpenAI

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


def preview(sim, version: str = "2025-04-01-preview") -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key=sim.key, api_version=version, max_retries=0)


def test_create_answers_in_words_and_output_text_works(simulator):
    client = v1(simulator)
    response = client.responses.create(
        model="gpt-4o",
        input="Say hello in five words.",
        max_output_tokens=40,
        instructions="Be brief.",
        metadata={"case": "words"},
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.model == "gpt-4o-2024-11-20"
    message = response.output[-1]
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert response.output_text and response.output_text == message.content[0].text
    usage = response.usage
    # As chat counts messages: the instructions are a developer message before the input.
    expected_input = (
        3 + (3 + count("developer") + count("Be brief.")) + (3 + count("user") + count("Say hello in five words."))
    )
    assert usage.input_tokens == expected_input
    assert usage.output_tokens == count(response.output_text) and usage.output_tokens <= 40
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    assert response.instructions == "Be brief." and response.max_output_tokens == 40
    assert response.metadata == {"case": "words"} and response.store is True


def test_a_cut_answer_is_incomplete(simulator):
    response = v1(simulator).responses.create(
        model="gpt-4o", input="Tell me a long story, please.", max_output_tokens=16
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 16


def test_retrieve_input_items_delete_and_404(simulator):
    client = v1(simulator)
    created = client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "developer", "content": "Answer briefly."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png"},
                ],
            },
        ],
        max_output_tokens=30,
    )
    again = client.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == created.output_text
    assert again.usage.input_tokens == created.usage.input_tokens
    items = client.responses.input_items.list(created.id, order="asc")
    assert [i.role for i in items.data] == ["developer", "user"]
    assert items.data[1].content[1].type == "input_image"
    assert all(i.id.startswith("msg_") for i in items.data)
    assert client.responses.input_items.list(created.id).data[0].role == "user"  # newest first by default
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.retrieve(created.id)
    assert raised.value.response.json() == {
        "error": {
            "message": f"Response with id '{created.id}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    r = httpx.delete(f"{simulator.url}/openai/v1/responses/resp_missing", headers={"api-key": API_KEY})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Response with id 'resp_missing' not found."


def test_previous_response_id_carries_the_conversation(simulator):
    client = v1(simulator)
    first = client.responses.create(model="gpt-4o", input="My name is Ada. Remember it.", max_output_tokens=30)
    second = client.responses.create(
        model="gpt-4o", input="What is my name?", previous_response_id=first.id, max_output_tokens=30
    )
    alone = 3 + 3 + count("user") + count("What is my name?")
    earlier = (
        3 + count("user") + count("My name is Ada. Remember it.") + 3 + count("assistant") + count(first.output_text)
    )
    assert second.usage.input_tokens == alone + earlier
    assert second.previous_response_id == first.id
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input="Hi", previous_response_id="resp_nope")
    assert raised.value.code == "previous_response_not_found"


def test_unstored_responses_cannot_be_retrieved(simulator):
    client = v1(simulator)
    response = client.responses.create(model="gpt-4o", input="Do not keep this.", store=False, max_output_tokens=20)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_function_call_arguments_follow_the_schema_and_the_result_gets_words(simulator):
    client = v1(simulator)
    response = client.responses.create(
        model="gpt-4o", input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
    )
    call = response.output[0]
    assert call.type == "function_call" and call.id.startswith("fc_") and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    answer = client.responses.create(
        model="gpt-4o",
        previous_response_id=response.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'}],
        max_output_tokens=30,
    )
    assert answer.output[0].type == "message" and answer.output_text


def test_json_schema_output(simulator):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = v1(simulator).responses.create(
        model="gpt-4o",
        input="A person, please.",
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema"


def test_stream_events_in_order_with_sequence_numbers(simulator):
    client = v1(simulator)
    events = list(
        client.responses.create(model="gpt-4o", input="Stream three words.", max_output_tokens=20, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete" if events[-1].response.status == "incomplete" else "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert "".join(deltas) == final.output_text and len(deltas) == final.usage.output_tokens
    # Azure frames each event with an `event:` line and sends no [DONE].
    raw = httpx.post(
        f"{simulator.url}/openai/v1/responses",
        headers={"api-key": API_KEY},
        json={"model": "gpt-4o", "input": "Raw stream.", "max_output_tokens": 16, "stream": True},
    )
    blocks = [b for b in raw.text.split("\n\n") if b]
    assert all(b.startswith("event: response.") and "\ndata: {" in b for b in blocks)
    assert "[DONE]" not in raw.text


def test_stream_helper_and_tool_call_argument_deltas(simulator):
    client = v1(simulator)
    with client.responses.stream(
        model="gpt-4o",
        input="Weather in Rome?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    call = final.output[0]
    assert "".join(deltas) == call.arguments
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_preview_path_with_api_version(simulator):
    client = preview(simulator)
    response = client.responses.create(model="gpt-4o", input="Hello from the preview path.", max_output_tokens=20)
    assert client.responses.retrieve(response.id).id == response.id
    old = httpx.post(
        f"{simulator.url}/openai/responses?api-version=2024-10-21",
        headers={"api-key": API_KEY},
        json={"model": "gpt-4o", "input": "Too old."},
    )
    assert old.status_code == 400 and old.json()["error"]["message"] == "API version not supported"
    missing = httpx.post(
        f"{simulator.url}/openai/responses",
        headers={"api-key": API_KEY},
        json={"model": "gpt-4o", "input": "No version."},
    )
    assert missing.status_code == 404


def test_reasoning_model_spends_reasoning_tokens_by_effort(simulator):
    client = v1(simulator)
    low = client.responses.create(
        model="o4-mini", input="Think a little.", reasoning={"effort": "low"}, max_output_tokens=2000
    )
    high = client.responses.create(
        model="o4-mini", input="Think hard.", reasoning={"effort": "high", "summary": "auto"}, max_output_tokens=2000
    )
    assert low.output[0].type == "reasoning" and low.output[0].id.startswith("rs_")
    spent_low = low.usage.output_tokens_details.reasoning_tokens
    spent_high = high.usage.output_tokens_details.reasoning_tokens
    assert 0 < spent_low < spent_high
    assert high.output[0].summary and high.reasoning.effort == "high"
    assert low.usage.output_tokens == spent_low + count(low.output_text)
    # A budget the reasoning uses up leaves no visible answer.
    starved = client.responses.create(
        model="o4-mini", input="Think and answer.", reasoning={"effort": "high"}, max_output_tokens=16
    )
    assert starved.status == "incomplete" and starved.output_text == ""
    assert starved.usage.output_tokens == 16 == starved.usage.output_tokens_details.reasoning_tokens


@pytest.mark.parametrize("field, value", [("temperature", 0.2), ("top_p", 0.5)])
def test_reasoning_models_refuse_non_default_sampling(simulator, field, value):
    with pytest.raises(openai.BadRequestError) as raised:
        v1(simulator).responses.create(model="o4-mini", input="Hi", **{field: value})
    assert raised.value.response.json()["error"] == {
        "message": f"Unsupported value: '{field}' does not support {value} with this model. Only the default (1) "
        "value is supported.",
        "type": "invalid_request_error",
        "param": field,
        "code": "unsupported_value",
    }
    # The same on chat completions, where max_tokens is refused too.
    with pytest.raises(openai.BadRequestError) as raised:
        v1(simulator).chat.completions.create(
            model="o4-mini", messages=[{"role": "user", "content": "Hi"}], **{field: value}
        )
    assert raised.value.code == "unsupported_value"
    assert v1(simulator).responses.create(
        model="o4-mini", input="Defaults are fine.", temperature=1, max_output_tokens=500
    ).status in ("completed", "incomplete")


def test_built_in_tools_and_bad_bodies_get_azure_400s(simulator):
    client = v1(simulator)
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input="Search the web.", tools=[{"type": "web_search_preview"}])
    assert raised.value.param == "tools[0].type" and "web_search_preview" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input="Hi", max_output_tokens=5)
    assert raised.value.code == "integer_below_min_value"
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input=[{"type": "bogus"}])
    assert raised.value.param == "input[0].type"
    r = httpx.post(f"{simulator.url}/openai/v1/responses", headers={"api-key": API_KEY}, json={"model": "gpt-4o"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"


def test_langchain_with_the_responses_api(simulator):
    from langchain_openai import AzureChatOpenAI, ChatOpenAI

    llm = ChatOpenAI(
        model="gpt-4o",
        base_url=simulator.url + "/openai/v1/",
        api_key=simulator.key,
        use_responses_api=True,
        max_tokens=30,
        max_retries=0,
    )
    reply = llm.invoke("Hello from LangChain.")
    assert reply.text and reply.response_metadata.get("id", "").startswith("resp_")
    assert reply.usage_metadata["input_tokens"] > 0
    chunks = list(llm.stream("Stream from LangChain."))
    assert "".join(c.text for c in chunks)
    azure_llm = AzureChatOpenAI(
        azure_deployment="gpt-4o",
        azure_endpoint=simulator.url,
        api_key=simulator.key,
        api_version="2025-04-01-preview",
        use_responses_api=True,
        max_tokens=30,
        max_retries=0,
    )
    assert azure_llm.invoke("Hello from Azure LangChain.").text


@pytest.mark.parametrize("model", ["gpt-4o", "o4-mini"])  # a reasoning model sends its reasoning items back
def test_openai_agents_sdk_runs_an_agent_with_a_function_tool(simulator, model):
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"Sunny in {city}."

    client = AsyncOpenAI(base_url=simulator.url + "/openai/v1/", api_key=simulator.key, max_retries=0)
    agent = agents.Agent(
        name="Forecaster",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=model, openai_client=client),
    )
    result = agents.Runner.run_sync(agent, f"What is the weather in Lisbon? ({model})")
    assert called, "the agent called its tool"
    assert isinstance(result.final_output, str) and result.final_output


def long_prompt(words: int = 1500) -> str:
    return " ".join(f"clause{n % 97} of the standing instructions" for n in range(words // 5))


def test_a_repeated_long_prompt_reports_cached_tokens_on_both_apis(simulator):
    client = v1(simulator)
    instructions = long_prompt()
    first = client.responses.create(
        model="gpt-4o", instructions=instructions, input="Question one?", max_output_tokens=16
    )
    second = client.responses.create(
        model="gpt-4o", instructions=instructions, input="Question two?", max_output_tokens=16
    )
    assert first.usage.input_tokens >= 1024 and first.usage.input_tokens_details.cached_tokens == 0
    cached = second.usage.input_tokens_details.cached_tokens
    assert 1024 <= cached <= second.usage.input_tokens and (cached - 1024) % 128 == 0
    assert second.usage.input_tokens - cached < 128 + 20  # all but the differing question and the last step
    messages = [{"role": "system", "content": instructions}]
    chat = [
        client.chat.completions.create(
            model="gpt-4o", max_tokens=5, messages=messages + [{"role": "user", "content": q}]
        )
        for q in ("First?", "Second?")
    ]
    assert chat[0].usage.prompt_tokens_details.cached_tokens == 0
    assert chat[1].usage.prompt_tokens_details.cached_tokens >= 1024
    short = [
        client.responses.create(model="gpt-4o", input="Short and repeated.", max_output_tokens=16) for _ in range(2)
    ]
    assert short[1].usage.input_tokens_details.cached_tokens == 0  # under 1,024 tokens nothing is cached


def test_paced_streams_reasoning_first_and_metrics_by_operation(simulator_factory, tmp_path):
    path = tmp_path / "deployments.json"
    timing = {"timeToFirstTokenMs": {"mean": 200}, "interTokenMs": {"mean": 2}, "requestMs": {"mean": 0}}
    path.write_text(
        json.dumps(
            {"gpt-4o": {"model": "gpt-4o", "latency": timing}, "o4-mini": {"model": "o4-mini", "latency": timing}}
        )
    )
    sim = simulator_factory({"OPENAI_DEPLOYMENT_CONFIG_PATH": str(path)})
    client = v1(sim)

    def first_token(**body) -> float:
        started, first = time.perf_counter(), None
        for event in client.responses.create(stream=True, **body):  # read to the end: metrics count it then
            if first is None and event.type in ("response.output_text.delta", "response.function_call_arguments.delta"):
                first = time.perf_counter() - started
        assert first is not None, "no token arrived"
        return first

    assert 0.15 < first_token(model="gpt-4o", input="Paced, please.", max_output_tokens=30) < 1.5
    quick = first_token(model="o4-mini", input="Answer at once.", reasoning={"effort": "minimal"})
    slow = first_token(model="o4-mini", input="Think first.", reasoning={"effort": "high"})
    # Hidden reasoning tokens (about 448 at 2 ms each) are spent before the first visible one.
    assert quick < 1.0 and slow - quick > 0.3
    samples = scrape(sim)
    assert value(samples, "aoai_requests_total", operation="responses", deployment="gpt-4o") == 1
    assert value(samples, "aoai_time_to_first_token_seconds_count", operation="responses") == 3
    assert value(samples, "aoai_completion_tokens_total", operation="responses") > 0


def test_chat_on_a_reasoning_model_reports_reasoning_tokens_and_an_empty_starved_answer(simulator):
    client = v1(simulator)
    ask = [{"role": "user", "content": "Think, then answer."}]
    low = client.chat.completions.create(
        model="o4-mini", messages=ask, reasoning_effort="low", max_completion_tokens=3000
    )
    high = client.chat.completions.create(
        model="o4-mini", messages=ask, reasoning_effort="high", max_completion_tokens=3000
    )
    spent = [r.usage.completion_tokens_details.reasoning_tokens for r in (low, high)]
    assert 0 < spent[0] < spent[1]
    assert low.usage.completion_tokens == spent[0] + count(low.choices[0].message.content)
    starved = client.chat.completions.create(
        model="o4-mini", messages=ask, reasoning_effort="high", max_completion_tokens=20
    )
    assert starved.choices[0].finish_reason == "length" and starved.choices[0].message.content == ""
    assert starved.usage.completion_tokens == 20 == starved.usage.completion_tokens_details.reasoning_tokens
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="o4-mini", messages=ask, max_tokens=20)
    assert raised.value.code == "unsupported_parameter"


def test_truncation_auto_drops_the_oldest_turns_that_do_not_fit(simulator):
    client = v1(simulator)  # gpt-4: an 8,192-token window
    first = client.responses.create(model="gpt-4", input=long_prompt(5000), max_output_tokens=16)
    assert 4000 < first.usage.input_tokens < 8000
    follow = {"model": "gpt-4", "input": long_prompt(3500), "previous_response_id": first.id, "max_output_tokens": 16}
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(**follow)
    assert raised.value.code == "context_length_exceeded" and raised.value.param == "input"
    fitted = client.responses.create(truncation="auto", **follow)
    alone = client.responses.create(model="gpt-4", input=long_prompt(3500), max_output_tokens=16, store=False)
    # The first turn no longer fits: only its answer is read again.
    assert alone.usage.input_tokens < fitted.usage.input_tokens <= alone.usage.input_tokens + 64
    assert fitted.truncation == "auto"
