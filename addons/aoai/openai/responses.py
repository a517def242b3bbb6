"""The Responses API: its input as items, the response object and its event stream. Pure
functions of the request body, the model, the earlier turns and a random generator; the
answer's words come from the chat generator, so text, tool calls and structured output behave
alike on both APIs. The request checks are in responses_checks.py (`check_responses` is also
importable from here).

Field names and event types follow Azure's v1 OpenAPI file (`/responses`) and, where it says
less, the OpenAI Responses API as its Python SDK types it.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import chat, content_filter, shapes, tokens
from .catalogue import Model

# Re-exported: the checks and their error were imported from here before they had a module.
from .responses_checks import check_responses as check_responses
from .sealed_reasoning import seal, unseal
from .validation import Invalid as Invalid

if TYPE_CHECKING:
    from tiktoken import Encoding

    from .text import Corpus

# --- Input as items -----------------------------------------------------------------------------


def input_items(body: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
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


def as_messages(items: list[dict[str, Any]], instructions: str | None = None) -> list[dict[str, Any]]:
    """Items as the chat messages a model reads: what tokens are counted on, and what the
    chat generator answers."""
    messages: list[dict[str, Any]] = [{"role": "developer", "content": instructions}] if instructions else []
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


def chat_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in body.get("tools") or []
    ]


def given_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as a list of items (a string is one user message)."""
    raw = body["input"]
    return [{"role": "user", "content": raw}] if isinstance(raw, str) else raw


