"""A small application that answers questions with Azure OpenAI: the code the tests beside it
exercise against the simulator (tests/test_app.py).

It reads its endpoint as it would in production: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY
and OPENAI_API_VERSION (the plugin's `aoai_simulator.env()` gives all three), and
CHAT_DEPLOYMENT (gpt-4o)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import openai
from openai import AzureOpenAI

SYSTEM = "You answer in one short sentence."
BUSY = "The assistant is busy; please try again in a minute."
REFUSED = "I cannot help with that."


def make_client(max_retries: int = 3) -> AzureOpenAI:
    """A client from the environment. The SDK retries 429s and 5xx itself, `max_retries`
    times, waiting as `retry-after-ms`/`retry-after` say."""
    return AzureOpenAI(max_retries=max_retries)


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def answer(question: str, client: AzureOpenAI | None = None) -> str:
    """The answer to `question`; BUSY when Azure stays unavailable or throttled after the
    retries, REFUSED when the content filter blocks the question."""
    client = client or make_client()
    try:
        completion = client.chat.completions.create(
            model=os.environ.get("CHAT_DEPLOYMENT", "gpt-4o"), messages=_messages(question), max_tokens=40
        )
    except (openai.RateLimitError, openai.InternalServerError):
        return BUSY
    except openai.BadRequestError as e:
        if e.code == "content_filter":
            return REFUSED
        raise
    return completion.choices[0].message.content or ""


def stream_answer(question: str, client: AzureOpenAI | None = None) -> Iterator[str]:
    """The answer as it is written, piece by piece."""
    client = client or make_client()
    stream = client.chat.completions.create(
        model=os.environ.get("CHAT_DEPLOYMENT", "gpt-4o"), messages=_messages(question), max_tokens=40, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content
