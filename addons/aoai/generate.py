"""Generate: in generate mode, answer with made-up completions and embeddings.

Generators are tried in order (`config.generators`); the first to return a response wins.
The built-in ones are plain functions of a `RequestContext`, named so an extension can find,
replace or remove them.
"""

from __future__ import annotations

import inspect
import logging
import random
import zlib

from mitmproxy import http

from . import chat, completions, embeddings, wire
from .config import CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, RequestContext, SimulatorConfig, context_of

logger = logging.getLogger(__name__)

_shared_rng = random.Random()


def rng_for(context: RequestContext) -> random.Random:
    """A request's `seed` (or SIMULATOR_SEED) makes its answer reproducible; else fresh randomness."""
    seed = context.body.get("seed") if isinstance(context.body, dict) else None
    if seed is None:
        seed = context.config.seed
    if seed is None:
        return _shared_rng
    return random.Random(f"{seed}:{zlib.crc32(context.request.raw_content or b'')}")


def _settings(config: SimulatorConfig) -> chat.ChatSettings:
    return chat.ChatSettings(config.completion_tokens, config.tool_call_share)


def _answer(context: RequestContext, answer) -> http.Response:
    context.values["completion_tokens"] = answer.completion_tokens
    body = context.body
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        headers = wire.azure_headers(context.request, context.config.region, "text/event-stream; charset=utf-8")
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return http.Response.make(200, wire.sse_body(answer.stream_events(include_usage)), headers)
    return wire.json_response(200, answer.body(), context.request, context.config.region)


def openai_chat(context: RequestContext) -> http.Response | None:
    if context.operation is not CHAT_COMPLETIONS:
        return None
    answer = chat.generate(context.body, context.deployment.model, context.values["prompt_tokens"],
                           rng_for(context), _settings(context.config))
    return _answer(context, answer)


def openai_completions(context: RequestContext) -> http.Response | None:
    if context.operation is not COMPLETIONS:
        return None
    answer = completions.generate(context.body, context.deployment.model, context.values["prompt_tokens"],
                                  rng_for(context), _settings(context.config))
    return _answer(context, answer)


def openai_embeddings(context: RequestContext) -> http.Response | None:
    if context.operation is not EMBEDDINGS:
        return None
    deployment, body = context.deployment, context.body
    dims = body.get("dimensions") or deployment.embedding_size or deployment.model.embedding_size
    answer = embeddings.response_body(embeddings.items_of(body["input"]), deployment.model.name,
                                      deployment.model.version, dims, body.get("encoding_format") or "float",
                                      context.values["prompt_tokens"])
    return wire.json_response(200, answer, context.request, context.config.region)


def openai_models(context: RequestContext) -> http.Response | None:
    """GET /openai/v1/models: the deployments, as the v1 API lists them."""
    request = context.request
    if request.method != "GET" or request.path.partition("?")[0].rstrip("/") != "/openai/v1/models":
        return None
    data = [{"id": d.name, "object": "model", "created": 0, "owned_by": "system", "model": d.model.version}
            for d in context.config.deployments.values()]
    return wire.json_response(200, {"object": "list", "data": data}, request, context.config.region)


BUILT_IN = [openai_chat, openai_completions, openai_embeddings, openai_models]


class Generate:
    def __init__(self, config: SimulatorConfig):
        self.config = config
        config.generators.extend(BUILT_IN)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or self.config.mode != "generate":
            return
        context = context_of(flow)
        if context is None:
            context = flow.metadata["aoai"] = RequestContext(flow, self.config)
        for generator in self.config.generators:
            try:
                response = generator(context)
                if inspect.isawaitable(response):
                    response = await response
            except Exception as e:
                # A broken generator costs one request a 500, never the proxy.
                where = f"{getattr(generator, '__module__', '?')}.{getattr(generator, '__name__', generator)}"
                logger.exception("generator %s failed on %s %s", where, flow.request.method, flow.request.path)
                flow.response = wire.azure_error(500, "InternalServerError",
                                                 f"The generator {where} failed: {type(e).__name__}: {e}",
                                                 flow.request)
                return
            if response is not None:
                flow.response = response
                return
