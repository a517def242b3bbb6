"""Request-body checks that Azure makes before it runs a model.

Each check raises `Invalid` with the message, parameter and code Azure would send, so the
client's SDK raises the same BadRequestError it would raise against Azure. Every field that
token counting or generation reads is checked here first, so those never meet a wrong type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

from .catalogue import Model

# In the order Azure lists them in its messages.
ROLE_ORDER = ("system", "assistant", "user", "function", "tool", "developer")
ROLES = set(ROLE_ORDER)
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
IMAGE_DETAILS = ("auto", "low", "high")
AUDIO_FORMATS = ("wav", "mp3")
# The content part types each role may send.
PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "tool": ("text",),
    "function": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


class Invalid(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


# Arrays and objects inside one another in a request body. JSON answers echo parts of the
# request (a Responses schema, tool parameters) and their encoder stops at 255 levels; no real
# request comes near this.
MAX_NESTING = 128


def nested_too_deep(raw: bytes, body: Any, limit: int = MAX_NESTING) -> bool:
    """Whether `body` (parsed from `raw`) nests arrays and objects more than `limit` deep.
    The brackets in `raw` are counted first, so an ordinary body is never walked."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            pending.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            pending.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return False


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


# --- Building blocks --------------------------------------------------------------------------


def _listed(values: Sequence[str], conjunction: str) -> str:
    """'a', 'b', and 'c' — as Azure lists choices."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return f" {conjunction} ".join(quoted)
    return ", ".join(quoted[:-1]) + f", {conjunction} " + quoted[-1]


def _one_of(values: Sequence[str]) -> str:
    return _listed(values, "or") if len(values) == 1 else "one of " + _listed(values, "or")


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # JSON true is a Python int: a boolean is only an integer or number where booleans are allowed.
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _wrong_type(param: str, expected: str, value: Any) -> Invalid:
    return Invalid(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.", param, "invalid_type"
    )


def _missing(param: str) -> Invalid:
    return Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _empty_array(param: str) -> Invalid:
    return Invalid(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        param,
        "empty_array",
    )


def _field(
    obj: dict[str, Any], key: str, where: str, types: tuple[type, ...], expected: str, required: bool = False
) -> Any:
    """`obj[key]` after checking its type; None when it is absent or null and not required."""
    value = obj.get(key)
    if value is None:
        if required:
            raise _missing(_path(where, key)) if key not in obj else _wrong_type(_path(where, key), expected, None)
        return None
    if not _is(value, types):
        raise _wrong_type(_path(where, key), expected, value)
    return value


@overload
def _choice(obj: dict[str, Any], key: str, where: str, values: Sequence[str], required: Literal[True]) -> str: ...
@overload
def _choice(obj: dict[str, Any], key: str, where: str, values: Sequence[str], required: bool = False) -> str | None: ...
def _choice(obj: dict[str, Any], key: str, where: str, values: Sequence[str], required: bool = False) -> str | None:
    """An enumeration: a string of `values`."""
    value: str | None = obj.get(key)
    if (value.__class__ is str and value in values) or (value is None and not required):
        return value  # the usual cases, without building messages
    value = _field(obj, key, where, (str,), _one_of(values), required)
    if value is not None and value not in values:
        raise Invalid(
            f"Invalid value: '{value}'. Supported values are: {_listed(values, 'and')}.",
            _path(where, key),
            "invalid_value",
        )
    return value


def _expect(body: dict[str, Any], key: str, types: tuple[type, ...], expected: str) -> Any:
    value = body.get(key)
    if value is None:  # most options are absent: no second call for them
        return None
    return _field(body, key, "", types, expected)


def _integer(body: dict[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value: int | None = _expect(body, key, (int,), "an integer")
    if value is None:
        return None
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise Invalid(f"Invalid '{key}': integer must be {bound}, got {value}.", key, "integer_out_of_range")
    return value


def _number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = _expect(body, key, (int, float), "a number")
    if value is not None and not low <= value <= high:
        raise Invalid(
            f"Invalid '{key}': number must be between {low} and {high}, got {value}.", key, "decimal_out_of_range"
        )


def _require(body: dict[str, Any], key: str) -> Any:
    if key not in body:
        raise _missing(key)
    return body[key]


# --- Options shared by chat and completions ---------------------------------------------------


def _common(body: dict[str, Any]) -> None:
    _integer(body, "n", 1, 128)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _expect(body, "stream", (bool,), "a boolean")
    _expect(body, "seed", (int,), "an integer")
    _expect(body, "user", (str,), "a string")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise Invalid("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop", "invalid_type")
    _check_logit_bias(body)
    options = _expect(body, "stream_options", (dict,), "an object")
    if options is not None and not body.get("stream"):
        raise Invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", None
        )
    if options is not None:
        _field(options, "include_usage", "stream_options", (bool,), "a boolean")


def _check_logit_bias(body: dict[str, Any]) -> None:
    """An object of token ids (as strings) to biases between -100 and 100."""
    bias = _expect(body, "logit_bias", (dict,), "an object")
    for token, value in (bias or {}).items():
        if not (token.isascii() and token.isdigit()):
            raise Invalid(
                f"Invalid key in 'logit_bias': {token}. You should only be submitting non-negative integers.",
                "logit_bias",
                None,
            )
        if not _is(value, (int, float)):
            raise Invalid(
                f"Invalid type for 'logit_bias.{token}': expected a number, but got {type_name(value)} instead.",
                "logit_bias",
                "invalid_type",
            )
        if not -100 <= value <= 100:
            raise Invalid(
                f"Invalid 'logit_bias.{token}': number must be between -100 and 100, got {value}.",
                "logit_bias",
                "decimal_out_of_range",
            )


# --- Reasoning models ---------------------------------------------------------------------------

# Sampling settings a reasoning model takes only at their defaults.
SAMPLING_DEFAULTS = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}


def check_sampling(body: dict[str, Any]) -> None:
    """Azure's 400 for a sampling setting a reasoning model cannot change."""
    for key, default in SAMPLING_DEFAULTS.items():
        value = body.get(key)
        if value is not None and _is(value, (int, float)) and value != default:
            raise Invalid(
                f"Unsupported value: '{key}' does not support {value} with this model. Only the default "
                f"({default}) value is supported.",
                key,
                "unsupported_value",
            )


