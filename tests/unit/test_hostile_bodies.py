"""Hostile request bodies: valid bodies of every operation with fields replaced by arbitrary JSON
values end as an answer or as Azure's 4xx error naming the field, never as an exception or a 500.

The random cases are seeded and bounded, so a failure reproduces and the run stays short.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import re
from typing import Any

import pytest
from unit_support import admit, chat_path, json_of, make_config, make_flow, make_services

from aoai.runtime.state import context_of
from aoai.stages.generate import Generate

COMPLETIONS = "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21"
EMBEDDINGS = "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
RESPONSES = "/openai/v1/responses"

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "q": {"type": "string", "description": "What", "maxLength": 20},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            "required": ["q"],
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {
        "n": {"type": "number", "exclusiveMinimum": 0},
        "when": {"type": "string", "format": "date"},
        "next": {"$ref": "#/$defs/item"},
        "any": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
    },
    "required": ["n"],
    "$defs": {"item": {"type": "object", "properties": {"k": {"type": "string"}}}},
}

# One valid body per operation and shape, each touching every field its code reads.
BASES: dict[str, tuple[str, dict]] = {
    "chat": (
        chat_path("gpt-4o"),
        {
            "messages": [
                {"role": "system", "content": "Be brief.", "name": "setup"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": "http://x", "detail": "low"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "found"},
            ],
            "tools": [TOOL],
            "tool_choice": "auto",
            "max_tokens": 20,
            "n": 2,
            "stop": ["zz"],
            "logit_bias": {"50256": -100},
            "seed": 3,
            "user": "u",
            "temperature": 1,
            "top_p": 1,
        },
    ),
    "chat tool call": (
        chat_path("gpt-4o"),
        {
            "messages": [{"role": "user", "content": "look"}],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "parallel_tool_calls": True,
        },
    ),
    "chat structured stream": (
        chat_path("gpt-4o"),
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "json"}]},
                {"role": "user", "content": "go"},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "strict": True, "schema": SCHEMA},
            },
            "stream": True,
            "stream_options": {"include_usage": True},
            "logprobs": True,
            "top_logprobs": 2,
        },
    ),
    "chat reasoning": (
        chat_path("o4-mini"),
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 300, "reasoning_effort": "low"},
    ),
    "completions": (
        COMPLETIONS,
        {
            "prompt": ["a", "b"],
            "max_tokens": 3,
            "echo": True,
            "logprobs": 1,
            "best_of": 1,
            "n": 1,
            "suffix": "s",
            "stop": "x",
            "logit_bias": {"1": 2.5},
            "stream": False,
        },
    ),
    "completions tokens": (COMPLETIONS, {"prompt": [[1, 2], [3]], "echo": True, "stream": True}),
    "embeddings": (EMBEDDINGS, {"input": ["a", "b"], "dimensions": 8, "encoding_format": "float", "user": "u"}),
    "embeddings tokens": (EMBEDDINGS, {"input": [[1, 2, 3], [4]], "encoding_format": "base64"}),
    "responses": (
        RESPONSES,
        {
            "model": "gpt-4o",
            "instructions": "Be brief.",
            "max_output_tokens": 40,
            "metadata": {"k": "v"},
            "input": [
                {"role": "developer", "content": "json please"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "hi"},
                        {"type": "input_image", "image_url": "http://x", "detail": "low"},
                    ],
                },
                {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "found"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            ],
            "tools": [{"type": "function", **TOOL["function"]}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "text": {"format": {"type": "json_schema", "name": "out", "strict": True, "schema": SCHEMA}},
            "temperature": 1,
            "top_p": 1,
            "truncation": "auto",
            "user": "u",
            "store": False,
        },
    ),
    "responses reasoning stream": (
        RESPONSES,
        {
            "model": "o4-mini",
            "input": "hi",
            "reasoning": {"effort": "low", "summary": "auto"},
            "stream": True,
            "tools": [{"type": "function", **TOOL["function"]}],
            "tool_choice": {"type": "function", "name": "lookup"},
            "store": False,
        },
    ),
}

# `make fuzz` raises it (HOSTILE_REQUESTS_PER_BASE=20000) for a long run.
REQUESTS_PER_BASE = int(os.environ.get("HOSTILE_REQUESTS_PER_BASE", "250"))
SCALARS = [
    None,
    True,
    False,
    0,
    -1,
    1,
    7,
    3.5,
    -0.0,
    10**20,
    1e308,
    "",
    "x",
    "function",
    "text",
    "image_url",
    "low",
    "json_schema",
    "user",
    "#",
    "#/$defs/item",
]
# Keys the code reads somewhere, so nested objects sometimes look nearly right.
KEYS = [
    "role",
    "content",
    "type",
    "text",
    "name",
    "function",
    "arguments",
    "id",
    "image_url",
    "url",
    "detail",
    "parameters",
    "properties",
    "items",
    "required",
    "enum",
    "$ref",
    "minItems",
    "maxLength",
    "format",
    "schema",
    "include_usage",
    "1",
    "x",
    "input_text",
    "call_id",
    "output",
    "effort",
    "summary",
]

Path = tuple[str | int, ...]


def arbitrary(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, small and shallow."""
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind < 7:
        return rng.choice(SCALARS)
    if kind < 9:
        return [arbitrary(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): arbitrary(rng, depth + 1) for _ in range(rng.randrange(4))}


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a body, as the keys and indexes that reach it."""
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found += paths(item, prefix + (key,))
    return found


def mutate(body: dict, rng: random.Random) -> tuple[dict, list[Path]]:
    """A copy of `body` with one to three places replaced by arbitrary values (or removed), and
    those places."""
    body, changed = copy.deepcopy(body), []
    for _ in range(rng.randint(1, 3)):
        places = paths(body)
        if not places:
            break
        path = rng.choice(places)
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.15:
            del parent[path[-1]]
        else:
            parent[path[-1]] = arbitrary(rng)
        changed.append(path)
    return body, changed


def parse_param(param: str) -> Path:
    """ "messages[2].tool_calls[0].id" -> ("messages", 2, "tool_calls", 0, "id")."""
    return tuple(int(index) if index else key for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", param))


def exists(body: Any, path: Path) -> bool:
    for key in path:
        if (isinstance(body, dict) and key in body) or (
            isinstance(body, list) and isinstance(key, int) and key < len(body)
        ):
            body = body[key]
        else:
            return False
    return True


def related(a: Path, b: Path) -> bool:
    """One place holds the other (or they are the same)."""
    return a[: len(b)] == b or b[: len(a)] == a


@pytest.fixture(scope="module")
def generate():
    config = make_config()
    return config, Generate(config, make_services(config))


def outcome(path: str, body: dict, generate) -> tuple[int, dict | bytes]:
    """The request's status and error (an object) or answer (bytes), through checks and generation."""
    config, generator = generate
    flow = make_flow("POST", path, body)
    error = admit(flow, config)
    if error is not None:
        return error.status_code, json_of(error)["error"]
    pending = generator.request(flow)
    if pending is not None:  # a long answer (JSON up to the model's output limit) is made in a thread
        asyncio.run(pending)
    assert flow.response is not None or context_of(flow).stream is not None
    if flow.response is None:
        return 200, b""
    return flow.response.status_code, flow.response.content


