"""Azure's answer to a request longer than the model's context window, in the words of the
route's API (the checks refuse such a request; a declared fault imitates one)."""

from __future__ import annotations

from mitmproxy import http

from .. import wire
from .state import RequestContext


def too_long(context: RequestContext, window: int, used: int, wanted: int) -> http.Response:
    """Azure's context_length_exceeded 400 in the words of the route's API: `used` tokens of
    prompt (the longest input, for embeddings) and `wanted` with the answers' room."""
    assert context.route is not None  # only a routed request is measured against a window
    request, operation = context.request, context.route.operation
    if operation == "embeddings":
        return wire.openai_error(
            400,
            f"This model's maximum context length is {window} tokens, "
            f"however you requested {wanted} tokens. Please reduce your prompt.",
            param="input",
            code="context_length_exceeded",
            request=request,
        )
    if operation == "responses":
        return wire.openai_error(
            400,
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            param="input",
            code="context_length_exceeded",
            request=request,
        )
    return wire.openai_error(
        400,
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{wanted} tokens ({used} in the messages, {wanted - used} in the completion). Please reduce the "
        "length of the messages or completion.",
        param="messages" if operation == "chat" else "prompt",
        code="context_length_exceeded",
        request=request,
    )
