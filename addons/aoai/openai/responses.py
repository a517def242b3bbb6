"""The Responses API: its request checks, its input as items, the response object and its
event stream. Pure functions of the request body, the model, the earlier turns and a random
generator; the answer's words come from the chat generator, so text, tool calls and
structured output behave alike on both APIs.

Field names and event types follow Azure's v1 OpenAPI file (`/responses`) and, where it says
less, the OpenAI Responses API as its Python SDK types it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import chat, content_filter, shapes, tokens
from .catalogue import Model
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
# `max_output_tokens` below this is refused, as OpenAI refuses it.
MIN_OUTPUT_TOKENS = 16


# --- Request checks -----------------------------------------------------------------------------


def check_responses(body: dict, model: Model) -> None:
    """Azure's 400 for what is wrong with a Responses request (raises `Invalid`)."""
    if "input" not in body:
        raise _missing("input")
    _check_input(body["input"])
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
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        _expect(body, key, (bool,), "a boolean")
    if body.get("background"):
        # Answering at once while claiming background mode would mislead a client that polls.
        raise Invalid(
            "Background mode is not supported by this simulator; responses are answered at once.",
            "background",
            "unsupported_value",
        )
    for key in ("previous_response_id", "user"):
        _expect(body, key, (str,), "a string")
    _check_metadata(body)
    _choice(body, "truncation", "", TRUNCATIONS)
    names = _check_tools(body)
    _check_tool_choice(body, names)
    _check_text(body)
    _check_reasoning(body, model)


def _check_input(value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _wrong_type("input", "one of a string or array of input items", value)
    if not value:
        raise _empty_array("input")
    for i, item in enumerate(value):
        _check_item(item, f"input[{i}]")


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


def _check_content(item: dict, role: str, where: str) -> None:
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


def _check_metadata(body: dict) -> None:
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


def _check_tools(body: dict) -> set[str]:
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


def _check_tool_choice(body: dict, names: set[str]) -> None:
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


def _check_text(body: dict) -> None:
    text = _expect(body, "text", (dict,), "an object")
    fmt = _field(text, "format", "text", (dict,), "an object") if text is not None else None
    if fmt is None:
        return
    kind = _choice(fmt, "type", "text.format", TEXT_FORMATS, required=True)
    if kind == "json_schema":
        _field(fmt, "name", "text.format", (str,), "a string", required=True)
        _field(fmt, "schema", "text.format", (dict,), "an object", required=True)
        _field(fmt, "strict", "text.format", (bool,), "a boolean")


def _check_reasoning(body: dict, model: Model) -> None:
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


# --- Input as items -----------------------------------------------------------------------------


def input_items(body: dict, rng: random.Random) -> list[dict]:
    """The request's input as the items `input_items` lists: a string is one user message;
    each item gets an id when it has none."""
    items = []
    for item in given_items(body):
        kind = item.get("type") or "message"
        if kind == "message":
            content = item["content"]
            if isinstance(content, str):
                part = "output_text" if item["role"] == "assistant" else "input_text"
                content = [{"type": part, "text": content}]
            items.append(
                {
                    "type": "message",
                    "id": item.get("id") or shapes.make_id("msg_", rng),
                    "status": "completed",
                    "role": item["role"],
                    "content": content,
                }
            )
        else:
            prefix = {"function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}.get(kind, "item_")
            items.append(
                {"status": "completed", **item, "type": kind, "id": item.get("id") or shapes.make_id(prefix, rng)}
            )
    return items


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict))