@pytest.mark.parametrize("base", list(BASES))
def test_arbitrary_values_end_in_an_answer_or_a_named_400(base, generate):
    path, valid = BASES[base]
    assert outcome(path, valid, generate)[0] == 200
    rng = random.Random(f"hostile:{base}")
    for attempt in range(REQUESTS_PER_BASE):
        body, changed = mutate(valid, rng)
        status, result = outcome(path, body, generate)
        where = f"case {attempt}: {json.dumps(body)[:400]}"
        if status == 200:
            assert result == b"" or result.startswith((b"{", b"data: ", b"event: ")), where
            continue
        assert 400 <= status < 500, (status, result, where)
        assert isinstance(result.get("message"), str) and result["message"], where
        if result.get("code") == "invalid_type":
            # A wrong type is reported at a field that exists and that the mutation touched.
            param = parse_param(result["param"])
            assert exists(body, param), (result, where)
            assert any(related(param, place) for place in changed), (result, changed, where)


def chat(*messages: dict, **fields: Any) -> dict:
    return {"messages": list(messages or [{"role": "user", "content": "hi"}]), **fields}


def user(*parts: dict) -> dict:
    return {"role": "user", "content": list(parts)}


def assistant(*calls: Any) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": list(calls)}


ROLE_TYPE = (
    "Invalid type for 'messages[0].role': expected one of 'system', 'assistant', 'user', 'function', "
    "'tool', or 'developer', but got {} instead."
)

