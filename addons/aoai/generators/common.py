"""What the built-in generators share: the request's seeded random generator, its services,
and how a chat-like answer becomes a response (JSON held until due, or a paced stream)."""

from __future__ import annotations

import asyncio
import inspect
import random
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mitmproxy import http

from .. import wire
from ..openai import chat, completions, tokens, validation
from ..runtime import latency
from ..runtime.config import SimulatorConfig
from ..runtime.services import Services
from ..runtime.state import RequestContext
from ..runtime.streams import StreamPlan, carries_tokens, sse_frames

T = TypeVar("T")


def services_of(context: RequestContext) -> Services:
    """The stores a generator fills and reads: the ones the request's context carries."""
    services = context.services
    if services is None:
        raise RuntimeError("this request's context carries no services: it was not made by the routing stage")
    return services


def rng_for(context: RequestContext) -> random.Random:
    """A request's `seed` (or SIMULATOR_SEED) makes its answer reproducible; else fresh randomness."""
    seed = context.body.get("seed") if isinstance(context.body, dict) else None
    if seed is None:
        seed = context.config.seed
    if seed is None:
        return services_of(context).rng
    return random.Random(f"{seed}:{zlib.crc32(context.request.raw_content or b'')}")


def chat_settings(config: SimulatorConfig, most_tool_calls: int = 1) -> chat.ChatSettings:
    return chat.ChatSettings(
        config.completion_tokens, config.tool_call_share, config.bounds.json_answer_tokens, most_tool_calls
    )


def stream_labels(context: RequestContext) -> dict[str, str]:
    """What a stream's metrics are counted under (the deployment's label is bounded)."""
    return {"deployment": context.deployment.label, "operation": context.route.operation}


def stream_headers(context: RequestContext) -> dict[str, str]:
    headers = wire.azure_headers(context.request, context.config.region, "text/event-stream; charset=utf-8")
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    return headers


def text_answer(context: RequestContext, answer) -> http.Response | StreamPlan:
    """The response for a chat or completions answer: JSON, or a stream paced or at once."""
    answer.prompt_filter = context.prompt_filter
    if context.answer_filter is not None:
        judged = completions if isinstance(answer, completions.CompletionAnswer) else chat
        context.filtered += [("completion", c) for c in judged.filter_answers(answer, context.answer_filter)]
    context.completion_tokens = answer.completion_tokens
    config, body = context.config, context.body
    hidden = getattr(answer, "reasoning_tokens", 0) // max(1, len(answer.choices))
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        timeline = answer.stream_timeline(include_usage)
        return paced_stream(context, timeline, lambda event: b"data: " + wire.dumps(event) + b"\n\n", hidden, done=True)
    steps = max((len(c.token_ids) for c in answer.choices), default=1)
    hold_answer(context, steps, hidden)
    return wire.json_response(200, answer.body(), context.request, config.region)


def hold_answer(context: RequestContext, steps: int, hidden: int) -> None:
    """How long a non-streamed answer of `steps` tokens (and `hidden` reasoning ones) takes."""
    config = context.config
    if config.latency_enabled:
        timing = latency.profile(context.deployment, context.operation, config)
        context.latency_s = latency.generation_seconds(timing, steps, services_of(context).rng, hidden)


def paced_stream(
    context: RequestContext, timeline: list[tuple[int, dict]], encode, hidden: int, done: bool
) -> http.Response | StreamPlan:
    """A stream of `timeline`'s events (each at its token step, -1: at once): paced by the
    deployment's latency, or all at once when latency is off. `done` ends it with [DONE]."""
    config = context.config
    if not config.latency_enabled:
        data = b"".join(encode(event) for _, event in timeline) + (b"data: [DONE]\n\n" if done else b"")
        return http.Response.make(200, data, stream_headers(context))
    timing = latency.profile(context.deployment, context.operation, config)
    steps = max(step for step, _ in timeline) + 1
    # A fault injector may ask for the stream to break after some tokens.
    cut = context.stream_cut_after
    if cut is not None:
        timeline = [(step, event) for step, event in timeline if step < cut]
    ends = done and cut is None
    encoded = [(step, encode(event)) for step, event in timeline]
    frames = sse_frames(encoded, latency.token_offsets(timing, steps, services_of(context).rng, hidden), done=ends)
    token_frames = [carries_tokens(event) for _, event in timeline] + ([False] if ends else [])
    return StreamPlan(
        stream_headers(context), frames, cut=cut is not None, token_frames=token_frames, labels=stream_labels(context)
    )