def as_messages(items: list[dict], instructions: str | None = None) -> list[dict]:
    """Items as the chat messages a model reads: what tokens are counted on, and what the
    chat generator answers."""
    messages = [{"role": "developer", "content": instructions}] if instructions else []
    for item in items:
        kind = item.get("type") or "message"
        if kind == "message":
            content = item["content"]
            if isinstance(content, list) and any(p.get("type") == "input_image" for p in content):
                content = [
                    {
                        "type": "image_url",
                        "image_url": {"url": p.get("image_url") or "", "detail": p.get("detail") or "auto"},
                    }
                    if p.get("type") == "input_image"
                    else {"type": "text", "text": _text_of([p])}
                    for p in content
                ]
            else:
                content = _text_of(content)
            messages.append({"role": item["role"], "content": content})
        elif kind == "function_call":
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": item["call_id"],
                            "type": "function",
                            "function": {"name": item["name"], "arguments": item["arguments"]},
                        }
                    ],
                }
            )
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text_of(item["output"])})
    return messages


def chat_tools(body: dict) -> list[dict]:
    return [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in body.get("tools") or []
    ]


def given_items(body: dict) -> list[dict]:
    """The request's input as a list of items (a string is one user message)."""
    raw = body["input"]
    return [{"role": "user", "content": raw}] if isinstance(raw, str) else raw


def prompt_messages(body: dict, history: list[dict]) -> list[dict]:
    """What the model reads: the instructions, the earlier turns and this input, as messages."""
    return as_messages(history + given_items(body), body.get("instructions"))


def count_input(body: dict, history: list[dict], enc) -> int:
    """Input tokens: the earlier turns, the instructions, this input and the tools, counted
    as the chat messages they become."""
    return tokens.count_chat_prompt(prompt_messages(body, history), enc, chat_tools(body) or None)


def count_history(history: list[dict], enc) -> int:
    """What earlier turns add to a request's input tokens."""
    return tokens.count_chat_prompt(as_messages(history), enc) - tokens.count_chat_prompt([], enc)


def _as_chat(body: dict, history: list[dict], reasoning: bool) -> dict:
    """The chat request the model answers, with this request's settings."""
    out: dict[str, Any] = {"messages": prompt_messages(body, history)}
    if body.get("tools"):
        out["tools"] = chat_tools(body)
        choice = body.get("tool_choice", "auto")
        out["tool_choice"] = (
            {"type": "function", "function": {"name": choice["name"]}} if isinstance(choice, dict) else choice
        )
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")},
        }
    elif fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    if reasoning:
        out["reasoning_effort"] = effort_of(body)
    return out


def effort_of(body: dict) -> str:
    return (body.get("reasoning") or {}).get("effort") or "medium"


# --- The answer ---------------------------------------------------------------------------------


@dataclass
class OutputItem:
    item: dict  # the item as the completed response lists it
    token_ids: list[int] = field(default_factory=list)  # text or argument tokens, one per stream delta


@dataclass
class ResponseAnswer:
    id: str
    created_at: int
    model_version: str
    settings: dict  # the request's settings, echoed
    output: list[OutputItem]
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    incomplete: bool
    corpus: Any
    incomplete_reason: str = "max_output_tokens"  # or content_filter
    filtered: list[str] = field(default_factory=list)  # the content-filter categories that cut it

    @property
    def completion_tokens(self) -> int:
        return self.output_tokens

    @property
    def steps(self) -> int:
        """Token steps of the visible answer (at least one, for timing)."""
        return max(1, sum(len(o.token_ids) for o in self.output))

    def usage(self) -> dict:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def body(self, status: str | None = None) -> dict:
        """The response object; `status` "in_progress" gives it as a stream opens (no output yet)."""
        done = status is None
        status = status or ("incomplete" if self.incomplete else "completed")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": self.incomplete_reason} if done and self.incomplete else None,
            "model": self.model_version,
            "output": [o.item for o in self.output] if done else [],
            **self.settings,
            "usage": self.usage() if done else None,
        }

    def stream_timeline(self) -> list[tuple[int, dict]]:
        """The stream's events in Azure's order, each with the token step it is due at (-1: at
        once) and its `sequence_number`."""
        events: list[tuple[int, dict]] = [
            (-1, {"type": "response.created", "response": self.body("in_progress")}),
            (-1, {"type": "response.in_progress", "response": self.body("in_progress")}),
        ]
        step = 0
        for index, output in enumerate(self.output):
            events.extend(_item_events(output, index, step, self.corpus))
            step += len(output.token_ids)
        last = max(step - 1, 0)
        final = "response.incomplete" if self.incomplete else "response.completed"
        events.append((last, {"type": final, "response": self.body()}))
        return [(at, {**event, "sequence_number": n}) for n, (at, event) in enumerate(events)]


