"""Made-up log probabilities for generated tokens, in chat's and legacy completions' shapes.

Only asked-for answers pay for them: the answer keeps its token ids, and these functions turn
them into entries when the body or a stream frame is built. Each token's alternatives are
other real tokens of the encoding (the corpus's own words), so `token` and `bytes` always
describe something the model could have written. Values come from a generator seeded with
the answer's id and choice, so a seeded request gets the same numbers.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from .text import Corpus

CHAT_MOST_ALTERNATIVES = 20  # top_logprobs' range on chat
COMPLETIONS_MOST_ALTERNATIVES = 5  # logprobs' range on legacy completions


@functools.cache
def _alternatives(corpus: Corpus) -> tuple[int, ...]:
    """The distinct tokens the corpus's sentences use: the pool alternatives are drawn from."""
    seen: set[int] = set()
    for ids in corpus.first_ids[:400]:
        seen.update(ids)
    for ids in corpus.next_ids[:400]:
        seen.update(ids)
    return tuple(sorted(seen))


def _token_bytes(corpus: Corpus, token: int) -> bytes:
    return corpus.enc.decode_single_token_bytes(token)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def token_rng(answer_id: str, choice: int) -> random.Random:
    """The generator for one choice's log probabilities: the same answer, the same values."""
    return random.Random(f"{answer_id}:{choice}:logprobs")


def draw(corpus: Corpus, token: int, alternatives: int, rng: random.Random) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's logprob and `alternatives` (token, logprob) pairs, most likely first,
    the chosen token first among them; every alternative's text differs from the others'."""
    chosen = -min(rng.expovariate(4.0), 9.0)  # mostly near 0: a model is sure of most tokens
    if alternatives <= 0:
        return chosen, []
    pool = _alternatives(corpus)
    pairs = [(token, chosen)]
    texts = {_text(_token_bytes(corpus, token))}
    value = chosen
    tries = 0
    while len(pairs) < alternatives and tries < alternatives * 4:
        tries += 1
        other = pool[rng.randrange(len(pool))]
        text = _text(_token_bytes(corpus, other))
        if text in texts:
            continue
        texts.add(text)
        value -= rng.uniform(0.5, 3.0)
        pairs.append((other, value))
    return chosen, pairs


def chat_entry(corpus: Corpus, token: int, top: int, rng: random.Random) -> dict[str, Any]:
    """One `ChatCompletionTokenLogprob`: the token, its logprob, bytes and top alternatives."""
    raw = _token_bytes(corpus, token)
    chosen, pairs = draw(corpus, token, top, rng)
    top_entries = []
    for other, value in pairs:
        other_raw = _token_bytes(corpus, other)
        top_entries.append({"token": _text(other_raw), "logprob": value, "bytes": list(other_raw)})
    return {"token": _text(raw), "logprob": chosen, "bytes": list(raw), "top_logprobs": top_entries}


def chat_content(corpus: Corpus, token_ids: list[int], top: int, rng: random.Random) -> list[dict[str, Any]]:
    return [chat_entry(corpus, t, top, rng) for t in token_ids]


def completion_logprobs(
    corpus: Corpus,
    token_ids: list[int],
    top: int,
    rng: random.Random,
    offset: int,
    prompt_ids: list[int] | None = None,
) -> dict[str, Any]:
    """A legacy completion's `logprobs`: its tokens, their logprobs, the `top` alternatives of
    each as a dict, and each token's character offset counted from `offset` (the start of
    what the choice's text continues). Echoed `prompt_ids` come first, the first of them
    without a logprob (nothing came before it)."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    position = offset
    for i, token in enumerate((prompt_ids or []) + token_ids):
        text = _text(_token_bytes(corpus, token))
        tokens.append(text)
        text_offset.append(position)
        position += len(text)
        if i == 0 and prompt_ids:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        chosen, pairs = draw(corpus, token, top, rng)
        token_logprobs.append(chosen)
        top_logprobs.append({_text(_token_bytes(corpus, t)): v for t, v in pairs})
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }


def asked_top(body: dict[str, Any]) -> int | None:
    """Chat: how many alternatives each token gets when `logprobs` is true, else None."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) else 0