REFUSALS = [
    # (path, body, message, param, code)
    (
        chat_path(),
        chat({"role": {}, "content": "hi"}),
        ROLE_TYPE.format("an object"),
        "messages[0].role",
        "invalid_type",
    ),
    (
        chat_path(),
        chat({"role": [1, 2], "content": "hi"}),
        ROLE_TYPE.format("an array"),
        "messages[0].role",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(assistant(7)),
        "Invalid type for 'messages[0].tool_calls[0]': expected an object, but got an integer instead.",
        "messages[0].tool_calls[0]",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(assistant({**CALL, "function": "x"})),
        "Invalid type for 'messages[0].tool_calls[0].function': expected an object, but got a string instead.",
        "messages[0].tool_calls[0].function",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            assistant({**CALL, "function": {"name": None, "arguments": "{}"}}),
        ),
        "Invalid type for 'messages[2].tool_calls[0].function.name': expected a string, but got null instead.",
        "messages[2].tool_calls[0].function.name",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(assistant()),
        (
            "Invalid 'messages[0].tool_calls': empty array. Expected an array with minimum length 1, but got an empty "
            "array instead."
        ),
        "messages[0].tool_calls",
        "empty_array",
    ),
    (
        chat_path(),
        chat(
            {"role": "system", "content": "s"},
            user({"type": "text", "text": "hi"}, {"type": "image_url", "image_url": 3.5}),
        ),
        "Invalid type for 'messages[1].content[1].image_url': expected an object, but got a number instead.",
        "messages[1].content[1].image_url",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(user({"type": "image_url", "image_url": {"url": "http://x", "detail": "ultra"}})),
        "Invalid value: 'ultra'. Supported values are: 'auto', 'low', and 'high'.",
        "messages[0].content[0].image_url.detail",
        "invalid_value",
    ),
    (
        chat_path(),
        chat(user({"type": "text", "text": ["hi"]})),
        "Invalid type for 'messages[0].content[0].text': expected a string, but got an array instead.",
        "messages[0].content[0].text",
        "invalid_type",
    ),
    (
        chat_path(),
        chat({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
        "Invalid value: 'image_url'. Supported values are: 'text'.",
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        chat_path(),
        chat({"role": "user", "content": "hi", "name": 5}),
        "Invalid type for 'messages[0].name': expected a string, but got an integer instead.",
        "messages[0].name",
        "invalid_type",
    ),
    (
        chat_path("o4-mini"),
        chat(reasoning_effort=["low"]),
        (
            "Invalid type for 'reasoning_effort': expected one of 'minimal', 'low', 'medium', or 'high', but got an "
            "array instead."
        ),
        "reasoning_effort",
        "invalid_type",
    ),
    (
        chat_path("o4-mini"),
        chat(reasoning_effort="extreme"),
        "Invalid value: 'extreme'. Supported values are: 'minimal', 'low', 'medium', and 'high'.",
        "reasoning_effort",
        "invalid_value",
    ),
    (
        chat_path(),
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": True}}]),
        "Invalid type for 'tools[0].function.parameters': expected an object, but got a boolean instead.",
        "tools[0].function.parameters",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(tools=[{"type": "function", "function": "f"}]),
        "Invalid type for 'tools[0].function': expected an object, but got a string instead.",
        "tools[0].function",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(logit_bias="x"),
        "Invalid type for 'logit_bias': expected an object, but got a string instead.",
        "logit_bias",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(logit_bias={"50256": "x"}),
        "Invalid type for 'logit_bias.50256': expected a number, but got a string instead.",
        "logit_bias",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(stop=[1]),
        "Invalid 'stop': expected a string or an array of up to 4 strings.",
        "stop",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": [1]}}),
        "Invalid type for 'response_format.json_schema.schema': expected an object, but got an array instead.",
        "response_format.json_schema.schema",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(max_completion_tokens=None, max_tokens="5"),
        "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
        "max_tokens",
        "invalid_type",
    ),
    (
        chat_path(),
        chat(tool_choice={"type": "function", "function": "f"}),
        (
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": "
            '{"name": ...}}.'
        ),
        "tool_choice",
        "invalid_type",
    ),
    (
        COMPLETIONS,
        {"prompt": "a", "logit_bias": {"a": 1}},
        "Invalid key in 'logit_bias': a. You should only be submitting non-negative integers.",
        "logit_bias",
        None,
    ),
    (
        EMBEDDINGS,
        {"input": "a", "user": {}},
        "Invalid type for 'user': expected a string, but got an object instead.",
        "user",
        "invalid_type",
    ),
]


@pytest.mark.parametrize("path, body, message, param, code", REFUSALS)
def test_wrong_types_get_azures_400(path, body, message, param, code, generate):
    status, error = outcome(path, body, generate)
    assert status == 400
    assert error == {"message": message, "type": "invalid_request_error", "param": param, "code": code}


# JSON schemas are passed on as they come (Azure checks them against the JSON Schema
# meta-schema); whatever their members hold, generation still answers.
ODD_SCHEMAS = [
    {"type": "object", "properties": 7},
    {"type": "object", "properties": {"a": 1, "b": {"type": ["x", {}]}}, "required": "a"},
    {"type": "object", "properties": {"a": {"type": "array", "items": 1, "minItems": 10**20}}, "required": ["a"]},
    {
        "type": "object",
        "properties": {"a": {"type": "string", "minLength": 10**20, "format": []}},
        "required": [["a"], "a"],
    },
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": "1", "maximum": 1e308}}, "required": ["a"]},
    {"type": "object", "properties": {"a": {"enum": 5}, "b": {"anyOf": 1}, "c": {"allOf": [1, {"properties": 2}]}}},
    {"type": "object", "properties": {"self": {"$ref": "#"}, "odd": {"$ref": 7}}, "required": ["self"]},
    {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "array", "items": {"$ref": "#"}}}}},
]


@pytest.mark.parametrize("schema", ODD_SCHEMAS)
def test_any_schema_gets_an_answer(schema, generate):
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    for body in (
        chat(tools=[tool], tool_choice="required"),
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}),
    ):
        status, answer = outcome(chat_path(), body, generate)
        assert status == 200, answer


@pytest.mark.parametrize("prompt", [[-1], [0, 2**40], [[100300, 15339]]])
def test_token_prompts_outside_the_vocabulary_still_echo(prompt, generate):
    status, answer = outcome(COMPLETIONS, {"prompt": prompt, "echo": True, "max_tokens": 2}, generate)
    assert status == 200
    assert json.loads(answer)["choices"][0]["text"]
