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

import asyncio
import inspect
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mitmproxy import ctx, http

from .. import wire
from ..docintel import service as docintel
from ..openai import audio, chat, completions, embeddings, images, responses, tokens, validation
from ..openai.catalogue import Normal
from ..runtime import latency, media, offload, peers
from ..runtime.config import MAX_WHOLE, ConfigError, SimulatorConfig
from ..runtime.failures import describe
from ..runtime.options import Option, check, declare, names, text_number
from ..runtime.routes import MANAGEMENT
from ..runtime.startup import Startup
from ..runtime.state import RequestContext, context_for
from ..runtime.stored import StoredResponse
from ..runtime.streams import StreamPlan, StreamServer, carries_tokens, event_frame, sse_frames

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
    return chat.ChatSettings(config.completion_tokens, config.tool_call_share, config.bounds.json_answer_tokens)


def stream_labels(context: RequestContext) -> dict[str, str]:
    """What a stream's metrics are counted under (the deployment's label is bounded)."""
    return {"deployment": context.deployment.label, "operation": context.route.operation}


def stream_headers(context: RequestContext) -> dict[str, str]:
    headers = wire.azure_headers(context.request, context.config.region, "text/event-stream; charset=utf-8")
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    return headers


def _answer(context: RequestContext, answer) -> http.Response | StreamPlan:
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
        return _stream(context, timeline, lambda event: b"data: " + wire.dumps(event) + b"\n\n", hidden, done=True)
    steps = max((len(c.token_ids) for c in answer.choices), default=1)
    _hold(context, steps, hidden)
    return wire.json_response(200, answer.body(), context.request, config.region)


def _hold(context: RequestContext, steps: int, hidden: int) -> None:
    """How long a non-streamed answer of `steps` tokens (and `hidden` reasoning ones) takes."""
    config = context.config
    if config.latency_enabled:
        timing = latency.profile(context.deployment, context.operation, config)
        context.latency_s = latency.generation_seconds(timing, steps, hidden)


