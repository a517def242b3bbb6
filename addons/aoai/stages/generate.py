"""Generate: in generate mode, answer with made-up completions and embeddings, on time.

Generators are tried in order (`config.generators`); the first to return an answer wins.
The built-in ones are plain functions of a `RequestContext`, named so an extension can find,
replace or remove them, and each is asked only for the routes that name it (runtime/routes.py);
an extension's generators are asked for every request. A generator returns a mitmproxy
response, a `StreamPlan` for a paced stream, or None to pass.

Non-streamed answers are set at once and held by the pacing stage for as long as the whole
generation would take; streamed answers become a `StreamPlan` that the streaming stage plays,
each frame when it is due.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
import zlib
from collections.abc import Awaitable

from mitmproxy import http

from .. import wire
from ..docintel import service as docintel
from ..openai import audio, chat, completions, embeddings, images
from ..runtime import latency, media
from ..runtime.config import SimulatorConfig
from ..runtime.failures import describe
from ..runtime.routes import MANAGEMENT
from ..runtime.state import RequestContext, context_for
from ..runtime.streams import StreamPlan, StreamServer, carries_tokens, sse_frames

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


def stream_headers(context: RequestContext) -> dict[str, str]:
    headers = wire.azure_headers(context.request, context.config.region, "text/event-stream; charset=utf-8")
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    return headers


def _answer(context: RequestContext, answer) -> http.Response | StreamPlan:
    """The response for a chat or completions answer: JSON, or a stream paced or at once."""
    context.completion_tokens = answer.completion_tokens
    config, body = context.config, context.body
    hidden = getattr(answer, "reasoning_tokens", 0) // max(1, len(answer.choices))
    timing = latency.profile(context.deployment, context.operation, config) if config.latency_enabled else None
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        timeline = answer.stream_timeline(include_usage)
        if timing is None:
            return http.Response.make(200, wire.sse_body([e for _, e in timeline]), stream_headers(context))
        steps = max(step for step, _ in timeline) + 1
        # A fault injector may ask for the stream to break after some tokens.
        cut = context.stream_cut_after
        if cut is not None:
            timeline = [(step, event) for step, event in timeline if step < cut]
        encoded = [(step, b"data: " + wire.dumps(event) + b"\n\n") for step, event in timeline]
        frames = sse_frames(encoded, latency.token_offsets(timing, steps, hidden), done=cut is None)
        token_frames = [carries_tokens(event) for _, event in timeline] + ([False] if cut is None else [])
        return StreamPlan(stream_headers(context), frames, cut=cut is not None, token_frames=token_frames,
                          labels={"deployment": context.deployment.name, "operation": context.route.operation})
    if timing is not None:
        steps = max((len(c.token_ids) for c in answer.choices), default=1)
        context.latency_s = latency.generation_seconds(timing, steps, hidden)
    return wire.json_response(200, answer.body(), context.request, config.region)


def openai_chat(context: RequestContext) -> http.Response | StreamPlan | None:
    if context.route is None or context.route.operation != "chat":
        return None
    answer = chat.generate(context.body, context.deployment.model, context.prompt_tokens,
                           rng_for(context), _settings(context.config))
    return _answer(context, answer)


def openai_completions(context: RequestContext) -> http.Response | StreamPlan | None:
    if context.route is None or context.route.operation != "completions":
        return None
    answer = completions.generate(context.body, context.deployment.model, context.prompt_tokens,
                                  rng_for(context), _settings(context.config))
    return _answer(context, answer)


def openai_embeddings(context: RequestContext) -> http.Response | None:
    if context.route is None or context.route.operation != "embeddings":
        return None
    deployment, body, config = context.deployment, context.body, context.config
    dims = body.get("dimensions") or deployment.embedding_size or deployment.model.embedding_size
    answer = embeddings.response_body(embeddings.items_of(body["input"]), deployment.model.name,
                                      deployment.model.version, dims, body.get("encoding_format") or "float",
                                      context.prompt_tokens)
    if config.latency_enabled:
        context.latency_s = latency.profile(deployment, context.route, config).request_ms.draw() / 1000
    return wire.json_response(200, answer, context.request, config.region)


def openai_models(context: RequestContext) -> http.Response | None:
    """GET /openai/v1/models: the deployments, as the v1 API lists them."""
    request = context.request
    if context.route is None or context.route.operation != "models":
        return None
    data = [{"id": d.name, "object": "model", "created": 0, "owned_by": "system", "model": d.model.version}
            for d in context.config.deployments.values()]
    return wire.json_response(200, {"object": "list", "data": data}, request, context.config.region)


def _work_seconds(context: RequestContext) -> float:
    """How long an audio or image answer takes (0 with latency off)."""
    if not context.config.latency_enabled:
        return 0.0
    return latency.media_seconds(context.deployment, context.route, context.config,
                                 getattr(context.checked, "duration", 0.0))


def _text_response(context: RequestContext, content: str, content_type: str) -> http.Response:
    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return wire.plain_response(200, content.encode(), headers)


def openai_transcriptions(context: RequestContext) -> http.Response | StreamPlan | None:
    """Transcriptions and translations: text as long as the audio, timed over it."""
    if context.route is None or context.route.operation not in ("transcriptions", "translations"):
        return None
    request: audio.AudioRequest = context.checked
    model = context.deployment.model
    language = audio.language_name(request.language) if request.task == audio.TRANSCRIBE else "english"
    script = audio.transcript(request.duration, rng_for(context), language)
    seconds = _work_seconds(context)
    if request.stream:
        events = audio.stream_events(request, script, model)
        # Deltas spread from the first word's time to the end of the work.
        first = seconds * 0.3
        step = (seconds - first) / max(1, len(events) - 1)
        frames = [(first + i * step, b"data: " + wire.dumps(e) + b"\n\n") for i, e in enumerate(events)]
        return StreamPlan(stream_headers(context), frames, token_frames=[carries_tokens(e) for e in events],
                          labels={"deployment": context.deployment.name, "operation": context.route.operation})
    context.latency_s = seconds
    body, content_type = audio.render(request, script, model)
    if isinstance(body, dict):
        return wire.json_response(200, body, context.request, context.config.region)
    return _text_response(context, body, content_type)


def openai_speech(context: RequestContext) -> http.Response | None:
    """Speech: audio of the format asked, as long as the text takes to say."""
    if context.route is None or context.route.operation != "speech":
        return None
    request: audio.SpeechRequest = context.checked
    data, content_type = audio.synthesize(request)
    context.latency_s = _work_seconds(context)
    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return wire.plain_response(200, data, headers)


def image_url(context: RequestContext, data: bytes, content_type: str, extension: str) -> str:
    """Where a client downloads an image answered as a URL: back at this simulator, with an
    expiry in the query as Azure's signed blob URLs carry one."""
    name, expires = media.images.put(data, content_type, extension)
    request = context.request
    host = request.host_header or f"{request.host}:{request.port}"
    # The scheme the client used to reach us (request.scheme is the upstream's in reverse mode).
    scheme = "https" if context.flow.client_conn.tls_established else "http"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    return f"{scheme}://{host}/++/images/{name}?se={stamp}&sp=r"


