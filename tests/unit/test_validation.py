import pytest

from aoai.openai import catalogue, validation
from aoai.openai.validation import Invalid

GPT4O = catalogue.MODELS["gpt-4o"]
O3 = catalogue.MODELS["o3-mini"]
INSTRUCT = catalogue.MODELS["gpt-35-turbo-instruct"]
SMALL = catalogue.MODELS["text-embedding-3-small"]
ADA = catalogue.MODELS["text-embedding-ada-002"]

USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields):
    return {"messages": USER, **fields}


CHAT_CASES = [
    # (body, param, code, message fragment)
    ({}, "messages", "missing_required_parameter", "Missing required parameter: 'messages'."),
    ({"messages": "hi"}, "messages", "invalid_type", "expected an array, but got a string"),
    ({"messages": []}, "messages", "empty_array", "empty array"),
    ({"messages": ["hi"]}, "messages[0]", "invalid_type", "expected an object, but got a string"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter", "'messages[0].role'"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value", "'robot'"),
    (
        {"messages": [USER[0], {"role": "user"}]},
        "messages[1].content",
        "missing_required_parameter",
        "'messages[1].content'",
    ),
    ({"messages": [{"role": "assistant"}]}, "messages[0].content", "missing_required_parameter", "content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type", "got an integer"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]", "invalid_type", "a string"),
    (
        {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
        "messages[0].content[0]",
        "invalid_type",
        "an object",
    ),
    (
        {"messages": [{"role": "tool", "content": "42"}]},
        "messages[0].tool_call_id",
        "missing_required_parameter",
        "tool_call_id",
    ),
    (chat(n=0), "n", "integer_out_of_range", "between 1 and 128, got 0"),
    (chat(n=129), "n", "integer_out_of_range", "got 129"),
    (chat(n="2"), "n", "invalid_type", "expected an integer, but got a string"),
    (chat(n=True), "n", "invalid_type", "but got a boolean"),
    (chat(temperature=2.5), "temperature", "decimal_out_of_range", "between 0 and 2, got 2.5"),
    (chat(temperature="hot"), "temperature", "invalid_type", "expected a number"),
    (chat(top_p=1.1), "top_p", "decimal_out_of_range", "got 1.1"),
    (chat(presence_penalty=-3), "presence_penalty", "decimal_out_of_range", "between -2 and 2"),
    (chat(frequency_penalty=3), "frequency_penalty", "decimal_out_of_range", "between -2 and 2"),
    (chat(stream="yes"), "stream", "invalid_type", "expected a boolean"),
    (chat(seed=1.5), "seed", "invalid_type", "expected an integer, but got a number"),
    (chat(user=7), "user", "invalid_type", "expected a string"),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_type", "up to 4 strings"),
    (chat(stop=5), "stop", "invalid_type", "up to 4 strings"),
    (chat(stream_options={"include_usage": True}), "stream_options", None, "only allowed when 'stream'"),
    (chat(stream=True, stream_options=[]), "stream_options", "invalid_type", "expected an object"),
    (chat(max_tokens=0), "max_tokens", "integer_out_of_range", "at least 1, got 0"),
    (chat(max_completion_tokens=-1), "max_completion_tokens", "integer_out_of_range", "at least 1"),
    (chat(tools={}), "tools", "invalid_type", "expected an array"),
    (chat(tools=[{"type": "function"}]), "tools[0].function.name", "missing_required_parameter", "name"),
    (
        chat(tools=[TOOL, {"type": "function", "function": {"name": "g", "parameters": "x"}}]),
        "tools[1].function.parameters",
        "invalid_type",
        "expected an object",
    ),
    (chat(tool_choice="sometimes"), "tool_choice", "invalid_value", "'sometimes'"),
    (chat(tool_choice="required"), "tool_choice", None, "only allowed when 'tools'"),
    (chat(tools=[TOOL], tool_choice={"type": "function"}), "tool_choice", "invalid_type", "expected 'none'"),
    (
        chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "g"}}),
        "tool_choice",
        None,
        "function 'g' is not in 'tools'",
    ),
    (chat(response_format="json_object"), "response_format", None, "is not of type 'object' - 'response_format'"),
    (chat(response_format={"type": "xml"}), "response_format", "invalid_value", "'xml'"),
    (
        chat(response_format={"type": "json_schema"}),
        "response_format.json_schema.name",
        "missing_required_parameter",
        "json_schema.name",
    ),
    (
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": []}}),
        "response_format.json_schema.schema",
        "invalid_type",
        "expected an object",
    ),
    # Every field that token counting or generation reads has its type checked.
    (
        {"messages": [{"role": {}, "content": "x"}]},
        "messages[0].role",
        "invalid_type",
        "expected one of 'system', 'assistant', 'user', 'function', 'tool', or 'developer', but got an object",
    ),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content", "empty_array", "empty array"),
    (
        {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
        "Invalid value: 'video'. Supported values are: 'text', 'image_url', 'input_audio', and 'file'.",
    ),
    (
        {"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0].type",
        "invalid_value",
        "Supported values are: 'text' and 'refusal'.",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content[0].text",
        "missing_required_parameter",
        "Missing required parameter: 'messages[0].content[0].text'.",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
        "image_url.url",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "ogg"}}]}
            ]
        },
        "messages[0].content[0].input_audio.format",
        "invalid_value",
        "'wav' and 'mp3'",
    ),
    (
        {"messages": [{"role": "assistant", "content": "x", "tool_calls": "c"}]},
        "messages[0].tool_calls",
        "invalid_type",
        "expected an array, but got a string",
    ),
    (
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {}}]}]},
        "messages[0].tool_calls[0].type",
        "missing_required_parameter",
        "tool_calls[0].type",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}],
                }
            ]
        },
        "messages[0].tool_calls[0].function.arguments",
        "invalid_type",
        "expected a string, but got an object",
    ),
    (
        {"messages": [{"role": "assistant", "content": None, "function_call": {"name": 1, "arguments": "{}"}}]},
        "messages[0].function_call.name",
        "invalid_type",
        "expected a string",
    ),
    (
        {"messages": [{"role": "function", "content": "42"}]},
        "messages[0].name",
        "missing_required_parameter",
        "'messages[0].name'",
    ),
    (chat(reasoning_effort=1), "reasoning_effort", "invalid_type", "expected one of 'minimal', 'low'"),
    (chat(reasoning_effort="max"), "reasoning_effort", "invalid_value", "'max'"),
    (chat(logit_bias=[]), "logit_bias", "invalid_type", "expected an object, but got an array"),
    (chat(logit_bias={"x1": 1}), "logit_bias", None, "Invalid key in 'logit_bias': x1."),
    (chat(logit_bias={"1": 101}), "logit_bias", "decimal_out_of_range", "between -100 and 100, got 101"),
    (chat(logit_bias={"1": True}), "logit_bias", "invalid_type", "expected a number, but got a boolean"),
    (chat(max_completion_tokens=5, max_tokens=0), "max_tokens", "integer_out_of_range", "at least 1"),
    (chat(logprobs=1), "logprobs", "invalid_type", "expected a boolean"),
    (chat(top_logprobs=21), "top_logprobs", "integer_out_of_range", "between 0 and 20"),
    (
        chat(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        "invalid_type",
        "expected a boolean",
    ),
    (chat(tools=[7]), "tools[0]", "invalid_type", "expected an object, but got an integer"),
    (chat(tools=[{"function": {"name": "f"}}]), "tools[0].type", "missing_required_parameter", "tools[0].type"),
    (
        chat(tools=[{"type": "retrieval", "function": {"name": "f"}}]),
        "tools[0].type",
        "invalid_value",
        "Supported values are: 'function'.",
    ),
    (
        chat(tools=[{"type": "function", "function": {"name": 1}}]),
        "tools[0].function.name",
        "invalid_type",
        "expected a string, but got an integer",
    ),
    (
        chat(tools=[{"type": "function", "function": {"name": "f", "description": ["d"]}}]),
        "tools[0].function.description",
        "invalid_type",
        "expected a string",
    ),
    (
        chat(tools=[TOOL], tool_choice={"type": "function", "function": 1}),
        "tool_choice",
        "invalid_type",
        "expected 'none'",
    ),
    (
        chat(response_format={"type": 1}),
        "response_format.type",
        "invalid_type",
        "expected one of 'text', 'json_object', or 'json_schema', but got an integer",
    ),
    (
        chat(response_format={"type": "json_schema", "json_schema": "x"}),
        "response_format.json_schema",
        "invalid_type",
        "expected an object, but got a string",
    ),
]


