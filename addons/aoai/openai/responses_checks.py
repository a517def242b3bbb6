"""The Responses API's request checks: Azure's 400 for what is wrong with a request body, as
plain functions of the body and the model (they raise `Invalid`). Building the answer is
responses.py's part.

Field names follow Azure's v1 OpenAPI file (`/responses`) and, where it says less, the OpenAI
Responses API as its Python SDK types it.
"""

from __future__ import annotations

from typing import Any

from .catalogue import Model
from .sealed_reasoning import unseal
from .validation import (
    REASONING_EFFORTS,
    Invalid,
    _choice,
    _empty_array,
    _expect,
    _field,
    _integer,
    _listed,
    _missing,
    _number,
    _wrong_type,
    check_sampling,
    type_name,
)

INPUT_ROLES = ("user", "system", "developer", "assistant")
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "item_reference")
# Content part types each role may send in an input message.
INPUT_PARTS = {
    "user": ("input_text", "input_image", "input_file"),
    "system": ("input_text",),
    "developer": ("input_text",),
    "assistant": ("output_text", "refusal"),
}
# Tools Azure offers that the simulator does not run.
BUILT_IN_TOOLS = (
    "web_search_preview",
    "web_search",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "image_generation",
    "mcp",
    "local_shell",
    "custom",
)
TEXT_FORMATS = ("text", "json_object", "json_schema")
SUMMARIES = ("auto", "concise", "detailed")
TRUNCATIONS = ("auto", "disabled")
# `include` values Azure's v1 spec lists (`OpenAI.Includable`). Those naming a built-in tool's
# items ask for nothing here: the tools are refused, so no such item is ever answered.
INCLUDABLE = (
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
    "file_search_call.results",
    "message.input_image.image_url",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
)
# `max_output_tokens` below this is refused, as OpenAI refuses it.
MIN_OUTPUT_TOKENS = 16


def check_responses(body: dict[str, Any], model: Model) -> None:
    """Azure's 400 for what is wrong with a Responses request (raises `Invalid`)."""
    if "input" not in body:
        raise _missing("input")
    _check_input(body["input"], body.get("store", True) is not False)
    _expect(body, "instructions", (str,), "a string")
    limit = _integer(body, "max_output_tokens", 1)
    if limit is not None and limit < MIN_OUTPUT_TOKENS:
        raise Invalid(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _integer(body, "top_logprobs", 0, 20)
    if model.reasoning:
        check_sampling(body)
    _check_include(body, model)
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        _expect(body, key, (bool,), "a boolean")
    if body.get("background") and body.get("store") is False:
        # A background response is only ever read back from the store.
        raise Invalid("Background mode requires 'store' to be true.", "background", "invalid_value")
    for key in ("previous_response_id", "user"):
        _expect(body, key, (str,), "a string")
    _check_metadata(body)
    _choice(body, "truncation", "", TRUNCATIONS)
    names = _check_tools(body)
    _check_tool_choice(body, names)
    _check_text(body)
    _check_reasoning(body, model)


def _check_include(body: dict[str, Any], model: Model) -> None:
    include = _expect(body, "include", (list,), "an array")
    for i, value in enumerate(include or []):
        if not isinstance(value, str):
            raise _wrong_type(f"include[{i}]", "a string", value)
        if value not in INCLUDABLE:
            raise Invalid(
                f"Invalid value: '{value}'. Supported values are: {_listed(INCLUDABLE, 'and')}.",
                f"include[{i}]",
                "invalid_value",
            )
        if value == "message.output_text.logprobs" and model.reasoning:
            raise Invalid(
                "Unsupported parameter: 'message.output_text.logprobs' is not supported with this model.",
                f"include[{i}]",
                "unsupported_parameter",
            )
    if model.reasoning and body.get("top_logprobs") is not None:
        raise Invalid(
            "Unsupported parameter: 'top_logprobs' is not supported with this model.",
            "top_logprobs",
            "unsupported_parameter",
        )


def _check_input(value: Any, stored: bool = True) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _wrong_type("input", "one of a string or array of input items", value)
    if not value:
        raise _empty_array("input")
    for i, item in enumerate(value):
        _check_item(item, f"input[{i}]")
        if isinstance(item, dict) and item.get("type") == "reasoning":
            _check_reasoning_item(item, f"input[{i}]", stored)


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise _wrong_type(where, "an object", item)
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"  # the short form: {"role": …, "content": …}
    if kind is None:
        raise _missing(f"{where}.type")
    if not isinstance(kind, str) or kind not in ITEM_TYPES:
        raise Invalid(
            f"Invalid value: '{kind}'. Supported values are: {_listed(ITEM_TYPES, 'and')}.",
            f"{where}.type",
            "invalid_value",
        )
    if kind == "message":
        role = _choice(item, "role", where, INPUT_ROLES, required=True)
        _check_content(item, role, where)
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            _field(item, key, where, (str,), "a string", required=True)
    elif kind == "function_call_output":
        _field(item, "call_id", where, (str,), "a string", required=True)
        output = item.get("output")
        if not isinstance(output, (str, list)):
            raise (
                _wrong_type(f"{where}.output", "a string", output)
                if output is not None
                else _missing(f"{where}.output")
            )
    elif kind == "item_reference":
        _field(item, "id", where, (str,), "a string", required=True)


def _check_reasoning_item(item: dict[str, Any], where: str, stored: bool) -> None:
    """A reasoning item given back: with its `encrypted_content` (which must be one this
    service sealed), or by id alone, which only a stored response can resolve."""
    item_id = _field(item, "id", where, (str,), "a string") or ""
    sealed = _field(item, "encrypted_content", where, (str,), "a string")
    if sealed is not None:
        if unseal(sealed) is None:
            raise Invalid(
                f"The encrypted content for item {item_id} could not be verified.",
                f"{where}.encrypted_content",
                "invalid_encrypted_content",
            )
    elif not stored:
        raise Invalid(
            f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
            "Try again with `store` set to true, or remove this item from your input.",
            "input",
            None,
            404,
        )


def _check_content(item: dict[str, Any], role: str, where: str) -> None:
    content, param = item.get("content"), f"{where}.content"
    if content is None:
        raise _missing(param)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _wrong_type(param, "one of a string or array of input content parts", content)
    for j, part in enumerate(content):
        at = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise Invalid(
                f"Invalid type for '{at}': expected an object with a 'type', but got {type_name(part)} instead.",
                at,
                "invalid_type",
            )
        kind = _choice(part, "type", at, INPUT_PARTS[role], required=True)
        if kind in ("input_text", "output_text"):
            _field(part, "text", at, (str,), "a string", required=True)
        elif kind == "refusal":
            _field(part, "refusal", at, (str,), "a string", required=True)
        elif kind == "input_image":
            if part.get("image_url") is None and part.get("file_id") is None:
                raise _missing(f"{at}.image_url")
            _field(part, "image_url", at, (str,), "a string")
            _choice(part, "detail", at, ("auto", "low", "high"))
        elif kind == "input_file":
            for key in ("file_data", "file_id", "filename", "file_url"):
                _field(part, key, at, (str,), "a string")


def _check_metadata(body: dict[str, Any]) -> None:
    metadata = _expect(body, "metadata", (dict,), "an object")
    if metadata is None:
        return
    if len(metadata) > 16:
        raise Invalid(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(metadata)} properties instead.",
            "metadata",
            "object_above_max_length",
        )
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _wrong_type(f"metadata.{key}", "a string", value)