def _item_events(output: OutputItem, index: int, first: int, corpus) -> list[tuple[int, dict]]:
    """One output item's events: added, its deltas (one token each), done."""
    item, ids = output.item, output.token_ids
    last = first + max(len(ids) - 1, 0)
    kind = item["type"]
    ref = {"item_id": item["id"], "output_index": index}
    if kind == "message":
        opened = {**item, "status": "in_progress", "content": []}
        part = item["content"][0]
        events = [
            (first, {"type": "response.output_item.added", "output_index": index, "item": opened}),
            (first, {"type": "response.content_part.added", **ref, "content_index": 0, "part": {**part, "text": ""}}),
        ]
        events += [
            (
                first + k,
                {"type": "response.output_text.delta", **ref, "content_index": 0, "delta": piece, "logprobs": []},
            )
            for k, piece in enumerate(corpus.pieces(ids))
        ]
        events += [
            (
                last,
                {"type": "response.output_text.done", **ref, "content_index": 0, "text": part["text"], "logprobs": []},
            ),
            (last, {"type": "response.content_part.done", **ref, "content_index": 0, "part": part}),
        ]
    elif kind == "function_call":
        opened = {**item, "status": "in_progress", "arguments": ""}
        events = [(first, {"type": "response.output_item.added", "output_index": index, "item": opened})]
        events += [
            (first + k, {"type": "response.function_call_arguments.delta", **ref, "delta": piece})
            for k, piece in enumerate(corpus.pieces(ids))
        ]
        events.append(
            (
                last,
                {
                    "type": "response.function_call_arguments.done",
                    **ref,
                    "name": item["name"],
                    "arguments": item["arguments"],
                },
            )
        )
    else:  # reasoning: no visible tokens; its summary arrives whole
        events = [
            (first, {"type": "response.output_item.added", "output_index": index, "item": {**item, "summary": []}})
        ]
        for k, summary in enumerate(item.get("summary") or []):
            part = {"type": "summary_text", "text": summary["text"]}
            events += [
                (
                    first,
                    {
                        "type": "response.reasoning_summary_part.added",
                        **ref,
                        "summary_index": k,
                        "part": {**part, "text": ""},
                    },
                ),
                (
                    first,
                    {
                        "type": "response.reasoning_summary_text.delta",
                        **ref,
                        "summary_index": k,
                        "delta": summary["text"],
                    },
                ),
                (
                    first,
                    {
                        "type": "response.reasoning_summary_text.done",
                        **ref,
                        "summary_index": k,
                        "text": summary["text"],
                    },
                ),
                (first, {"type": "response.reasoning_summary_part.done", **ref, "summary_index": k, "part": part}),
            ]
    events.append((last, {"type": "response.output_item.done", "output_index": index, "item": item}))
    return events


def echoed_settings(body: dict, model: Model) -> dict:
    """The request's settings as the response object repeats them, defaults filled in (the
    fields of Azure's `AzureResponse`, and `store`)."""
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {
            "effort": effort_of(body) if model.reasoning else None,
            "summary": reasoning.get("summary") if model.reasoning else None,
        },
        "prompt": None,
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [{"strict": True, "description": None, "parameters": None, **t} for t in body.get("tools") or []],
        "top_logprobs": body.get("top_logprobs"),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "user": body.get("user"),
    }


_UNIQUE = random.SystemRandom()