@pytest.mark.parametrize("body, param, code, fragment", CHAT_CASES)
def test_chat_checks(body, param, code, fragment):
    with pytest.raises(Invalid) as caught:
        validation.check_chat(body, GPT4O)
    assert (caught.value.param, caught.value.code, caught.value.status) == (param, code, 400)
    assert fragment in caught.value.message


def test_the_schema_error_text_is_azures():
    with pytest.raises(Invalid) as caught:
        validation.check_chat(chat(response_format="json_object"), GPT4O)
    assert caught.value.message == "'json_object' is not of type 'object' - 'response_format'"


def test_reasoning_models_refuse_max_tokens():
    with pytest.raises(Invalid) as caught:
        validation.check_chat(chat(max_tokens=10), O3)
    assert (caught.value.param, caught.value.code) == ("max_tokens", "unsupported_parameter")
    validation.check_chat(chat(max_completion_tokens=10), O3)  # the accepted spelling


@pytest.mark.parametrize(
    "body",
    [
        chat(),
        chat(n=128, temperature=0, top_p=1, stop=["a", "b", "c", "d"], seed=1, user="u", max_tokens=1),
        chat(stream=True, stream_options={"include_usage": True}),
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c", "content": "ok"},
                {"role": "developer", "content": [{"type": "text", "text": "x"}]},
            ]
        },
        chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}),
        chat(tools=[TOOL], tool_choice="required"),
        chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
        {
            "messages": [
                {
                    "role": "user",
                    "name": "ann",
                    "content": [
                        {"type": "text", "text": "x"},
                        {"type": "image_url", "image_url": {"url": "data:,", "detail": "high"}},
                        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    ],
                },
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                {"role": "function", "name": "f", "content": "ok"},
            ]
        },
        chat(
            logit_bias={"50256": -100, "1": 2.5},
            logprobs=True,
            top_logprobs=3,
            reasoning_effort=None,
            max_completion_tokens=None,
            max_tokens=5,
            parallel_tool_calls=False,
        ),
    ],
)
def test_valid_chat_bodies_pass(body):
    assert validation.check_chat(body, GPT4O) is None


