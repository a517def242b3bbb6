"""Images: generations and edits, real pictures of the size and format asked; those answered
as URLs are kept in the image store and served back under /++/images/."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable

from mitmproxy import http

from .. import wire
from ..openai import images
from ..runtime.state import RequestContext
from .common import services_of, work_seconds


def image_url(context: RequestContext, data: bytes, content_type: str, extension: str) -> str:
    """Where a client downloads an image answered as a URL: back at this simulator, with an
    expiry in the query as Azure's signed blob URLs carry one. With replicas sharing state,
    `share_images` must run before the URL is answered."""
    name, expires = services_of(context).images.put(data, content_type, extension)
    context.extras.setdefault("image_names", []).append(name)
    request = context.request
    host = request.host_header or f"{request.host}:{request.port}"
    # The scheme the client used to reach us (request.scheme is the upstream's in reverse mode).
    scheme = "https" if context.flow.client_conn.tls_established else "http"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    return f"{scheme}://{host}/++/images/{name}?se={stamp}&sp=r"


def openai_images(context: RequestContext) -> Awaitable[http.Response] | None:
    """Image generations and edits: real images of the size and format asked."""
    if context.route is None or context.route.operation not in ("images", "image_edits"):
        return None
    return _images_answer(context, context.checked)


async def _images_answer(context: RequestContext, request: images.ImageRequest) -> http.Response:
    seed = context.config.seed if context.config.seed is not None else random.random()
    # Drawing and encoding take 7 to 70 ms an image, up to ten a request: in a worker thread.
    pictures = await asyncio.to_thread(lambda: [images.draw(request, index, str(seed)) for index in range(request.n)])
    urls = None
    if request.response_format == "url":
        urls = [image_url(context, p, request.content_type, request.output_format) for p in pictures]
        await share_images(context)
    scored = context.prompt_filter[0] if context.prompt_filter else None
    body = images.answer(request, pictures, urls, int(time.time()), context.prompt_tokens, scored)
    context.latency_s = work_seconds(context)
    return wire.json_response(200, body, context.request, context.config.region)


async def share_images(context: RequestContext) -> None:
    """Write the images this request kept to the replicas' shared store (nothing when none is
    set), so whichever replica a download reaches serves it."""
    store = services_of(context).images
    names = context.extras.pop("image_names", [])
    await asyncio.gather(*(store.share(name) for name in names))
