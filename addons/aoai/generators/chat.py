"""Chat completions: made-up answers, and the helper for extensions that choose their own words."""

from __future__ import annotations

from collections.abc import Awaitable

from mitmproxy import http

from ..openai import chat
from ..runtime.state import RequestContext
from ..runtime.streams import StreamPlan
from .common import chat_settings, rng_for, text_answer, with_prompt_cache


def openai_chat(context: RequestContext) -> http.Response | StreamPlan | Awaitable[http.Response | StreamPlan] | None:
    if context.route is None or context.route.operation != "chat":
        return None
    body = context.body
    deployment = context.deployment
    settings = chat_settings(context.config, deployment.max_parallel_tool_calls)
    answer = chat.generate(body, deployment.model, context.prompt_tokens, rng_for(context), settings)

    def answered(cached: int) -> http.Response | StreamPlan:
        answer.cached_tokens = cached
        return text_answer(context, answer)

    return with_prompt_cache(context, body["messages"], body.get("tools"), answered)


def chat_response(context: RequestContext, content: str) -> http.Response | StreamPlan:
    """A chat answer with the given text, shaped, counted, streamed and timed like a generated
    one: for generators in extensions that choose their own words."""
    answer = chat.fixed(content, context.body, context.deployment.model, context.prompt_tokens, rng_for(context))
    return text_answer(context, answer)