def generate(
    body: dict,
    model: Model,
    input_tokens: int,
    history: list[dict],
    rng: random.Random,
    settings: chat.ChatSettings,
    cached_tokens: int = 0,
    answers: content_filter.AnswerFilter | None = None,
) -> ResponseAnswer:
    """A made-up answer to a Responses request whose earlier turns are `history`; `answers`
    judges its text (a blocked answer ends `incomplete`, reason `content_filter`)."""
    answer = chat.generate(_as_chat(body, history, model.reasoning), model, input_tokens, rng, settings)
    blocked = chat.filter_answers(answer, answers) if answers is not None else []
    out = _from_chat(answer, body, model, rng, cached_tokens)
    out.filtered = blocked
    return out


def fixed(
    content: str,
    body: dict,
    model: Model,
    input_tokens: int,
    rng: random.Random,
    answers: content_filter.AnswerFilter | None = None,
) -> ResponseAnswer:
    """An answer with the given text: for generators in extensions that choose their own words."""
    answer = chat.fixed(content, {"max_completion_tokens": body.get("max_output_tokens")}, model, input_tokens, rng)
    blocked = chat.filter_answers(answer, answers) if answers is not None else []
    out = _from_chat(answer, body, model, rng, 0)
    out.filtered = blocked
    return out


def _from_chat(
    answer: chat.ChatAnswer, body: dict, model: Model, rng: random.Random, cached_tokens: int
) -> ResponseAnswer:
    choice = answer.choices[0]
    output: list[OutputItem] = []
    if model.reasoning:
        summary = []
        if (body.get("reasoning") or {}).get("summary"):
            summary = [{"type": "summary_text", "text": answer.corpus.words(rng, 12)}]
        output.append(OutputItem({"id": shapes.make_id("rs_", rng), "type": "reasoning", "summary": summary}))
    incomplete = choice.finish_reason in ("length", "content_filter")
    for call, ids in zip(choice.tool_calls, choice.tool_call_ids, strict=False):
        output.append(
            OutputItem(
                {
                    "id": shapes.make_id("fc_", rng),
                    "type": "function_call",
                    "status": "incomplete" if incomplete else "completed",
                    "arguments": call["function"]["arguments"],
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                },
                ids,
            )
        )
    if choice.content:
        text = {"type": "output_text", "text": choice.content, "annotations": [], "logprobs": []}
        output.append(
            OutputItem(
                {
                    "id": shapes.make_id("msg_", rng),
                    "type": "message",
                    "status": "incomplete" if incomplete else "completed",
                    "role": "assistant",
                    "content": [text],
                },
                choice.token_ids,
            )
        )
    # Not from the request's (perhaps seeded) generator: two equal requests are two stored responses.
    return ResponseAnswer(
        shapes.make_id("resp_", _UNIQUE),
        int(time.time()),
        model.version,
        echoed_settings(body, model),
        output,
        answer.prompt_tokens,
        min(cached_tokens, answer.prompt_tokens),
        answer.completion_tokens,
        answer.reasoning_tokens,
        incomplete,
        answer.corpus,
        "content_filter" if choice.finish_reason == "content_filter" else "max_output_tokens",
    )


def conversation(history: list[dict], items: list[dict], answer_body: dict) -> list[dict]:
    """The turns a later response that names this one continues from: the earlier turns,
    this input, and this output (reasoning items stay out: the model does not reread them)."""
    return history + items + [o for o in answer_body["output"] if o.get("type") != "reasoning"]


def item_page(items: list[dict], order: str, limit: str | None, after: str | None, before: str | None) -> dict:
    """A page of a stored response's input items, as `GET …/input_items` lists them."""
    if order not in ("asc", "desc"):
        raise Invalid(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", "order", "invalid_value")
    try:
        count = 20 if limit is None else int(limit)
    except ValueError:
        raise Invalid(
            f"Invalid 'limit': expected an integer, but got '{limit}' instead.", "limit", "invalid_type"
        ) from None
    if not 1 <= count <= 100:
        raise Invalid(
            f"Invalid 'limit': integer must be between 1 and 100, got {count}.", "limit", "integer_out_of_range"
        )
    ordered = items if order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    if after in ids:
        ordered = ordered[ids.index(after) + 1 :]
    elif before in ids:
        ordered = ordered[: ids.index(before)]
    page = ordered[:count]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > count,
    }