def _check_tools(body: dict[str, Any]) -> set[str]:
    """Function tools (the names); a built-in tool the simulator does not run is refused."""
    tools = _expect(body, "tools", (list,), "an array")
    names: set[str] = set()
    for i, tool in enumerate(tools or []):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _wrong_type(where, "an object", tool)
        kind = tool.get("type")
        if isinstance(kind, str) and kind in BUILT_IN_TOOLS:
            raise Invalid(
                f"The tool type '{kind}' is not supported by this simulator; only 'function' tools are answered.",
                f"{where}.type",
                "unsupported_value",
            )
        _choice(tool, "type", where, ("function",), required=True)
        names.add(_field(tool, "name", where, (str,), "a string", required=True))
        _field(tool, "description", where, (str,), "a string")
        _field(tool, "parameters", where, (dict,), "an object")
        _field(tool, "strict", where, (bool,), "a boolean")
    return names


def _check_tool_choice(body: dict[str, Any], names: set[str]) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        _choice(body, "tool_choice", "", ("none", "auto", "required"))
        if choice == "required" and not names:
            raise Invalid("Tool choice 'required' must be specified with 'tools' parameter.", "tool_choice", None)
        return
    name = choice.get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise Invalid(
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ...}.",
            "tool_choice",
            "invalid_type",
        )
    if name not in names:
        raise Invalid(
            f"Tool choice 'function' set, but function '{name}' was not found in 'tools'.", "tool_choice", None
        )


def _check_text(body: dict[str, Any]) -> None:
    text = _expect(body, "text", (dict,), "an object")
    fmt = _field(text, "format", "text", (dict,), "an object") if text is not None else None
    if fmt is None:
        return
    kind = _choice(fmt, "type", "text.format", TEXT_FORMATS, required=True)
    if kind == "json_schema":
        _field(fmt, "name", "text.format", (str,), "a string", required=True)
        _field(fmt, "schema", "text.format", (dict,), "an object", required=True)
        _field(fmt, "strict", "text.format", (bool,), "a boolean")


def _check_reasoning(body: dict[str, Any], model: Model) -> None:
    reasoning = _expect(body, "reasoning", (dict,), "an object")
    if reasoning is None:
        return
    effort = _choice(reasoning, "effort", "reasoning", REASONING_EFFORTS)
    _choice(reasoning, "summary", "reasoning", SUMMARIES)
    _choice(reasoning, "generate_summary", "reasoning", SUMMARIES)
    if effort is not None and not model.reasoning:
        raise Invalid(
            "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
            "reasoning.effort",
            "unsupported_parameter",
        )