# --- Chat ---------------------------------------------------------------------------------------


def max_output(body: dict[str, Any], model: Model) -> int | None:
    """The request's output limit after checking it, or None when it sets none."""
    if model.reasoning and body.get("max_tokens") is not None:
        raise Invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
            "'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    # Both are checked: generation falls back to max_tokens when max_completion_tokens is null.
    tokens = _integer(body, "max_tokens", 1)
    completion = _integer(body, "max_completion_tokens", 1)
    return completion if completion is not None else tokens


# The fields that limit an answer's length, by operation, in the order Azure reads them.
LIMIT_FIELDS = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}


@overload
def answer_limit(operation: str, body: dict[str, Any]) -> int | None: ...
@overload
def answer_limit(operation: str, body: dict[str, Any], *, named: Literal[True]) -> tuple[int | None, str]: ...
def answer_limit(operation: str, body: dict[str, Any], *, named: bool = False) -> int | tuple[int | None, str] | None:
    """The most tokens the request lets one answer have, from the operation's own fields (a
    field another API uses means nothing here); None where it sets none. With `named`, the
    pair (limit, field)."""
    for name in LIMIT_FIELDS.get(operation, ()):
        value = whole(body.get(name))
        if value is not None:
            return (value, name) if named else value
    return (None, "") if named else None


def answers_room(operation: str, body: dict[str, Any]) -> int:
    """The tokens a request's answers may add to its prompt: its answer limit times its `n`
    (0 where it sets no limit), as Azure counts it against the context window."""
    limit = answer_limit(operation, body) or 0
    answers = whole(body.get("n")) if operation != "responses" else None
    return limit * (answers if answers is not None and answers > 0 else 1)


