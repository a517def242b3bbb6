"""Made-up legacy completions (`/completions`) in Azure's JSON and SSE shapes."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from . import content_filter, logprobs, shapes, text
from .catalogue import Model
from .chat import ChatSettings


@dataclass
class CompletionChoice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    prefix: str = ""  # the echoed prompt, sent before the generated text
    prompt: str = ""  # the prompt's text, known only when log probabilities are asked for
    filter_results: dict[str, Any] | None = None  # what the content filter scored (None: all safe)


@dataclass
class CompletionAnswer:
    id: str
    created: int
    model_version: str
    choices: list[CompletionChoice]
    prompt_tokens: int
    prompts: int
    corpus: text.Corpus
    prompt_filter: list[dict[str, Any]] | None = None  # each prompt's content-filter results, when scored
    top_logprobs: int | None = None  # the request's `logprobs`: alternatives per token, None when not asked

    def choice_logprobs(self, c: CompletionChoice) -> dict[str, Any] | None:
        """A choice's `logprobs` when asked for: its tokens (the echoed prompt's first), their
        offsets counted from the start of the prompt."""
        if self.top_logprobs is None:
            return None
        echoed = self.corpus.enc.encode(c.prefix, disallowed_special=()) if c.prefix else None
        rng = logprobs.token_rng(self.id, c.index)
        offset = 0 if c.prefix else len(c.prompt)
        return logprobs.completion_logprobs(self.corpus, c.token_ids, self.top_logprobs, rng, offset, echoed)

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)

    def usage(self) -> dict[str, Any]:
        return shapes.usage(self.prompt_tokens, self.completion_tokens)

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model_version,
            "prompt_filter_results": shapes.prompt_filter_results(self.prompts, self.prompt_filter),
            "choices": [
                {
                    "text": c.prefix + c.text,
                    "index": c.index,
                    "finish_reason": c.finish_reason,
                    "logprobs": self.choice_logprobs(c),
                    "content_filter_results": shapes.CONTENT_FILTER if c.filter_results is None else c.filter_results,
                }
                for c in self.choices
            ],
            "usage": self.usage(),
        }

    def stream_events(self, include_usage: bool) -> list[dict[str, Any]]:
        return [event for _, event in self.stream_timeline(include_usage)]

    def stream_timeline(self, include_usage: bool) -> list[tuple[int, dict[str, Any]]]:
        """The stream's frames, each with the token step it belongs to (-1: sent at once)."""
        head = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model_version}
        if include_usage:
            head["usage"] = None

        def frame(
            index: int,
            piece: str,
            finish: str | None,
            filters: dict[str, Any] | None = None,
            probs: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            return {
                **head,
                "choices": [
                    {
                        "text": piece,
                        "index": index,
                        "finish_reason": finish,
                        "logprobs": probs,
                        "content_filter_results": shapes.CONTENT_FILTER if piece else filters or {},
                    }
                ],
            }

        first = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": shapes.prompt_filter_results(self.prompts, self.prompt_filter),
        }
        per_choice = []
        for c in self.choices:
            pieces = ([c.prefix] if c.prefix else []) + self.corpus.pieces(c.token_ids)
            whole = self.choice_logprobs(c)
            if whole is None:
                frames = [frame(c.index, p, None) for p in pieces]
            else:
                # Each frame carries the log probabilities of its own tokens: the echo frame the
                # prompt's, every other frame one token's.
                echoed = len(whole["tokens"]) - len(c.token_ids)
                bounds = ([(0, echoed)] if c.prefix else []) + [
                    (echoed + i, echoed + i + 1) for i in range(len(c.token_ids))
                ]
                frames = [
                    frame(c.index, p, None, probs={key: values[a:b] for key, values in whole.items()})
                    for p, (a, b) in zip(pieces, bounds, strict=True)
                ]
            per_choice.append(frames + [frame(c.index, "", c.finish_reason, c.filter_results)])
        usage = {**head, "choices": [], "usage": self.usage()} if include_usage else None
        return shapes.timeline(first, per_choice, usage, opener=False)


def filter_answers(answer: CompletionAnswer, answers: content_filter.AnswerFilter) -> list[str]:
    """Judge each choice's text: a blocked one keeps what came before what blocked it and
    ends with `content_filter`. Returns the categories that blocked."""
    blocked: list[str] = []
    enc = answer.corpus.enc
    for c in answer.choices:
        verdict = answers.judge(c.text)
        if verdict.scored:
            c.filter_results = verdict.results()
        if not verdict.blocked:
            continue
        c.token_ids = content_filter.kept_ids(
            c.token_ids, c.text, verdict, lambda t: enc.encode(t, disallowed_special=())
        )
        c.text, c.finish_reason = enc.decode(c.token_ids), "content_filter"
        blocked += verdict.filtered
    return blocked


def prompts_of(body: dict[str, Any]) -> list[str | list[int]]:
    """`prompt` as a list of prompts (each a string or a token array)."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def _text_of(token_ids: list[int], corpus: text.Corpus) -> str:
    """The text a token-array prompt encodes, for echoing it; ids outside the vocabulary
    encode no text (the checks take any integer, as embeddings inputs do)."""
    try:
        return corpus.enc.decode(token_ids)
    except (KeyError, OverflowError):
        known = []
        for token in token_ids:
            try:
                known.append(corpus.enc.decode_single_token_bytes(token))
            except (KeyError, OverflowError):
                continue
        return b"".join(known).decode("utf-8", "replace")


def generate(
    body: dict[str, Any], model: Model, prompt_tokens: int, rng: random.Random, settings: ChatSettings
) -> CompletionAnswer:
    corpus = text.corpus(model.encoding)
    limit = body.get("max_tokens")
    limit = 16 if limit is None else limit  # the completions API's default
    prompts = prompts_of(body)
    n = body.get("n") or 1
    choices = []
    for p, prompt in enumerate(prompts):
        echo = ""
        if body.get("echo"):
            echo = prompt if isinstance(prompt, str) else _text_of(prompt, corpus)
        for j in range(n):
            if limit == 0:
                choices.append(CompletionChoice(p * n + j, "", [], "length", echo))
                continue
            answer = corpus.answer(rng, max(1, int(settings.completion_tokens.draw(rng))), None)
            # A completion continues the prompt, so it starts with a space; the space changes how
            # the text splits into tokens, so the limit is applied after adding it.
            ids = corpus.enc.encode(" " + answer.text, disallowed_special=())
            truncated = len(ids) > limit
            ids = ids[:limit]
            content = corpus.enc.decode(ids)
            cut = text.cut_at_stop(content, body.get("stop"))
            if cut is not None:
                content, ids, truncated = cut, corpus.enc.encode(cut, disallowed_special=()), False
            choices.append(CompletionChoice(p * n + j, content, ids, "length" if truncated else "stop", echo))
    result = CompletionAnswer(
        shapes.make_id("cmpl-", rng), int(time.time()), model.version, choices, prompt_tokens, len(prompts), corpus
    )
    top = body.get("logprobs")
    if isinstance(top, int) and not isinstance(top, bool):
        result.top_logprobs = top
        for c in choices:
            prompt = prompts[c.index // n]
            c.prompt = prompt if isinstance(prompt, str) else _text_of(prompt, corpus)
    return result