def prompt_messages(body: dict[str, Any], history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the model reads: the instructions, the earlier turns and this input, as messages."""
    return as_messages(history + given_items(body), body.get("instructions"))


def count_input(body: dict[str, Any], history: list[dict[str, Any]], enc: Encoding) -> int:
    """Input tokens: the earlier turns, the instructions, this input and the tools, counted
    as the chat messages they become."""
    counted = tokens.count_chat_prompt(prompt_messages(body, history), enc, chat_tools(body) or None)
    return counted + carried_reasoning(body)


def carried_reasoning(body: dict[str, Any]) -> int:
    """The reasoning tokens that reasoning items passed back with their `encrypted_content`
    stand for: the model rereads them, so they are input tokens."""
    raw = body.get("input")
    if not isinstance(raw, list):
        return 0
    total = 0
    for item in raw:
        if isinstance(item, dict) and item.get("type") == "reasoning" and item.get("encrypted_content"):
            total += unseal(item["encrypted_content"]) or 0
    return total


# --- Log probabilities --------------------------------------------------------------------------


def token_logprobs(token_ids: list[int], corpus: Corpus, rng: random.Random, top: int) -> list[dict[str, Any]]:
    """Log probabilities of the answer's tokens: each the token as text, its UTF-8 bytes and
    `top` alternatives (real tokens of the encoding) sorted most likely first, the chosen
    token the most likely of them."""
    enc = corpus.enc
    out = []
    for token_id in token_ids:
        chosen = _token_entry(token_id, enc, -round(rng.expovariate(4.0), 6))
        alternatives = [chosen]
        seen = {token_id}
        for _ in range(top * 4):  # a few tries: a small corpus may not have `top` others
            if len(alternatives) >= top:
                break
            other = rng.choice(rng.choice(corpus.next_ids))
            if other not in seen:
                seen.add(other)
                alternatives.append(_token_entry(other, enc, 0.0))
        lowered = sorted(chosen["logprob"] - round(rng.uniform(0.5, 8.0), 6) for _ in alternatives[1:])[::-1]
        for entry, logprob in zip(alternatives[1:], lowered, strict=True):
            entry["logprob"] = logprob
        out.append({**chosen, "top_logprobs": alternatives[:top]})
    return out


def _token_entry(token_id: int, enc: Encoding, logprob: float) -> dict[str, Any]:
    raw = enc.decode_single_token_bytes(token_id)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


def count_history(history: list[dict[str, Any]], enc: Encoding) -> int:
    """What earlier turns add to a request's input tokens."""
    return tokens.count_chat_prompt(as_messages(history), enc) - tokens.count_chat_prompt([], enc)


def _as_chat(body: dict[str, Any], history: list[dict[str, Any]], reasoning: bool) -> dict[str, Any]:
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


def effort_of(body: dict[str, Any]) -> str:
    return (body.get("reasoning") or {}).get("effort") or "medium"


# --- The answer ---------------------------------------------------------------------------------


@dataclass
class OutputItem:
    item: dict[str, Any]  # the item as the completed response lists it
    token_ids: list[int] = field(default_factory=list)  # text or argument tokens, one per stream delta


@dataclass
class ResponseAnswer:
    id: str
    created_at: int
    model_version: str
    settings: dict[str, Any]  # the request's settings, echoed
    output: list[OutputItem]
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    incomplete: bool
    corpus: Corpus
    incomplete_reason: str = "max_output_tokens"  # or content_filter
    filtered: list[str] = field(default_factory=list)  # the content-filter categories that cut it

    @property
    def completion_tokens(self) -> int:
        return self.output_tokens

    @property
    def steps(self) -> int:
        """Token steps of the visible answer (at least one, for timing)."""
        return max(1, sum(len(o.token_ids) for o in self.output))

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def body(self, status: str | None = None) -> dict[str, Any]:
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

    def stream_timeline(self) -> list[tuple[int, dict[str, Any]]]:
        """The stream's events in Azure's order, each with the token step it is due at (-1: at
        once) and its `sequence_number`."""
        events: list[tuple[int, dict[str, Any]]] = [
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


def _item_events(output: OutputItem, index: int, first: int, corpus: Corpus) -> list[tuple[int, dict[str, Any]]]:
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
            (
                first,
                {
                    "type": "response.content_part.added",
                    **ref,
                    "content_index": 0,
                    "part": {**part, "text": "", "logprobs": []},
                },
            ),
        ]
        events += [
            (
                first + k,
                {
                    "type": "response.output_text.delta",
                    **ref,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": _delta_logprobs(part, k),
                },
            )
            for k, piece in enumerate(corpus.pieces(ids))
        ]
        events += [
            (
                last,
                {
                    "type": "response.output_text.done",
                    **ref,
                    "content_index": 0,
                    "text": part["text"],
                    "logprobs": part.get("logprobs") or [],
                },
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


def _delta_logprobs(part: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The k-th token's log probabilities as a delta event carries them (no `bytes`)."""
    logprobs = part.get("logprobs")
    if not logprobs or k >= len(logprobs):
        return []
    entry = logprobs[k]
    return [
        {
            "token": entry["token"],
            "logprob": entry["logprob"],
            "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in entry["top_logprobs"]],
        }
    ]


def echoed_settings(body: dict[str, Any], model: Model) -> dict[str, Any]:
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
    body: dict[str, Any],
    model: Model,
    input_tokens: int,
    history: list[dict[str, Any]],
    rng: random.Random,
    settings: chat.ChatSettings,
    cached_tokens: int = 0,
    answers: content_filter.AnswerFilter | None = None,
) -> ResponseAnswer:
    """A made-up answer to a Responses request whose earlier turns are `history`; `answers`
    judges its text (a blocked answer ends `incomplete`, reason `content_filter`)."""
    # The chat answer makes one call; the Responses answer adds its parallel ones as items.
    one_call = dataclasses.replace(settings, max_parallel_tool_calls=1)
    answer = chat.generate(_as_chat(body, history, model.reasoning), model, input_tokens, rng, one_call)
    blocked = chat.filter_answers(answer, answers) if answers is not None else []
    out = _from_chat(answer, body, model, rng, cached_tokens, settings.max_parallel_tool_calls)
    out.filtered = blocked
    return out


def fixed(
    content: str,
    body: dict[str, Any],
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
    answer: chat.ChatAnswer,
    body: dict[str, Any],
    model: Model,
    rng: random.Random,
    cached_tokens: int,
    most_calls: int = 1,
) -> ResponseAnswer:
    choice = answer.choices[0]
    output: list[OutputItem] = []
    includes = body.get("include") or ()
    if model.reasoning:
        summary = []
        if (body.get("reasoning") or {}).get("summary"):
            summary = [{"type": "summary_text", "text": answer.corpus.words(rng, 12)}]
        reasoning: dict[str, Any] = {"id": shapes.make_id("rs_", rng), "type": "reasoning", "summary": summary}
        if "reasoning.encrypted_content" in includes:
            reasoning["encrypted_content"] = seal(answer.reasoning_tokens)
        output.append(OutputItem(reasoning))
    incomplete = choice.finish_reason in ("length", "content_filter")
    extra_tokens = 0
    if choice.tool_calls and not incomplete and parallel_calls_allowed(body, model):
        extra_tokens = _more_calls(choice, body, answer.corpus, rng, most_calls)
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
        logprobs = []
        if "message.output_text.logprobs" in includes:
            # Drawn apart from the answer's generator: asking for them leaves the answer as it was.
            logprobs = token_logprobs(
                choice.token_ids, answer.corpus, random.Random(rng.random()), body.get("top_logprobs") or 0
            )
        text = {"type": "output_text", "text": choice.content, "annotations": [], "logprobs": logprobs}
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
        answer.completion_tokens + extra_tokens,
        answer.reasoning_tokens,
        incomplete,
        answer.corpus,
        "content_filter" if choice.finish_reason == "content_filter" else "max_output_tokens",
    )


def parallel_calls_allowed(body: dict[str, Any], model: Model) -> bool:
    """Several calls in one answer: not when the request turns them off or forces one
    function, nor on reasoning models (Azure: o-series do not make parallel calls)."""
    return (
        body.get("parallel_tool_calls", True) is not False
        and not isinstance(body.get("tool_choice"), dict)
        and not model.reasoning
    )


def _more_calls(choice: chat.Choice, body: dict[str, Any], corpus: Corpus, rng: random.Random, most_calls: int) -> int:
    """Add the parallel calls a seeded draw asks for to `choice`, up to `most_calls` in all (the
    deployment's maxParallelToolCalls) and within the output limit; returns the tokens they take."""
    tools = body.get("tools") or []
    limit = body.get("max_output_tokens")
    added = 0
    for _ in range(rng.randint(1, max(1, most_calls)) - 1):
        tool = rng.choice(tools)
        name = tool.get("name", "")
        name_tokens = tokens.count(name, corpus.enc) + 3
        room = None if limit is None else limit - choice.tokens - added - name_tokens
        if room is not None and room <= 0:
            break
        arguments, ids, cut = chat.json_answer(
            tool.get("parameters") or {"type": "object"}, corpus, rng, room or chat.DEFAULT_OUTPUT_TOKENS
        )
        if cut:  # a call the limit would cut is not made
            break
        choice.tool_calls.append(
            {
                "id": shapes.make_id("call_", rng)[:29],
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
        choice.tool_call_ids.append(ids)
        added += name_tokens + len(ids)
    return added


def conversation(
    history: list[dict[str, Any]], items: list[dict[str, Any]], answer_body: dict[str, Any]
) -> list[dict[str, Any]]:
    """The turns a later response that names this one continues from: the earlier turns,
    this input, and this output (reasoning items stay out: the model does not reread them)."""
    return history + items + [o for o in answer_body["output"] if o.get("type") != "reasoning"]


def item_page(
    items: list[dict[str, Any]], order: str, limit: str | None, after: str | None, before: str | None
) -> dict[str, Any]:
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