def test_max_output_reads_the_limit():
    assert validation.max_output({"max_tokens": 7}, GPT4O) == 7
    assert validation.max_output({"max_completion_tokens": 9, "max_tokens": 7}, GPT4O) == 9
    assert validation.max_output({}, GPT4O) is None


COMPLETION_CASES = [
    ({}, "prompt", "missing_required_parameter", "'prompt'"),
    ({"prompt": 5}, "prompt", "invalid_type", "but got an integer"),
    ({"prompt": []}, "prompt", "invalid_value", "empty array"),
    ({"prompt": ["a", 1]}, "prompt", "invalid_type", "array of token arrays"),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens", "integer_out_of_range", "at least 0"),
    ({"prompt": "a", "best_of": 21}, "best_of", "integer_out_of_range", "between 1 and 20"),
    ({"prompt": "a", "logprobs": 6}, "logprobs", "integer_out_of_range", "between 0 and 5"),
    ({"prompt": "a", "echo": "yes"}, "echo", "invalid_type", "expected a boolean"),
    ({"prompt": "a", "suffix": 1}, "suffix", "invalid_type", "expected a string"),
    ({"prompt": "a", "n": 0}, "n", "integer_out_of_range", "between 1 and 128"),
    ({"prompt": "a", "logit_bias": {"1": "x"}}, "logit_bias", "invalid_type", "expected a number"),
    ({"prompt": "a", "stop": [None]}, "stop", "invalid_type", "up to 4 strings"),
]


