import random

import pytest

from aoai.openai import text, tokens


@pytest.fixture(params=tokens.ENCODINGS)
def corpus(request):
    return text.corpus(request.param)


@pytest.mark.parametrize("limit", [1, 5, 17, 60])
def test_a_limit_below_the_natural_length_gives_exactly_limit_tokens(corpus, limit):
    answer = corpus.answer(random.Random(limit), 200, limit)
    assert answer.truncated is True
    assert answer.tokens == limit
    assert len(answer.token_ids) == limit
    assert answer.text == corpus.enc.decode(answer.token_ids)


@pytest.mark.parametrize("seed", range(20))
def test_an_answer_the_limit_does_not_cut_is_whole_sentences(corpus, seed):
    rng = random.Random(seed)
    natural = rng.randint(1, 250)
    answer = corpus.answer(rng, natural, None)
    assert answer.truncated is False
    assert answer.tokens >= natural
    assert answer.text[0].isupper()
    assert answer.text.endswith(".")
    # Every sentence comes whole from the corpus, and the token ids are those of the text.
    sentences = [s.strip() + "." for s in answer.text.split(".") if s.strip()]
    assert all(s in corpus.first_text for s in sentences)
    assert corpus.enc.encode(answer.text) == answer.token_ids


def test_a_limit_above_the_answer_does_not_truncate(corpus):
    answer = corpus.answer(random.Random(3), 10, 10_000)
    assert answer.truncated is False
    assert answer.text.endswith(".")
    assert 10 <= answer.tokens < 10_000


def test_answers_are_reproducible_from_the_generator(corpus):
    a = corpus.answer(random.Random(42), 80, None)
    b = corpus.answer(random.Random(42), 80, None)
    c = corpus.answer(random.Random(43), 80, None)
    assert a.text == b.text
    assert a.text != c.text


def test_pieces_join_to_the_text(corpus):
    answer = corpus.answer(random.Random(5), 40, 33)
    pieces = corpus.pieces(answer.token_ids)
    assert len(pieces) == 33
    assert "".join(pieces) == answer.text


def test_words_are_lowercase_and_counted(corpus):
    words = corpus.words(random.Random(9), 3)
    assert words == words.lower()
    assert 1 <= len(words.split()) <= 3
    assert "." not in words
