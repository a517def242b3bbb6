"""Embeddings: vectors of the size asked; and the models list of the v1 API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from mitmproxy import http

from .. import wire
from ..openai import embeddings
from ..runtime import latency
from ..runtime.state import RequestContext
from .common import services_of

# Embedding answers of more numbers than this are made in a worker thread: 2,048 inputs of
# 3,072 dimensions take most of a second to make and write.
EMBEDDING_ON_LOOP_NUMBERS = 32_768


def openai_embeddings(context: RequestContext) -> http.Response | Awaitable[http.Response] | None:
    if context.route is None or context.route.operation != "embeddings":
        return None
    deployment, body = context.deployment, context.body
    dims = body.get("dimensions") or deployment.embedding_size or deployment.model.embedding_size
    items = embeddings.items_of(body["input"])
    if len(items) * dims > EMBEDDING_ON_LOOP_NUMBERS:
        return asyncio.to_thread(_embeddings, context, items, dims)
    return _embeddings(context, items, dims)


def _embeddings(context: RequestContext, items: list, dims: int) -> http.Response:
    deployment, body, config = context.deployment, context.body, context.config
    answer = embeddings.response_json(
        items,
        deployment.model.name,
        deployment.model.version,
        dims,
        body.get("encoding_format") or "float",
        context.prompt_tokens,
    )
    if config.latency_enabled:
        context.latency_s = (
            latency.profile(deployment, context.route, config).request_ms.draw(services_of(context).rng) / 1000
        )
    return wire.plain_response(200, answer, wire.azure_headers(context.request, config.region, "application/json"))


def openai_models(context: RequestContext) -> http.Response | None:
    """GET /openai/v1/models: the deployments, as the v1 API lists them."""
    request = context.request
    if context.route is None or context.route.operation != "models":
        return None
    data = [
        {"id": d.name, "object": "model", "created": 0, "owned_by": "system", "model": d.model.version}
        for d in context.config.deployments.values()
    ]
    return wire.json_response(200, {"object": "list", "data": data}, request, context.config.region)
