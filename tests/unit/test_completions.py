import random

import pytest

from aoai.openai import catalogue, completions, tokens
from aoai.openai.catalogue import Normal
from aoai.openai.chat import ChatSettings

INSTRUCT = catalogue.MODELS["gpt-35-turbo-instruct"]
ENC = tokens.encoding(INSTRUCT.encoding)


def generate(body, mean=200, seed=1, prompt_tokens=4):
    return completions.generate(body, INSTRUCT, prompt_tokens, random.Random(seed), ChatSettings(Normal(mean, 0), 1))


def test_max_tokens_defaults_to_16():
    answer = generate({"prompt": "Once upon a time"})
    body = answer.body()
    (choice,) = body["choices"]
    assert answer.completion_tokens == 16 == body["usage"]["completion_tokens"]
    assert choice["finish_reason"] == "length"
    assert len(ENC.encode(choice["text"])) == 16


@pytest.mark.parametrize("seed", range(30))
def test_a_cut_completion_has_exactly_max_tokens(seed):
    limit = 1 + seed % 7
    answer = generate({"prompt": "x", "max_tokens": limit, "n": 2}, seed=seed)
    for c in answer.choices:
        assert len(c.token_ids) == limit
        assert c.finish_reason == "length"
        assert ENC.encode(c.text) == c.token_ids
    assert answer.usage()["completion_tokens"] == 2 * limit


def test_a_completion_continues_the_prompt_with_a_space():
    answer = generate({"prompt": "Say", "max_tokens": 50}, mean=10)
    text = answer.body()["choices"][0]["text"]
    assert text.startswith(" ") and not text.startswith("  ")
    assert answer.choices[0].finish_reason == "stop"
    assert len(ENC.encode(text)) == len(answer.choices[0].token_ids)


def test_echo_puts_the_prompt_first():
    body = generate({"prompt": "Once upon a time", "echo": True, "max_tokens": 5}).body()
    text = body["choices"][0]["text"]
    assert text.startswith("Once upon a time ")
    assert len(ENC.encode(text[len("Once upon a time") :])) == 5
    assert body["usage"]["completion_tokens"] == 5


def test_echo_of_a_token_prompt_decodes_it():
    prompt = ENC.encode("Hello world")
    text = generate({"prompt": prompt, "echo": True, "max_tokens": 2}).body()["choices"][0]["text"]
    assert text.startswith("Hello world ")


def test_max_tokens_zero_echoes_only():
    answer = generate({"prompt": "Just this", "echo": True, "max_tokens": 0})
    (choice,) = answer.body()["choices"]
    assert choice["text"] == "Just this"
    assert choice["finish_reason"] == "length"
    assert answer.completion_tokens == 0


def test_prompt_lists_index_choices_prompt_times_n_plus_j():
    answer = generate({"prompt": ["first", "second", "third"], "n": 2, "echo": True, "max_tokens": 3})
    body = answer.body()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3, 4, 5]
    assert [c["text"].split(" ")[0] for c in body["choices"]] == [
        "first",
        "first",
        "second",
        "second",
        "third",
        "third",
    ]
    assert len(body["prompt_filter_results"]) == 3
    assert [p["prompt_index"] for p in body["prompt_filter_results"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 18
    assert body["usage"]["total_tokens"] == 18 + 4


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a", ["a"]),
        ([1, 2], [[1, 2]]),
        (["a", "b"], ["a", "b"]),
        ([[1], [2, 3]], [[1], [2, 3]]),
    ],
)
def test_prompts_of(prompt, expected):
    assert completions.prompts_of({"prompt": prompt}) == expected


def test_body_shape():
    body = generate({"prompt": "x"}).body()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "gpt-35-turbo-instruct"
    assert body["choices"][0]["logprobs"] is None


def test_stream_frames():
    answer = generate({"prompt": "Go", "echo": True, "max_tokens": 4})
    events = answer.stream_events(include_usage=True)
    assert (events[0]["id"], events[0]["choices"]) == ("", [])
    assert events[0]["prompt_filter_results"][0]["prompt_index"] == 0
    middle = events[1:-2]
    assert middle[0]["choices"][0]["text"] == "Go"  # the echo comes first
    assert len(middle) == 1 + 4
    assert "".join(e["choices"][0]["text"] for e in middle) == answer.body()["choices"][0]["text"]
    assert all(e["choices"][0]["finish_reason"] is None for e in middle)
    finish = events[-2]["choices"][0]
    assert (finish["text"], finish["finish_reason"]) == ("", "length")
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    assert all(e["usage"] is None for e in events[1:-1])
    assert all("usage" not in e for e in answer.stream_events(include_usage=False))
