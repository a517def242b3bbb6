"""Audio: transcriptions and translations (text as long as the audio), and speech."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from mitmproxy import http

from .. import wire
from ..openai import audio
from ..runtime import latency
from ..runtime.state import RequestContext
from ..runtime.streams import StreamPlan, carries_tokens
from .common import rng_for, stream_headers, stream_labels, text_response, work_seconds

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
    seconds = work_seconds(context)
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
    return text_response(context, body, content_type)


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
    seconds = work_seconds(context)
    first = seconds * 0.3
    step = (seconds - first) / max(1, len(pieces))

    async def chunks():
        for index, piece in enumerate(pieces):
            wait = first + index * step - latency.since_arrival(context)
            if wait > 0:
                await asyncio.sleep(wait)
            yield piece

    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return StreamPlan(headers, [], source=chunks(), keep_body=False, labels=stream_labels(context))


def _speech(context: RequestContext, request: audio.SpeechRequest) -> http.Response:
    data, content_type = audio.synthesize(request)
    context.latency_s = work_seconds(context)
    headers = wire.azure_headers(context.request, context.config.region, content_type)
    return wire.plain_response(200, data, headers)