def whole(value: Any) -> int | None:
    """A whole number the checks let through (they refuse other types where the API has the
    field; where it has not, a stray value counts as unset)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_output_ceiling(body: dict[str, Any], model: Model, operation: str = "chat") -> None:
    """A limit above what the model can write, asked once the request fits the context window
    (Azure answers context_length_exceeded first). Models whose answer may fill the window have
    no other ceiling."""
    limit, key = answer_limit(operation, body, named=True)
    ceiling = model.max_output_tokens
    if limit is not None and ceiling and ceiling < model.context_window and limit > ceiling:
        raise Invalid(
            f"{key} is too large: {limit}. This model supports at most {ceiling} completion tokens, "
            f"whereas you provided {limit}.",
            key,
            "invalid_value",
        )


def check_chat(body: dict[str, Any], model: Model) -> None:
    messages = _require(body, "messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise _empty_array("messages")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    _common(body)
    max_output(body, model)
    if model.reasoning:
        check_sampling(body)
    _choice(body, "reasoning_effort", "", REASONING_EFFORTS)
    _check_logprobs(body, model)
    _expect(body, "parallel_tool_calls", (bool,), "a boolean")
    _check_tools(body)
    _check_response_format(body)


def _check_logprobs(body: dict[str, Any], model: Model) -> None:
    asked = _expect(body, "logprobs", (bool,), "a boolean")
    top = _integer(body, "top_logprobs", 0, 20)
    if model.reasoning:
        # Reasoning models write no log probabilities; Azure refuses the parameters as it does
        # the sampling settings they ignore.
        for key, value in (("logprobs", asked), ("top_logprobs", top)):
            if value:
                raise Invalid(
                    f"Unsupported parameter: '{key}' is not supported with this model.", key, "unsupported_parameter"
                )
    if top is not None and asked is not True:
        raise Invalid(
            "Invalid value for 'top_logprobs': 'top_logprobs' is only allowed when 'logprobs' is true.",
            "top_logprobs",
            "invalid_value",
        )


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise _wrong_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise _missing(f"{where}.role")
    if not isinstance(role, str):
        raise _wrong_type(f"{where}.role", _one_of(ROLE_ORDER), role)
    if role not in ROLES:
        raise Invalid(
            f"Invalid value: '{role}'. Supported values are: {_listed(ROLE_ORDER, 'and')}.",
            f"{where}.role",
            "invalid_value",
        )
    calls = _field(message, "tool_calls", where, (list,), "an array")
    if calls is not None:
        _check_tool_calls(calls, f"{where}.tool_calls")
    call = _field(message, "function_call", where, (dict,), "an object")
    if call is not None:
        _field(call, "name", f"{where}.function_call", (str,), "a string", required=True)
        _field(call, "arguments", f"{where}.function_call", (str,), "a string", required=True)
    _check_content(message, role, where)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _missing(f"{where}.tool_call_id")
    _field(message, "name", where, (str,), "a string", required=role == "function")


def _check_content(message: dict[str, Any], role: str, where: str) -> None:
    content, param = message.get("content"), f"{where}.content"
    if content is None:
        # An assistant message that calls tools (or a function) may have no text.
        if role != "assistant" or (not message.get("tool_calls") and "function_call" not in message):
            raise _missing(param)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _wrong_type(param, "one of a string or array of objects", content)
    if not content:
        raise _empty_array(param)
    for j, part in enumerate(content):
        _check_part(part, role, f"{param}[{j}]")


def _check_part(part: Any, role: str, where: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise Invalid(
            f"Invalid type for '{where}': expected an object with a 'type', but got {type_name(part)} instead.",
            where,
            "invalid_type",
        )
    kind = _choice(part, "type", where, PART_TYPES[role], required=True)
    if kind in ("text", "refusal"):
        _field(part, kind, where, (str,), "a string", required=True)
    elif kind == "image_url":
        image = _field(part, "image_url", where, (dict,), "an object", required=True)
        _field(image, "url", f"{where}.image_url", (str,), "a string", required=True)
        _choice(image, "detail", f"{where}.image_url", IMAGE_DETAILS)
    elif kind == "input_audio":
        audio = _field(part, "input_audio", where, (dict,), "an object", required=True)
        _field(audio, "data", f"{where}.input_audio", (str,), "a string", required=True)
        _choice(audio, "format", f"{where}.input_audio", AUDIO_FORMATS, required=True)
    elif kind == "file":
        file = _field(part, "file", where, (dict,), "an object", required=True)
        for key in ("file_data", "file_id", "filename"):
            _field(file, key, f"{where}.file", (str,), "a string")


def _check_tool_calls(calls: list[Any], where: str) -> None:
    if not calls:
        raise _empty_array(where)
    for k, call in enumerate(calls):
        param = f"{where}[{k}]"
        if not isinstance(call, dict):
            raise _wrong_type(param, "an object", call)
        _field(call, "id", param, (str,), "a string", required=True)
        _choice(call, "type", param, ("function",), required=True)
        fn = _field(call, "function", param, (dict,), "an object", required=True)
        _field(fn, "name", f"{param}.function", (str,), "a string", required=True)
        _field(fn, "arguments", f"{param}.function", (str,), "a string", required=True)


MAX_TOOLS = 128


def _check_tools(body: dict[str, Any]) -> None:
    tools = _expect(body, "tools", (list,), "an array")
    if tools is not None and len(tools) > MAX_TOOLS:
        raise Invalid(
            f"Invalid 'tools': array too long. Expected an array with maximum length {MAX_TOOLS}, but got "
            f"an array with length {len(tools)} instead.",
            "tools",
            "array_above_max_length",
        )
    names = set()
    for i, tool in enumerate(tools or []):
        names.add(_check_tool(tool, f"tools[{i}]"))
    choice = body.get("tool_choice")
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise Invalid(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                "tool_choice",
                "invalid_value",
            )
        if choice == "required" and not tools:
            raise Invalid(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
                None,
            )
        return
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise Invalid(
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            "tool_choice",
            "invalid_type",
        )
    if name not in names:
        raise Invalid(f"Invalid 'tool_choice': function '{name}' is not in 'tools'.", "tool_choice", None)


def _check_tool(tool: Any, where: str) -> str:
    """A function tool; its name."""
    if not isinstance(tool, dict):
        raise _wrong_type(where, "an object", tool)
    _choice(tool, "type", where, ("function",), required=True)
    fn = tool.get("function")
    if fn is None:
        raise _missing(f"{where}.function.name")
    if not isinstance(fn, dict):
        raise _wrong_type(f"{where}.function", "an object", fn)
    name = fn.get("name")
    if name is None:
        raise _missing(f"{where}.function.name")
    if not isinstance(name, str):
        raise _wrong_type(f"{where}.function.name", "a string", name)
    _field(fn, "description", f"{where}.function", (str,), "a string")
    _field(fn, "parameters", f"{where}.function", (dict,), "an object")
    _field(fn, "strict", f"{where}.function", (bool,), "a boolean")
    return name


def _check_response_format(body: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise Invalid(f"{fmt!r} is not of type 'object' - 'response_format'", "response_format", None)
    kind = _field(fmt, "type", "response_format", (str,), _one_of(RESPONSE_FORMATS), required=True)
    if kind not in RESPONSE_FORMATS:
        raise Invalid(
            f"Invalid value: '{kind}'. Supported values are: {_listed(RESPONSE_FORMATS, 'and')}.",
            "response_format",
            "invalid_value",
        )
    if kind != "json_schema":
        return
    spec = fmt.get("json_schema")
    if spec is None:
        raise _missing("response_format.json_schema.name")
    if not isinstance(spec, dict):
        raise _wrong_type("response_format.json_schema", "an object", spec)
    name = spec.get("name")
    if name is None:
        raise _missing("response_format.json_schema.name")
    if not isinstance(name, str):
        raise _wrong_type("response_format.json_schema.name", "a string", name)
    _field(spec, "schema", "response_format.json_schema", (dict,), "an object")
    _field(spec, "description", "response_format.json_schema", (str,), "a string")
    _field(spec, "strict", "response_format.json_schema", (bool,), "a boolean")


# --- Completions and embeddings -----------------------------------------------------------------


def _is_token_array(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


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
    raise Invalid(
        f"Invalid type for '{key}': expected a string, an array of strings, an array of tokens or an "
        f"array of token arrays, but got {type_name(value)} instead.",
        key,
        "invalid_type",
    )


def check_completions(body: dict[str, Any], model: Model) -> None:
    _check_text_input(_require(body, "prompt"), "prompt", allow_empty_string=True)
    _common(body)
    _integer(body, "max_tokens", 0)
    _integer(body, "best_of", 1, 20)
    _integer(body, "logprobs", 0, 5)
    _expect(body, "echo", (bool,), "a boolean")
    _expect(body, "suffix", (str,), "a string")


def check_embeddings(body: dict[str, Any], model: Model) -> None:
    value = _require(body, "input")
    _check_text_input(value, "input", allow_empty_string=False)
    if isinstance(value, list) and len(value) > 2048 and not _is_token_array(value):
        raise Invalid("Too many inputs. The max number of inputs is 2048.", "input", "invalid_value")
    fmt = _expect(body, "encoding_format", (str,), "a string")
    if fmt is not None and fmt not in ("float", "base64"):
        raise Invalid(
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.", "encoding_format", "invalid_value"
        )
    _expect(body, "user", (str,), "a string")
    dims = _integer(body, "dimensions", 1)
    if dims is not None:
        if not model.supports_dimensions:
            raise Invalid("This model does not support specifying dimensions.", "dimensions", "invalid_value")
        if dims > model.embedding_size:
            raise Invalid(
                f"Invalid 'dimensions': must be at most {model.embedding_size}, got {dims}.",
                "dimensions",
                "integer_out_of_range",
            )
