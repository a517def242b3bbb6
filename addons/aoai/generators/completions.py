"""Legacy completions: made-up answers."""

from __future__ import annotations

from mitmproxy import http

from ..openai import completions
from ..runtime.state import RequestContext
from ..runtime.streams import StreamPlan
from .common import chat_settings, rng_for, text_answer


def openai_completions(context: RequestContext) -> http.Response | StreamPlan | None:
    if context.route is None or context.route.operation != "completions":
        return None
    answer = completions.generate(
        context.body, context.deployment.model, context.prompt_tokens, rng_for(context), chat_settings(context.config)
    )
    return text_answer(context, answer)
