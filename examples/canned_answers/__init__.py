"""Canned answers: replace the chat and Responses generators with answers chosen by keyword.

A package, to show that form: the answers live in `answers.json` beside this file. A user
message containing a keyword gets that keyword's answer; anything else gets the built-in
lorem-ipsum answer. Answers keep everything else a generated answer has: exact usage,
max_tokens cuts, streaming and latency.

    EXTENSION_PATH=examples/canned_answers make run
"""

import json
from pathlib import Path

from aoai.extension import chat_response, openai_chat, openai_responses, response_with_text

ANSWERS: dict[str, str] = json.loads((Path(__file__).parent / "answers.json").read_text())


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def answer_for(text: str) -> str | None:
    text = text.lower()
    return next((answer for keyword, answer in ANSWERS.items() if keyword in text), None)


def canned_chat(context):
    if context.operation is None or context.operation.name != "chat":
        return None
    answer = answer_for(last_user_text(context.body["messages"]))
    return chat_response(context, answer) if answer is not None else openai_chat(context)


def canned_response(context):
    """The Responses API: `input` is a string or a list of items; messages among them count."""
    if context.operation is None or context.operation.name != "responses":
        return openai_responses(context)  # retrieve, delete and input_items stay built in
    given = context.body["input"]
    messages = (
        [{"role": "user", "content": given}]
        if isinstance(given, str)
        else [item for item in given if item.get("role") == "user"]
    )
    answer = answer_for(last_user_text(messages))  # input_text parts carry `text` as chat's parts do
    return response_with_text(context, answer) if answer is not None else openai_responses(context)


def initialize(config):
    config.replace_generator("openai_chat", canned_chat)
    config.replace_generator("openai_responses", canned_response)
