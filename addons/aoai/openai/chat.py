"""Made-up chat completions: text, tool calls or structured output, in Azure's JSON and SSE
shapes. Pure functions of the request body, the model and a random generator."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import content_filter, logprobs, shapes, text, tokens
from .catalogue import Model, Normal
from .schema_values import value_within

# Reasoning tokens a reasoning model spends before answering, by reasoning_effort.
_REASONING = {"minimal": 0, "low": 64, "medium": 192, "high": 448}
# A JSON answer (structured output, tool arguments) is built only as far as its token budget
# reaches, at this many characters a token: twice what generated JSON takes (words run about
# four characters a token, punctuation fewer), so the budget, not the value, ends a long answer.
CHARS_PER_TOKEN = 8
DEFAULT_OUTPUT_TOKENS = 4096  # the budget without max_tokens, for a model whose output limit is unknown


@dataclass
class Choice:
    index: int
    content: str | None
    token_ids: list[int]  # the content's tokens, streamed one per frame
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_ids: list[list[int]] = field(default_factory=list)  # each call's argument tokens
    finish_reason: str = "stop"
    tokens: int = 0
    filter_results: dict[str, Any] | None = None  # what the content filter scored (None: all safe)


@dataclass
class ChatAnswer:
    id: str
    created: int
    model_version: str
    choices: list[Choice]
    prompt_tokens: int
    corpus: text.Corpus
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the prompt cache had seen
    prompt_filter: list[dict[str, Any]] | None = None  # the prompt's content-filter results, when scored
    top_logprobs: int | None = None  # alternatives per token when `logprobs` is asked for, else None

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices) + self.reasoning_tokens

    def usage(self) -> dict[str, Any]:
        return shapes.usage(
            self.prompt_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
            min(self.cached_tokens, self.prompt_tokens),
        )

    def body(self) -> dict[str, Any]:
        choices = []
        for c in self.choices:
            message: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": None, "annotations": []}
            if c.tool_calls:
                message["tool_calls"] = c.tool_calls
            filters = (
                c.filter_results
                if c.filter_results is not None
                else shapes.CONTENT_FILTER_FINAL
                if c.content is not None
                else {}
            )
            choices.append(
                {
                    "index": c.index,
                    "finish_reason": c.finish_reason,
                    "logprobs": self._choice_logprobs(c),
                    "message": message,
                    "content_filter_results": filters,
                }
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model_version,
            "system_fingerprint": shapes.fingerprint(self.model_version),
            "prompt_filter_results": shapes.prompt_filter_results(1, self.prompt_filter),
            "choices": choices,
            "usage": self.usage(),
        }

    def _choice_logprobs(self, c: Choice) -> dict[str, Any] | None:
        """A choice's `logprobs` when asked for: its text's tokens (null content for tool calls,
        which have no text)."""
        if self.top_logprobs is None:
            return None
        if c.content is None:
            return {"content": None, "refusal": None}
        rng = logprobs.token_rng(self.id, c.index)
        return {"content": logprobs.chat_content(self.corpus, c.token_ids, self.top_logprobs, rng), "refusal": None}

    def stream_events(self, include_usage: bool) -> list[dict[str, Any]]:
        """The frames of Azure's chat stream, without the closing [DONE]."""
        return [event for _, event in self.stream_timeline(include_usage)]

    def stream_timeline(self, include_usage: bool) -> list[tuple[int, dict[str, Any]]]:
        """The stream's frames, each with the token step it belongs to (-1: sent at once)."""
        head = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_version,
            "system_fingerprint": shapes.fingerprint(self.model_version),
        }
        if include_usage:
            head["usage"] = None

        def frame(
            index: int,
            delta: dict[str, Any],
            finish: str | None = None,
            filters: dict[str, Any] | None = None,
            probs: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            return {
                **head,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "finish_reason": finish,
                        "logprobs": probs,
                        "content_filter_results": filters or {},
                    }
                ],
            }

        first = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "prompt_filter_results": shapes.prompt_filter_results(1, self.prompt_filter),
            "choices": [],
        }
        per_choice: list[list[dict[str, Any]]] = []
        for c in self.choices:
            frames: list[dict[str, Any]] = []
            if c.tool_calls:
                for i, call in enumerate(c.tool_calls):
                    header = {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                    delta = (
                        {"role": "assistant", "content": None, "tool_calls": [header]}
                        if i == 0
                        else {"tool_calls": [header]}
                    )
                    frames.append(frame(c.index, delta))
                    frames.extend(
                        frame(c.index, {"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                        for p in self.corpus.pieces(c.tool_call_ids[i])
                    )
            else:
                frames.append(frame(c.index, {"role": "assistant", "content": "", "refusal": None}))
                pieces = self.corpus.pieces(c.token_ids)
                if self.top_logprobs is None:
                    frames.extend(frame(c.index, {"content": p}, filters=shapes.CONTENT_FILTER) for p in pieces)
                else:
                    # Each frame carries one token, and the log probabilities of that token.
                    rng, top = logprobs.token_rng(self.id, c.index), self.top_logprobs
                    frames.extend(
                        frame(
                            c.index,
                            {"content": p},
                            filters=shapes.CONTENT_FILTER,
                            probs={"content": [logprobs.chat_entry(self.corpus, t, top, rng)], "refusal": None},
                        )
                        for p, t in zip(pieces, c.token_ids, strict=True)
                    )
            # A filtered answer's last frame says which category stopped it.
            frames.append(frame(c.index, {}, c.finish_reason, c.filter_results))
            per_choice.append(frames)
        usage = {**head, "choices": [], "usage": self.usage()} if include_usage else None
        return shapes.timeline(first, per_choice, usage, opener=True)


@dataclass
class ChatSettings:
    completion_tokens: Normal  # natural answer length when nothing stops it earlier
    tool_call_share: float  # share of tool_choice "auto" requests that call a tool
    json_answer_tokens: int = 131_072  # JSON_ANSWER_MAX_TOKENS: a request's JSON answers together
    max_parallel_tool_calls: int = 1  # the deployment's maxParallelToolCalls: most calls in one answer


def limit_of(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens")
    return value if value is not None else body.get("max_tokens")


def generate(
    body: dict[str, Any], model: Model, prompt_tokens: int, rng: random.Random, settings: ChatSettings
) -> ChatAnswer:
    corpus = text.corpus(model.encoding)
    limit = limit_of(body)
    reasoning = 0
    if model.reasoning:
        base = _REASONING.get(body.get("reasoning_effort") or "medium", 192)
        reasoning = int(base * rng.uniform(0.5, 1.5)) if base else 0
        if limit is not None:
            reasoning = min(reasoning, limit)
            limit -= reasoning
    n = body.get("n") or 1
    called = _chosen_tools(body, rng, settings)
    # Without a limit the model writes until its own output limit stops it. JSON a schema makes
    # as long as that, n times over, is held to the bound on a request's JSON answers.
    budget = limit if limit is not None else model.max_output_tokens or DEFAULT_OUTPUT_TOKENS
    budget = min(budget, max(1, settings.json_answer_tokens // n))
    choices = []
    for index in range(n):
        if limit == 0:
            choices.append(Choice(index, "", [], finish_reason="length"))
        elif called:
            choices.append(_tool_choice(index, called, corpus, rng, budget))
        else:
            choices.append(_text_choice(index, body, corpus, rng, limit, settings, budget))
    answer = ChatAnswer(
        shapes.make_id("chatcmpl-", rng), int(time.time()), model.version, choices, prompt_tokens, corpus, reasoning * n
    )
    answer.top_logprobs = logprobs.asked_top(body)
    return answer


def fixed(content: str, body: dict[str, Any], model: Model, prompt_tokens: int, rng: random.Random) -> ChatAnswer:
    """An answer with the given text for every choice, cut at the request's limit."""
    corpus = text.corpus(model.encoding)
    ids = tokens.encode(content, corpus.enc)
    limit = limit_of(body)
    choices = []
    for index in range(body.get("n") or 1):
        if limit is not None and len(ids) > limit:
            cut = ids[:limit]
            choices.append(Choice(index, corpus.enc.decode(cut), cut, finish_reason="length", tokens=limit))
        else:
            choices.append(Choice(index, content, ids, tokens=len(ids)))
    answer = ChatAnswer(
        shapes.make_id("chatcmpl-", rng), int(time.time()), model.version, choices, prompt_tokens, corpus
    )
    answer.top_logprobs = logprobs.asked_top(body)
    return answer


def filter_answers(answer: ChatAnswer, answers: content_filter.AnswerFilter) -> list[str]:
    """Judge each text choice: a blocked one keeps the text before what blocked it and ends
    with `content_filter`. Tool calls pass. Returns the categories that blocked."""
    blocked: list[str] = []
    enc = answer.corpus.enc
    for c in answer.choices:
        if c.content is None:
            continue
        verdict = answers.judge(c.content)
        if verdict.scored:
            c.filter_results = verdict.results()
        if not verdict.blocked:
            continue
        ids = content_filter.kept_ids(c.token_ids, c.content, verdict, lambda t: enc.encode(t, disallowed_special=()))
        c.token_ids, c.content, c.tokens, c.finish_reason = ids, enc.decode(ids), len(ids), "content_filter"
        blocked += verdict.filtered
    return blocked


def _chosen_tools(body: dict[str, Any], rng: random.Random, settings: ChatSettings) -> list[dict[str, Any]]:
    """The functions the answer calls, in order (none: it answers in words)."""
    tools = [t.get("function") or {} for t in body.get("tools") or []]
    if not tools:
        return []
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        return []
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        return [next(t for t in tools if t.get("name") == name)]
    if choice == "auto":
        messages = body.get("messages") or []
        # After a tool result a model answers in words; otherwise it calls a tool this often.
        if (messages and messages[-1].get("role") == "tool") or rng.random() >= settings.tool_call_share:
            return []
    most = settings.max_parallel_tool_calls if body.get("parallel_tool_calls") is not False else 1
    # Several calls may name the same function (with other arguments), as a model fanning
    # out one lookup over several places does. One call costs no extra draw.
    count = rng.randint(1, most) if most > 1 else 1
    return [rng.choice(tools) for _ in range(count)]


def json_answer(
    schema: dict[str, Any], corpus: text.Corpus, rng: random.Random, budget: int
) -> tuple[str, list[int], bool]:
    """JSON for `schema` in at most `budget` tokens: its text, its tokens, and whether the
    budget cut it (a value longer than the budget is built only as far as the budget reaches)."""
    room = budget * CHARS_PER_TOKEN
    value, whole = value_within(schema, rng, corpus.words, room)
    content = orjson.dumps(value).decode()
    if len(content) > room:
        content, whole = content[:room], False
    ids = tokens.encode(content, corpus.enc)
    if whole and len(ids) <= budget:
        return content, ids, False
    # A value cut short ends mid-text, as one the model had to stop writing does.
    ids = ids[:budget] if len(ids) > budget else ids[:-1]
    return corpus.enc.decode(ids), ids, True


def _tool_choice(
    index: int, called: list[dict[str, Any]], corpus: text.Corpus, rng: random.Random, budget: int
) -> Choice:
    """An answer calling each of `called`; the budget runs across them, and a call it cuts is the last."""
    calls: list[dict[str, Any]] = []
    call_ids: list[list[int]] = []
    spent, cut = 0, False
    for tool in called:
        name_tokens = tokens.count(tool.get("name", ""), corpus.enc) + 3
        arguments, ids, cut = json_answer(
            tool.get("parameters") or {"type": "object"}, corpus, rng, max(0, budget - spent - name_tokens)
        )
        calls.append(
            {
                "id": shapes.make_id("call_", rng)[:29],
                "type": "function",
                "function": {"name": tool.get("name", ""), "arguments": arguments},
            }
        )
        call_ids.append(ids)
        spent += name_tokens + len(ids)
        if cut or spent >= budget:
            break
    return Choice(index, None, [], calls, call_ids, "length" if cut else "tool_calls", spent)


def _text_choice(
    index: int,
    body: dict[str, Any],
    corpus: text.Corpus,
    rng: random.Random,
    limit: int | None,
    settings: ChatSettings,
    budget: int,
) -> Choice:
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        if fmt == "json_schema":
            schema = (body["response_format"].get("json_schema") or {}).get("schema") or {"type": "object"}
        else:
            schema = {"type": "object", "properties": {corpus.words(rng, 1): {"type": "string"} for _ in range(3)}}
        content, ids, cut = json_answer(schema, corpus, rng, budget)
        return Choice(index, content, ids, finish_reason="length" if cut else "stop", tokens=len(ids))
    natural = max(1, int(settings.completion_tokens.draw(rng)))
    answer = corpus.answer(rng, natural, limit)
    stopped = text.cut_at_stop(answer.text, body.get("stop"))
    if stopped is not None:
        ids = corpus.enc.encode(stopped, disallowed_special=())
        return Choice(index, stopped, ids, tokens=len(ids))
    return Choice(
        index,
        answer.text,
        answer.token_ids,
        finish_reason="length" if answer.truncated else "stop",
        tokens=answer.tokens,
    )
