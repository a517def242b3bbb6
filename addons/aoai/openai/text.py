"""Lorem-ipsum answers measured in real tokens.

A corpus of sentences is built and tokenised once per encoding at start-up, so no request
pays for it. An answer is a run of consecutive sentences from a random starting point, cut
to an exact token count when a limit stops it.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import lorem

from . import tokens

CORPUS_SENTENCES = 4000


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    truncated: bool  # the limit cut it (finish_reason "length")

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


class Corpus:
    def __init__(self, encoding_name: str, sentences: int = CORPUS_SENTENCES, seed: int = 7):
        self.enc = tokens.encoding(encoding_name)
        state = random.getstate()
        random.seed(seed)  # the lorem package draws from the global generator
        try:
            texts = [lorem.sentence() for _ in range(sentences)]
        finally:
            random.setstate(state)
        # Each sentence in two forms: opening an answer, and following another one.
        self.first_text = texts
        self.next_text = [" " + t for t in texts]
        # One call per sentence: for short texts tiktoken's encode_batch costs several times
        # more (its thread pool), and this runs at every start.
        encode = self.enc.encode_ordinary
        self.first_ids = [encode(t) for t in self.first_text]
        self.next_ids = [encode(t) for t in self.next_text]

    def answer(self, rng: random.Random, natural_tokens: int, limit: int | None) -> Answer:
        """Whole sentences up to about `natural_tokens`, or exactly `limit` tokens when they
        would run past it."""
        n = len(self.first_text)
        i = rng.randrange(n)
        ids = list(self.first_ids[i])
        parts = [self.first_text[i]]
        target = max(1, natural_tokens)
        # Past the limit the answer is cut there anyway: stop adding sentences.
        while len(ids) < target and (limit is None or len(ids) <= limit):
            i = (i + 1) % n
            ids.extend(self.next_ids[i])
            parts.append(self.next_text[i])
        if limit is not None and len(ids) > limit:
            ids = ids[:limit]
            return Answer(self.enc.decode(ids), ids, True)
        return Answer("".join(parts), ids, False)

    def words(self, rng: random.Random, count: int) -> str:
        """A few lowercase words, for filling strings in generated JSON."""
        sentence = self.first_text[rng.randrange(len(self.first_text))].rstrip(".").lower()
        return " ".join(sentence.split()[: max(1, count)])

    def pieces(self, token_ids: list[int]) -> list[str]:
        """The text of each token, for streaming one token per frame."""
        return [self.enc.decode_single_token_bytes(t).decode("utf-8", "replace") for t in token_ids]


def cut_at_stop(content: str, stop: str | list[str] | None) -> str | None:
    """`content` up to the first of the request's stop sequences in it (a model stops before
    writing one, and it is not returned), or None when none occurs."""
    sequences = [stop] if isinstance(stop, str) else stop or []
    found = [i for i in (content.find(s) for s in sequences if s) if i >= 0]
    return content[: min(found)] if found else None


@functools.cache
def corpus(encoding_name: str) -> Corpus:
    return Corpus(encoding_name)