def prompt_cache_hits(context: RequestContext, messages: list[dict], tools: list | None) -> int:
    """Prompt tokens this replica's prompt cache had seen; long prompts only (Azure caches
    from 1,024 tokens), so short ones cost nothing. `with_prompt_cache` asks the shared one too."""
    if context.prompt_tokens < 1024:
        return 0
    cache = services_of(context).prompt_cache
    seen = cache.remember(cache.digests(context.deployment.name, _prompt_ids(context, messages, tools)))
    context.cached_tokens = min(seen, context.prompt_tokens)
    return context.cached_tokens


def with_prompt_cache[T](
    context: RequestContext, messages: list[dict], tools: list | None, then: Callable[[int], T | Awaitable[T]]
) -> T | Awaitable[T]:
    """`then(cached tokens)`: at once from this replica's prompt cache, or, when replicas share
    one (SIMULATOR_REDIS_URL) and the prompt is long enough to be cached, an awaitable of it
    once Redis has answered (what this replica alone knows, when Redis is away)."""
    if context.prompt_tokens < 1024:
        return then(0)
    cache = services_of(context).prompt_cache
    digests = cache.digests(context.deployment.name, _prompt_ids(context, messages, tools))
    local = cache.remember(digests)
    if not cache.sharing or not digests:
        context.cached_tokens = min(local, context.prompt_tokens)
        return then(context.cached_tokens)
    return _shared_prompt_cache(context, digests, local, then)


async def _shared_prompt_cache[T](
    context: RequestContext, digests, local: int, then: Callable[[int], T | Awaitable[T]]
) -> T:
    seen = await services_of(context).prompt_cache.use_shared(digests, local)
    context.cached_tokens = min(seen, context.prompt_tokens)
    if answer_tokens(context) > HEAVY_TOKENS:  # a long answer is made off the event loop, as it would have been
        answer = await asyncio.to_thread(then, context.cached_tokens)
    else:
        answer = then(context.cached_tokens)
    # `then` may wait for something of its own (a stored response being shared).
    return await answer if inspect.isawaitable(answer) else answer


def _prompt_ids(context: RequestContext, messages: list[dict], tools: list | None) -> list[int]:
    return tokens.prompt_ids(messages, tokens.encoding(context.deployment.model.encoding), tools)


def text_response(context: RequestContext, content: str, content_type: str) -> http.Response:
    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return wire.plain_response(200, content.encode(), headers)


def work_seconds(context: RequestContext) -> float:
    """How long an audio or image answer takes (0 with latency off)."""
    if not context.config.latency_enabled:
        return 0.0
    return latency.media_seconds(
        context.deployment,
        context.route,
        context.config,
        getattr(context.checked, "duration", 0.0),
        services_of(context).rng,
    )


# Answers longer than this, all choices together, are made off the event loop (a few ms of
# Python per thousand tokens would otherwise hold every other request).
HEAVY_TOKENS = 20_000


# So are answers to prompts longer than this (a long prompt is tokenised again for the prompt
# cache; a Responses follow-up's earlier turns may be long while its own body is short).
HEAVY_PROMPT_TOKENS = 16_384


def answer_tokens(context: RequestContext) -> int:
    """The most tokens a request's answers may hold: n times its output limit (or, without one,
    the natural length's mean plus three deviations; for JSON, which a schema may make as long
    as the model can write, the model's limit), within what the model can write."""
    body, deployment = context.body, context.deployment
    if not isinstance(body, dict) or deployment is None:
        return 0
    limit = validation.answer_limit(context.route.operation, body) if context.route is not None else None
    ceiling = deployment.model.max_output_tokens
    if not isinstance(limit, int):
        natural = context.config.completion_tokens
        limit = (
            (ceiling or chat.DEFAULT_OUTPUT_TOKENS) if _writes_json(body) else int(natural.mean + 3 * natural.std_dev)
        )
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    # Completions answer n choices for each prompt of a list.
    prompt = body.get("prompt") if context.route is not None and context.route.operation == "completions" else None
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
    return max(1, n) * prompts * (min(limit, ceiling) if ceiling else limit)


def _writes_json(body: dict) -> bool:
    """Whether the answer may be JSON made from a schema: tool arguments or structured output."""
    fmt = body.get("response_format")
    text = body.get("text")
    fmt = fmt if isinstance(fmt, dict) else (text.get("format") if isinstance(text, dict) else None)
    return bool(body.get("tools")) or (isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object"))
