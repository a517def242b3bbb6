"""Background responses (`background: true`): answered at once as `queued`, then retrieved,
cancelled, or their stream read again from any event, as the run's clock says (runtime/background.py)."""

from __future__ import annotations

from dataclasses import replace

from mitmproxy import http

from .. import wire
from ..openai import responses
from ..runtime import background, latency, tasks
from ..runtime.state import RequestContext
from ..runtime.stored import StoredResponse
from ..runtime.streams import StreamPlan, carries_tokens, event_frame
from .common import services_of, stream_headers, stream_labels

NOT_BACKGROUND = "Cannot cancel a synchronous response."


def start(
    context: RequestContext, answer: responses.ResponseAnswer, stored: StoredResponse
) -> http.Response | StreamPlan:
    """Store `answer` as a background run and answer at once: the `queued` response object,
    or (with `stream: true`) its events as they fall due."""
    config = context.config
    steps = answer.steps
    offsets: list[float] = []
    if config.latency_enabled:
        timing = latency.profile(context.deployment, context.operation, config)
        offsets = latency.token_offsets(timing, steps, services_of(context).rng, answer.reasoning_tokens)
    streamed = bool(context.body.get("stream"))
    run = background.build_run(answer.body(), answer.stream_timeline(), offsets, streamed, background.clock())
    services_of(context).responses.put(replace(stored, body=run.final, run=run))
    if streamed:
        return _events(context, run, -1)
    return wire.json_response(200, run.created(), context.request, config.region)


def stored_run(context: RequestContext, stored: StoredResponse) -> http.Response | StreamPlan | None:
    """Retrieve (or read the stream of) and cancel, for stored responses; None: not this module's
    (a retrieve of a response that ran in the foreground)."""
    request, region = context.request, context.config.region
    operation = context.route.operation
    run = stored.run
    now = background.clock()
    if operation == "responses_cancel":
        if run is None:
            return wire.openai_error(400, NOT_BACKGROUND, request=request)
        run.cancel(now)  # a finished run stays as it is: a repeated cancel answers the same object
        return wire.json_response(200, run.body(now), request, region)
    if operation != "responses_retrieve" or run is None:
        return None
    if request.query.get("stream", "").lower() == "true":
        try:
            after = int(request.query.get("starting_after") or -1)
        except ValueError:
            return wire.openai_error(
                400, "Invalid 'starting_after': expected an integer.", param="starting_after", request=request
            )
        return _events(context, run, after)
    return wire.json_response(200, run.body(now), request, region)


def _events(context: RequestContext, run: background.BackgroundRun, after: int) -> http.Response | StreamPlan:
    """The run's events numbered above `after`: those already due at once, the rest when due."""
    events = run.events_after(after, background.clock())
    if not context.config.latency_enabled or all(due == 0 for due, _ in events):
        return http.Response.make(200, b"".join(event_frame(e) for _, e in events), stream_headers(context))
    frames = [(due, event_frame(event)) for due, event in events]
    return StreamPlan(
        stream_headers(context),
        frames,
        token_frames=[carries_tokens(event) for _, event in events],
        labels=stream_labels(context) if context.deployment is not None else {},
    )


def mark_cut(context: RequestContext, response_id: str) -> None:
    """A fault broke this response's stream: what is stored of it failed, as it would have."""
    store = services_of(context).responses
    stored = store.get(response_id)
    if stored is not None and stored.run is None:
        failed = replace(stored, body=background.stream_cut_body(stored.body))
        store.put(failed)
        if store.shared:  # the stream is already under way: the shared copy follows as it can
            tasks.background(store.share(failed))