def openai_images(context: RequestContext) -> http.Response | None:
    """Image generations and edits: real images of the size and format asked."""
    if context.route is None or context.route.operation not in ("images", "image_edits"):
        return None
    request: images.ImageRequest = context.checked
    seed = context.config.seed if context.config.seed is not None else random.random()
    pictures = [images.draw(request, index, str(seed)) for index in range(request.n)]
    urls = None
    if request.response_format == "url":
        urls = [image_url(context, p, request.content_type, request.output_format) for p in pictures]
    body = images.answer(request, pictures, urls, int(time.time()), context.prompt_tokens)
    context.latency_s = _work_seconds(context)
    return wire.json_response(200, body, context.request, context.config.region)


def chat_response(context: RequestContext, content: str) -> http.Response | StreamPlan:
    """A chat answer with the given text, shaped, counted, streamed and timed like a generated
    one: for generators in extensions that choose their own words."""
    answer = chat.fixed(content, context.body, context.deployment.model, context.prompt_tokens,
                        rng_for(context))
    return _answer(context, answer)


BUILT_IN = [openai_chat, openai_completions, openai_embeddings, openai_transcriptions, openai_speech, openai_images,
            openai_models, docintel.document_intelligence]


class Generate:
    def __init__(self, config: SimulatorConfig, streams: StreamServer, gates: latency.Gates):
        self.config = config
        self.streams = streams
        self.gates = gates
        config.generators.extend(BUILT_IN)
        self._built_in = frozenset(BUILT_IN)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # Synchronous unless there is something to wait for (a latency, an async generator):
        # mitmproxy awaits what a hook returns, and most requests then cost no coroutine.
        if flow.response or self.config.mode != "generate":
            return None
        context = context_for(flow, self.config)
        route = context.route
        if route is not None and route.family == MANAGEMENT:
            return None
        # Built-in generators answer only the routes that name them; the others (an extension's,
        # or one that replaced a built-in) are asked in turn.
        wanted = route.generator if route is not None else None
        generators = [g for g in self.config.generators if g not in self._built_in or g.__name__ == wanted]
        for index, generator in enumerate(generators):
            answer = self._call(generator, context)
            if inspect.isawaitable(answer):
                return self._finish(context, generator, answer, generators[index + 1:])
            if answer is not None:
                return self._deliver(context, answer)
        return None

    async def _finish(self, context: RequestContext, generator, pending: Awaitable, rest: list) -> None:
        """The rest of the generator walk once one generator turned out to be async."""
        answer = await self._settle(generator, context, pending)
        for generator in rest:
            if answer is not None:
                break
            answer = await self._settle(generator, context, self._call(generator, context))
        if answer is not None:
            waiting = self._deliver(context, answer)
            if waiting is not None:
                await waiting

    async def _settle(self, generator, context: RequestContext, answer):
        if not inspect.isawaitable(answer):
            return answer
        try:
            return await answer
        except Exception as e:
            return self._failed(generator, context, e)

    def _call(self, generator, context: RequestContext):
        try:
            return generator(context)
        except Exception as e:
            return self._failed(generator, context, e)

    def _failed(self, generator, context: RequestContext, error: Exception) -> http.Response:
        """A broken generator costs one request a 500, never the proxy."""
        flow, where = context.flow, describe(generator)
        # A warning, not an error: mitmproxy stops when an error is logged during start-up.
        logger.warning("generator %s failed on %s %s", where, flow.request.method, flow.request.path, exc_info=error)
        return wire.azure_error(500, "InternalServerError",
                                f"The generator {where} failed: {type(error).__name__}: {error}", flow.request)

    def _deliver(self, context: RequestContext, answer: http.Response | StreamPlan) -> Awaitable[None] | None:
        flow = context.flow
        gate = self.gates.gate(context.deployment) if context.deployment else None
        if isinstance(answer, StreamPlan):
            answer.arrived_ago = latency.since_arrival(flow)
            answer.gate = gate
            self.streams.route(flow, answer)
            return None
        delay = context.latency_s
        if delay:
            latency.hold(flow, delay, gate)  # the Pacing stage sends it when due
        flow.response = answer
        return None