@pytest.mark.parametrize("body, param, code, fragment", COMPLETION_CASES)
def test_completions_checks(body, param, code, fragment):
    with pytest.raises(Invalid) as caught:
        validation.check_completions(body, INSTRUCT)
    assert (caught.value.param, caught.value.code) == (param, code)
    assert fragment in caught.value.message


@pytest.mark.parametrize("prompt", ["", "text", ["a", ""], [1, 2], [[1], [2, 3]]])
def test_completion_prompt_forms_pass(prompt):
    assert validation.check_completions({"prompt": prompt, "max_tokens": 0}, INSTRUCT) is None


EMBEDDING_CASES = [
    ({}, SMALL, "input", "missing_required_parameter", "'input'"),
    ({"input": ""}, SMALL, "input", "invalid_value", "must not be empty"),
    ({"input": ["a", ""]}, SMALL, "input", "invalid_value", "empty strings"),
    ({"input": []}, SMALL, "input", "invalid_value", "empty array"),
    ({"input": {"a": 1}}, SMALL, "input", "invalid_type", "but got an object"),
    ({"input": ["x"] * 2049}, SMALL, "input", "invalid_value", "max number of inputs is 2048"),
    ({"input": "a", "encoding_format": "hex"}, SMALL, "encoding_format", "invalid_value", "'hex'"),
    ({"input": "a", "encoding_format": 1}, SMALL, "encoding_format", "invalid_type", "expected a string"),
    ({"input": "a", "dimensions": 0}, SMALL, "dimensions", "integer_out_of_range", "at least 1"),
    ({"input": "a", "dimensions": 1537}, SMALL, "dimensions", "integer_out_of_range", "at most 1536, got 1537"),
    ({"input": "a", "dimensions": 256}, ADA, "dimensions", "invalid_value", "does not support"),
    ({"input": "a", "user": 1}, SMALL, "user", "invalid_type", "expected a string, but got an integer"),
    ({"input": [[1], "a"]}, SMALL, "input", "invalid_type", "array of token arrays"),
]


@pytest.mark.parametrize("body, model, param, code, fragment", EMBEDDING_CASES)
def test_embeddings_checks(body, model, param, code, fragment):
    with pytest.raises(Invalid) as caught:
        validation.check_embeddings(body, model)
    assert (caught.value.param, caught.value.code) == (param, code)
    assert fragment in caught.value.message


@pytest.mark.parametrize("value", ["a", ["a", "b"], [1, 2, 3], [[1], [2]], list(range(3000))])
def test_embedding_input_forms_pass(value):
    assert validation.check_embeddings({"input": value, "encoding_format": "base64", "dimensions": 8}, SMALL) is None


def test_the_output_ceiling_reads_only_the_operations_own_fields():
    from aoai.openai import catalogue

    model = catalogue.MODELS["gpt-35-turbo-instruct"]
    # completions have no max_completion_tokens: a stray one of any type is not a limit
    validation.check_output_ceiling({"max_completion_tokens": {}, "max_tokens": 5}, model, "completions")
    with pytest.raises(validation.Invalid, match="max_tokens is too large"):
        validation.check_output_ceiling({"max_completion_tokens": {}, "max_tokens": 10**6}, model, "completions")