def _stream(
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
    frames = sse_frames(encoded, latency.token_offsets(timing, steps, hidden), done=ends)
    token_frames = [carries_tokens(event) for _, event in timeline] + ([False] if ends else [])
    return StreamPlan(
        stream_headers(context), frames, cut=cut is not None, token_frames=token_frames, labels=stream_labels(context)
    )


def _prompt_cache(context: RequestContext, messages: list[dict], tools: list | None) -> int:
    """Prompt tokens the deployment's prompt cache had seen; long prompts only (Azure caches
    from 1,024 tokens), so short ones cost nothing."""
    if context.prompt_tokens < 1024:
        return 0
    enc = tokens.encoding(context.deployment.model.encoding)
    seen = context.config.prompt_cache.use(context.deployment.name, tokens.prompt_ids(messages, enc, tools))
    context.cached_tokens = min(seen, context.prompt_tokens)
    return context.cached_tokens


def openai_chat(context: RequestContext) -> http.Response | StreamPlan | None:
    if context.route is None or context.route.operation != "chat":
        return None
    body = context.body
    answer = chat.generate(
        body, context.deployment.model, context.prompt_tokens, rng_for(context), _settings(context.config)
    )
    answer.cached_tokens = _prompt_cache(context, body["messages"], body.get("tools"))
    return _answer(context, answer)


def openai_completions(context: RequestContext) -> http.Response | StreamPlan | None:
    if context.route is None or context.route.operation != "completions":
        return None
    answer = completions.generate(
        context.body, context.deployment.model, context.prompt_tokens, rng_for(context), _settings(context.config)
    )
    return _answer(context, answer)


def openai_responses(context: RequestContext) -> http.Response | StreamPlan | Awaitable[http.Response] | None:
    """The Responses API: create, and retrieve, delete and list the input of a stored response."""
    route = context.route
    if route is None or not route.operation.startswith("responses"):
        return None
    if route.operation == "responses":
        body, model = context.body, context.deployment.model
        rng = rng_for(context)
        messages = responses.prompt_messages(body, context.history)
        cached = _prompt_cache(context, messages, responses.chat_tools(body) or None)
        answer = responses.generate(
            body,
            model,
            context.prompt_tokens,
            context.history,
            rng,
            _settings(context.config),
            cached,
            context.answer_filter,
        )
        return responses_answer(context, answer, rng)
    return _stored_response(context, context.params["response_id"])


def responses_answer(
    context: RequestContext, answer: responses.ResponseAnswer, rng: random.Random | None = None
) -> http.Response | StreamPlan:
    """The response for a Responses answer: stored (unless `store` is false), then JSON or a
    stream of events, timed like chat."""
    body = context.body
    context.completion_tokens = answer.completion_tokens
    context.filtered += [("completion", c) for c in answer.filtered]
    if body.get("store", True):
        items = responses.input_items(body, rng or rng_for(context))
        finished = answer.body()
        context.config.stored_responses.put(
            StoredResponse(
                finished,
                items,
                responses.conversation(context.history, items, finished),
                stored_size(context, answer.completion_tokens, items),
            )
        )
    if body.get("stream"):
        return _stream(context, answer.stream_timeline(), event_frame, answer.reasoning_tokens, done=False)
    _hold(context, answer.steps, answer.reasoning_tokens)
    return wire.json_response(200, answer.body(), context.request, context.config.region)


# What a stored response holds beyond its request's body and its answer's text, and what a
# token of that text takes in it (about 4 characters of text, more for tool arguments in JSON).
STORED_OVERHEAD_BYTES = 1024
STORED_BYTES_PER_TOKEN = 6
# What each input item and content part takes as Python objects beyond its text: ~320 bytes
# measured (its dictionaries, id and list). 20,000 one-word messages, 0.7 MB of JSON, held
# 12 MB: counted by the body alone, a store of 64 MiB could have held a gigabyte of them.
STORED_BYTES_PER_ITEM = 400


def stored_size(context: RequestContext, completion_tokens: int, items: Sequence[dict] = ()) -> int:
    """The bytes a stored response holds, measured without serializing anything: the request's
    body (its input items, and the settings the response echoes) and the objects its `items`
    became, the answer's text (by its tokens), and the earlier turns it carries on (the size of
    the response it continues)."""
    request = context.request
    encoded = "content-encoding" in request.headers  # the decoded body is what is kept
    size = len((request.content if encoded else request.raw_content) or b"")
    size += STORED_OVERHEAD_BYTES + completion_tokens * STORED_BYTES_PER_TOKEN
    parts = sum(len(item["content"]) for item in items if isinstance(item.get("content"), list))
    size += (len(items) + parts) * STORED_BYTES_PER_ITEM
    history = context.history
    if history:
        previous = context.config.stored_responses.get(context.body.get("previous_response_id") or "")
        if previous is not None and len(previous.conversation) == len(history):
            size += previous.size  # all of the conversation it continues
        else:
            # Only the newest turns (truncation "auto"), or the response has gone since the
            # request was checked: measured.
            size += len(wire.dumps(history)) + len(history) * STORED_BYTES_PER_ITEM
    return size


def _stored_response(context: RequestContext, response_id: str) -> http.Response | Awaitable[http.Response]:
    """GET or DELETE /responses/{id}, or GET its input_items; Azure's 404 for an unknown id."""
    request, region, store = context.request, context.config.region, context.config.stored_responses
    stored = store.get(response_id)
    if stored is None and context.config.peers and not peers.from_peer(request.headers, context.config.peer_secret):
        return _stored_at_a_peer(context, response_id)  # with workers, another may hold it
    if stored is None:
        return wire.openai_error(404, f"Response with id '{response_id}' not found.", request=request)
    operation = context.route.operation
    if operation == "responses_delete":
        store.delete(response_id)
        return wire.json_response(
            200, {"id": response_id, "object": "response.deleted", "deleted": True}, request, region
        )
    if operation == "responses_retrieve":
        return wire.json_response(200, stored.body, request, region)
    query = request.query
    try:
        page = responses.item_page(
            stored.input_items,
            query.get("order") or "desc",
            query.get("limit"),
            query.get("after"),
            query.get("before"),
        )
    except validation.Invalid as e:
        return wire.openai_error(400, e.message, param=e.param, code=e.code, request=request)
    return wire.json_response(200, page, request, region)


async def _stored_at_a_peer(context: RequestContext, response_id: str) -> http.Response:
    request = context.request
    found = await peers.relay(context.config, request.method, request.path)
    if found is None:
        return wire.openai_error(404, f"Response with id '{response_id}' not found.", request=request)
    return wire.plain_response(
        found.status_code, found.content, wire.azure_headers(request, context.config.region, "application/json")
    )


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
        context.latency_s = latency.profile(deployment, context.route, config).request_ms.draw() / 1000
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


def response_with_text(context: RequestContext, content: str) -> http.Response | StreamPlan:
    """A Responses answer with the given text, stored, streamed and timed like a generated one."""
    answer = responses.fixed(
        content, context.body, context.deployment.model, context.prompt_tokens, rng_for(context), context.answer_filter
    )
    return responses_answer(context, answer)


def _work_seconds(context: RequestContext) -> float:
    """How long an audio or image answer takes (0 with latency off)."""
    if not context.config.latency_enabled:
        return 0.0
    return latency.media_seconds(
        context.deployment, context.route, context.config, getattr(context.checked, "duration", 0.0)
    )


def _text_response(context: RequestContext, content: str, content_type: str) -> http.Response:
    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return wire.plain_response(200, content.encode(), headers)


# Audio longer than this has its transcript made in a worker thread (about 4 ms per 10 minutes
# of audio; the longest upload, 3 hours, takes a tenth of a second).
TRANSCRIPT_ON_LOOP_SECONDS = 600.0


def openai_transcriptions(context: RequestContext) -> http.Response | StreamPlan | Awaitable | None:
    """Transcriptions and translations: text as long as the audio, timed over it."""
    if context.route is None or context.route.operation not in ("transcriptions", "translations"):
        return None
    if context.checked.duration > TRANSCRIPT_ON_LOOP_SECONDS:
        return asyncio.to_thread(_transcription, context)
    return _transcription(context)


def _transcription(context: RequestContext) -> http.Response | StreamPlan:
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
        return StreamPlan(
            stream_headers(context),
            frames,
            token_frames=[carries_tokens(e) for e in events],
            labels=stream_labels(context),
        )
    context.latency_s = seconds
    body, content_type = audio.render(request, script, model)
    if isinstance(body, dict):
        return wire.json_response(200, body, context.request, context.config.region)
    return _text_response(context, body, content_type)


# Speech longer than this is encoded in a worker thread (up to 3 ms per second of audio; the
# longest, 55 minutes, takes seconds).
SPEECH_ON_LOOP_SECONDS = 2.0
# wav and pcm answers longer than this (3 MB) are sent a second at a time as they are due,
# never held whole: the longest, 55 minutes, is 150 MB.
SPEECH_STREAMED_SECONDS = 60.0


def openai_speech(context: RequestContext) -> http.Response | StreamPlan | Awaitable[http.Response] | None:
    """Speech: audio of the format asked, as long as the text takes to say."""
    if context.route is None or context.route.operation != "speech":
        return None
    request: audio.SpeechRequest = context.checked
    if request.response_format in audio.UNCOMPRESSED and request.duration > SPEECH_STREAMED_SECONDS:
        return _speech_stream(context, request)
    if request.duration > SPEECH_ON_LOOP_SECONDS:
        return asyncio.to_thread(_speech, context, request)
    return _speech(context, request)


def _speech_stream(context: RequestContext, request: audio.SpeechRequest) -> StreamPlan:
    """A long wav or pcm answer as a chunked body (as Azure sends speech), a second of audio a
    chunk, spread over the work's time like a streamed transcription's words."""
    pieces, content_type = audio.uncompressed(request)
    seconds = _work_seconds(context)
    first = seconds * 0.3
    step = (seconds - first) / max(1, len(pieces))
    flow = context.flow

    async def chunks():
        for index, piece in enumerate(pieces):
            wait = first + index * step - latency.since_arrival(flow)
            if wait > 0:
                await asyncio.sleep(wait)
            yield piece

    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return StreamPlan(headers, [], source=chunks(), keep_body=False, labels=stream_labels(context))


def _speech(context: RequestContext, request: audio.SpeechRequest) -> http.Response:
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
    scored = context.prompt_filter[0] if context.prompt_filter else None
    body = images.answer(request, pictures, urls, int(time.time()), context.prompt_tokens, scored)
    context.latency_s = _work_seconds(context)
    return wire.json_response(200, body, context.request, context.config.region)


def chat_response(context: RequestContext, content: str) -> http.Response | StreamPlan:
    """A chat answer with the given text, shaped, counted, streamed and timed like a generated
    one: for generators in extensions that choose their own words."""
    answer = chat.fixed(content, context.body, context.deployment.model, context.prompt_tokens, rng_for(context))
    return _answer(context, answer)


BUILT_IN = [
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
    openai_transcriptions,
    openai_speech,
    openai_images,
    openai_models,
    docintel.document_intelligence,
]


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


# The operations whose latency the LATENCY_OPENAI_* settings set, and what their figures are per.
LATENCY_OPERATIONS = {
    "CHAT_COMPLETIONS": "per completion token",
    "COMPLETIONS": "per completion token",
    "EMBEDDINGS": "per request",
}


def _milliseconds(env: str) -> Callable[[str], str | None]:
    """A latency mean's text, checked (a number, not below 0); empty: not set."""

    def parse(text: str) -> str | None:
        text = text.strip()
        if text:
            value = text_number(env, text)
            if value < 0:
                raise ConfigError(f"{env}: must not be below 0, got {text}")
        return text or None

    return parse


def _latency_options(op: str, per: str) -> tuple[Option, Option]:
    what = op.lower().replace("_", " ")
    mean = f"LATENCY_OPENAI_{op}_MEAN"
    return (
        Option(
            mean,
            str | None,
            None,
            f"Mean of the simulated latency of {what}, milliseconds {per}; unset: each model's own.",
            parse=_milliseconds(mean),
            check=lambda text: _milliseconds(mean)(text or ""),
        ),
        Option(
            f"LATENCY_OPENAI_{op}_STD_DEV",
            float,
            0.0,
            f"Standard deviation of the simulated latency of {what}, milliseconds {per} (with its mean).",
            low=0,
        ),
    )


OPTIONS = (
    Option("SIMULATOR_LATENCY", bool, True, "Simulate latency; off answers as fast as possible."),
    Option(
        "SIMULATOR_COMPLETION_TOKENS_MEAN",
        float,
        150.0,
        "Mean length in tokens of an answer whose request sets no limit.",
        low=0,
    ),
    Option("SIMULATOR_COMPLETION_TOKENS_STD_DEV", float, 50.0, "Standard deviation of that length.", low=0),
    Option(
        "SIMULATOR_TOOL_CALL_SHARE",
        float,
        1.0,
        "Share (0 to 1) of tool_choice=auto requests that get a tool call instead of text.",
        low=0,
        high=1,
    ),
    *(option for op, per in LATENCY_OPERATIONS.items() for option in _latency_options(op, per)),
    Option(
        "RESPONSES_STORED",
        int,
        1000,
        "Responses API: how many stored responses are kept (the newest) for retrieve and previous_response_id.",
        low=0,
        high=MAX_WHOLE,
    ),
    Option(
        "PROMPT_CACHE_IDLE_SECONDS",
        float,
        300.0,
        "Seconds after which an unused prompt prefix leaves the prompt cache (cached_tokens).",
        low=0,
    ),
)
NAMES = names(OPTIONS)


def apply(options: Any, config: SimulatorConfig, updated: set[str]) -> None:
    """Check the settings of made-up answers and copy them into `config`; raises ConfigError."""
    check(options, OPTIONS, updated)
    defaults = {}
    for op in LATENCY_OPERATIONS:
        mean = getattr(options, f"latency_openai_{op.lower()}_mean")
        if mean:
            defaults[op.lower()] = Normal(float(mean), float(getattr(options, f"latency_openai_{op.lower()}_std_dev")))
    config.latency_enabled = options.simulator_latency
    config.latency_defaults = defaults
    config.completion_tokens = Normal(
        float(options.simulator_completion_tokens_mean), float(options.simulator_completion_tokens_std_dev)
    )
    config.tool_call_share = float(options.simulator_tool_call_share)
    config.stored_responses.capacity = options.responses_stored
    config.prompt_cache.idle_s = float(options.prompt_cache_idle_seconds)


class Generate:
    def __init__(
        self, config: SimulatorConfig, streams: StreamServer, gates: latency.Gates, startup: Startup | None = None
    ):
        self.config = config
        self.startup = startup or Startup()
        self.env_error: str | None = None
        self.streams = streams
        self.gates = gates
        config.generators.extend(BUILT_IN)
        self._built_in = frozenset(BUILT_IN)

    def load(self, loader: Any) -> None:
        self.env_error = declare(loader, OPTIONS)

    def settle(self) -> None:
        """Copy these settings into the config now (for extensions, configured before this stage)."""
        apply(ctx.options, self.config, set(NAMES))

    def configure(self, updated: set[str]) -> None:
        if updated & NAMES:
            self.startup.applying(lambda: apply(ctx.options, self.config, updated), self.env_error)
        # The stores the built-in generators fill, bounded as the settings say.
        media.images.max_bytes = self.config.bounds.images_stored_bytes
        docintel.SERVICE.store.max_bytes = self.config.bounds.doc_intelligence_results_bytes

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
        if (
            answer_tokens(context) > HEAVY_TOKENS
            or context.prompt_tokens > HEAVY_PROMPT_TOKENS
            or offload.heavy(flow.request)
        ):
            return self._walk_in_thread(context, generators)
        index, answer = self._walk(context, generators)
        if inspect.isawaitable(answer):
            return self._finish(context, generators[index], answer, generators[index + 1 :])
        if answer is not None:
            return self._deliver(context, answer)
        return None

    def _walk(self, context: RequestContext, generators: list) -> tuple[int, Any]:
        """The first generator's answer (or what it returned to await) and its place; (-1, None)."""
        for index, generator in enumerate(generators):
            answer = self._call(generator, context)
            if answer is not None:
                return index, answer
        return -1, None

    async def _walk_in_thread(self, context: RequestContext, generators: list) -> None:
        """A long answer (n=128 of hundreds of tokens takes half a second to make) is made in a
        worker thread, so the event loop keeps answering everyone else meanwhile."""
        index, answer = await asyncio.to_thread(self._walk, context, generators)
        if inspect.isawaitable(answer):
            await self._finish(context, generators[index], answer, generators[index + 1 :])
        elif answer is not None:
            waiting = self._deliver(context, answer)
            if waiting is not None:
                await waiting

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
        logger.warning(
            "generator %s failed on %s %.200s", where, flow.request.method, flow.request.path, exc_info=error
        )
        return wire.azure_error(
            500, "InternalServerError", f"The generator {where} failed: {type(error).__name__}: {error}", flow.request
        )

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
