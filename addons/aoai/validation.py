"""Request-body checks that Azure makes before it runs a model.

Each check raises `Invalid` with the message, parameter and code Azure would send, so the
client's SDK raises the same BadRequestError it would raise against Azure.
"""

from __future__ import annotations

from typing import Any

from .catalogue import Model

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               list: "an array", dict: "an object", type(None): "null"}


class Invalid(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _expect(body: dict, key: str, types: tuple, expected: str, where: str | None = None) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        param = where or key
        raise Invalid(f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
                      param, "invalid_type")
    return value


def _integer(body: dict, key: str, low: int, high: int | None = None) -> int | None:
    value = _expect(body, key, (int,), "an integer")
    if value is None:
        return None
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise Invalid(f"Invalid '{key}': integer must be {bound}, got {value}.", key, "integer_out_of_range")
    return value


def _number(body: dict, key: str, low: float, high: float) -> None:
    value = _expect(body, key, (int, float), "a number")
    if value is not None and not low <= value <= high:
        raise Invalid(f"Invalid '{key}': number must be between {low} and {high}, got {value}.", key,
                      "decimal_out_of_range")


def _require(body: dict, key: str) -> Any:
    if key not in body:
        raise Invalid(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    return body[key]


def _common(body: dict) -> None:
    _integer(body, "n", 1, 128)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _expect(body, "stream", (bool,), "a boolean")
    _expect(body, "seed", (int,), "an integer")
    _expect(body, "user", (str,), "a string")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4
                                                           and all(isinstance(s, str) for s in stop))):
        raise Invalid("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop", "invalid_type")
    options = _expect(body, "stream_options", (dict,), "an object")
    if options is not None and not body.get("stream"):
        raise Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      "stream_options", None)


def max_output(body: dict, model: Model) -> int | None:
    """The request's output limit after checking it, or None when it sets none."""
    limit_key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if model.reasoning and body.get("max_tokens") is not None:
        raise Invalid("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                      "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    return _integer(body, limit_key, 1)


def check_chat(body: dict, model: Model) -> None:
    messages = _require(body, "messages")
    if not isinstance(messages, list):
        raise Invalid(f"Invalid type for 'messages': expected an array, but got {_type_name(messages)} instead.",
                      "messages", "invalid_type")
    if not messages:
        raise Invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                      "empty array instead.", "messages", "empty_array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise Invalid(f"Invalid type for '{where}': expected an object, but got {_type_name(message)} instead.",
                          where, "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            if role is None:
                raise Invalid(f"Missing required parameter: '{where}.role'.", f"{where}.role",
                              "missing_required_parameter")
            raise Invalid(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                          "'function', 'tool', and 'developer'.", f"{where}.role", "invalid_value")
        content = message.get("content")
        if content is None:
            if role != "assistant" or not message.get("tool_calls") and "function_call" not in message:
                raise Invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content",
                              "missing_required_parameter")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise Invalid(f"Invalid type for '{where}.content[{j}]': expected an object with a "
                                  "'type', but got " + _type_name(part) + " instead.",
                                  f"{where}.content[{j}]", "invalid_type")
        elif not isinstance(content, str):
            raise Invalid(f"Invalid type for '{where}.content': expected one of a string or array of objects, "
                          f"but got {_type_name(content)} instead.", f"{where}.content", "invalid_type")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise Invalid(f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id",
                          "missing_required_parameter")
    _common(body)
    max_output(body, model)
    _check_tools(body)
    _check_response_format(body)


def _check_tools(body: dict) -> None:
    tools = _expect(body, "tools", (list,), "an array")
    names = set()
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise Invalid(f"Missing required parameter: 'tools[{i}].function.name'.", f"tools[{i}].function.name",
                          "missing_required_parameter")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise Invalid(f"Invalid type for 'tools[{i}].function.parameters': expected an object.",
                          f"tools[{i}].function.parameters", "invalid_type")
        names.add(fn["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise Invalid(f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                          "tool_choice", "invalid_value")
        if choice == "required" and not tools:
            raise Invalid("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                          "specified.", "tool_choice", None)
        return
    name = ((choice or {}).get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise Invalid("Invalid 'tool_choice': expected 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"function\": {\"name\": ...}}.", "tool_choice", "invalid_type")
    if name not in names:
        raise Invalid(f"Invalid 'tool_choice': function '{name}' is not in 'tools'.", "tool_choice", None)


def _check_response_format(body: dict) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise Invalid(f"{fmt!r} is not of type 'object' - 'response_format'"
                      if not isinstance(fmt, dict) else
                      f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
                      "response_format", None if not isinstance(fmt, dict) else "invalid_value")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise Invalid("Missing required parameter: 'response_format.json_schema.name'.",
                          "response_format.json_schema.name", "missing_required_parameter")
        if not isinstance(spec.get("schema", {}), dict):
            raise Invalid("Invalid type for 'response_format.json_schema.schema': expected an object.",
                          "response_format.json_schema.schema", "invalid_type")


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool)
                                                             for t in value)


def _check_text_input(value: Any, key: str, allow_empty_string: bool) -> None:
    """`prompt` and `input`: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        if not value and not allow_empty_string:
            raise Invalid(f"'$.{key}' is invalid: it must not be empty.", key, "invalid_value")
        return
    if isinstance(value, list) and value:
        if _is_token_array(value):
            return
        if all(isinstance(v, str) for v in value):
            if not allow_empty_string and any(not v for v in value):
                raise Invalid(f"'$.{key}' is invalid: it must not contain empty strings.", key, "invalid_value")
            return
        if all(_is_token_array(v) for v in value):
            return
    if isinstance(value, list) and not value:
        raise Invalid(f"'$.{key}' is invalid: it must not be an empty array.", key, "invalid_value")
    raise Invalid(f"Invalid type for '{key}': expected a string, an array of strings, an array of tokens or an "
                  f"array of token arrays, but got {_type_name(value)} instead.", key, "invalid_type")


def check_completions(body: dict, model: Model) -> None:
    _check_text_input(_require(body, "prompt"), "prompt", allow_empty_string=True)
    _common(body)
    _integer(body, "max_tokens", 0)
    _integer(body, "best_of", 1, 20)
    _integer(body, "logprobs", 0, 5)
    _expect(body, "echo", (bool,), "a boolean")
    _expect(body, "suffix", (str,), "a string")


def check_embeddings(body: dict, model: Model) -> None:
    value = _require(body, "input")
    _check_text_input(value, "input", allow_empty_string=False)
    if isinstance(value, list) and len(value) > 2048 and not _is_token_array(value):
        raise Invalid("Too many inputs. The max number of inputs is 2048.", "input", "invalid_value")
    fmt = _expect(body, "encoding_format", (str,), "a string")
    if fmt is not None and fmt not in ("float", "base64"):
        raise Invalid(f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.", "encoding_format",
                      "invalid_value")
    dims = _integer(body, "dimensions", 1)
    if dims is not None:
        if not model.supports_dimensions:
            raise Invalid("This model does not support specifying dimensions.", "dimensions", "invalid_value")
        if dims > model.embedding_size:
            raise Invalid(f"Invalid 'dimensions': must be at most {model.embedding_size}, got {dims}.",
                          "dimensions", "integer_out_of_range")
