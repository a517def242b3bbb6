"""Canned answers: replace the chat generator with answers chosen by keyword.

A package, to show that form: the answers live in `answers.json` beside this file. A user
message containing a keyword gets that keyword's answer; anything else gets the built-in
lorem-ipsum answer. Answers keep everything else a generated answer has: exact usage,
max_tokens cuts, streaming and latency.

    EXTENSION_PATH=examples/canned_answers make run
"""

import json
from pathlib import Path

from aoai.extension import chat_response, openai_chat

ANSWERS: dict[str, str] = json.loads((Path(__file__).parent / "answers.json").read_text())


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def canned_chat(context):
    if context.operation is None or context.operation.name != "chat":
        return None
    text = last_user_text(context.body["messages"]).lower()
    for keyword, answer in ANSWERS.items():
        if keyword in text:
            return chat_response(context, answer)
    return openai_chat(context)


def initialize(config):
    config.replace_generator("openai_chat", canned_chat)
