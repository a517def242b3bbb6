"""The Responses API: create (stored unless `store` is false), retrieve, delete and list the
input of a stored response; with replicas sharing a Redis, the shared copy is read first and
written before the answer leaves, so the next request may reach any replica."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Sequence
from functools import partial

from mitmproxy import http

from .. import wire
from ..openai import responses
from ..runtime.state import RequestContext
from ..runtime.stored import StoredResponse
from ..runtime.streams import StreamPlan, event_frame
from . import background
from .common import chat_settings, hold_answer, paced_stream, rng_for, services_of, with_prompt_cache


def openai_responses(
    context: RequestContext,
) -> http.Response | StreamPlan | Awaitable[http.Response | StreamPlan] | None:
    """The Responses API: create, and retrieve, delete and list the input of a stored response."""
    route = context.route
    if route is None or not route.operation.startswith("responses"):
        return None
    if route.operation == "responses":
        body, model = context.body, context.deployment.model
        rng = rng_for(context)
        messages = responses.prompt_messages(body, context.history)

        def answered(cached: int) -> http.Response | StreamPlan | Awaitable[http.Response | StreamPlan]:
            answer = responses.generate(
                body,
                model,
                context.prompt_tokens,
                context.history,
                rng,
                chat_settings(context.config, context.deployment.max_parallel_tool_calls),
                cached,
                context.answer_filter,
            )
            return responses_answer(context, answer, rng)

        return with_prompt_cache(context, messages, responses.chat_tools(body) or None, answered)
    return _stored_response(context, context.params["response_id"])


def responses_answer(
    context: RequestContext, answer: responses.ResponseAnswer, rng: random.Random | None = None
) -> http.Response | StreamPlan | Awaitable[http.Response | StreamPlan]:
    """The response for a Responses answer: stored (unless `store` is false), then JSON or a
    stream of events, timed like chat. With a shared store, the answer waits for the shared
    copy to be written."""
    store = services_of(context).responses
    if not store.shared or not context.body.get("store", True):
        return _answer(context, answer, rng)
    made = _answer(context, answer, rng)  # stores it here first
    stored = store.get(answer.id)
    return made if stored is None else after(store.share(stored), made)


async def after[Answer](writing: Awaitable[None], answer: Answer) -> Answer:
    """`answer`, once `writing` is done."""
    await writing
    return answer


def _answer(
    context: RequestContext, answer: responses.ResponseAnswer, rng: random.Random | None = None
) -> http.Response | StreamPlan:
    body = context.body
    context.completion_tokens = answer.completion_tokens
    context.filtered += [("completion", c) for c in answer.filtered]
    if body.get("store", True):
        items = responses.input_items(body, rng or rng_for(context))
        finished = answer.body()
        stored = StoredResponse(
            finished,
            items,
            responses.conversation(context.history, items, finished),
            stored_size(context, answer.completion_tokens, items),
        )
        if body.get("background"):
            return background.start(context, answer, stored)
        services_of(context).responses.put(stored)
    if body.get("stream"):
        plan = paced_stream(context, answer.stream_timeline(), event_frame, answer.reasoning_tokens, done=False)
        if body.get("store", True) and isinstance(plan, StreamPlan):
            plan.on_cut = partial(background.mark_cut, context, answer.id)
            if plan.cut:
                plan.on_cut()
        return plan
    hold_answer(context, answer.steps, answer.reasoning_tokens)
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
        previous = services_of(context).responses.get(context.body.get("previous_response_id") or "")
        if previous is not None and len(previous.conversation) == len(history):
            size += previous.size  # all of the conversation it continues
        else:
            # Only the newest turns (truncation "auto"), or the response has gone since the
            # request was checked: measured.
            size += len(wire.dumps(history)) + len(history) * STORED_BYTES_PER_ITEM
    return size


def _stored_response(
    context: RequestContext, response_id: str
) -> http.Response | StreamPlan | Awaitable[http.Response | StreamPlan]:
    """GET or DELETE /responses/{id}, GET its input_items, or cancel it; Azure's 404 for an unknown id."""
    store = services_of(context).responses
    if store.shared:
        return _shared_response(context, response_id)
    return _stored_answer(context, response_id, store.get(response_id))


async def _shared_response(context: RequestContext, response_id: str) -> http.Response | StreamPlan:
    """The same, read from the shared store; a delete or a cancel is written back to it."""
    store = services_of(context).responses
    stored = await store.fetch(response_id)
    answer = _stored_answer(context, response_id, stored)
    status = answer.status if isinstance(answer, StreamPlan) else answer.status_code
    if stored is not None and status == 200:
        operation = context.route.operation
        if operation == "responses_delete":
            await store.remove(response_id)
        elif operation == "responses_cancel":
            await store.share(stored)  # its run now says cancelled
    return answer


def _stored_answer(
    context: RequestContext, response_id: str, stored: StoredResponse | None
) -> http.Response | StreamPlan:
    request, region, store = context.request, context.config.region, services_of(context).responses
    if stored is None:
        return wire.openai_error(404, f"Response with id '{response_id}' not found.", request=request)
    ran = background.stored_run(context, stored)
    if ran is not None:
        return ran
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
    except responses.Invalid as e:
        return wire.openai_error(400, e.message, param=e.param, code=e.code, request=request)
    return wire.json_response(200, page, request, region)


def response_with_text(
    context: RequestContext, content: str
) -> http.Response | StreamPlan | Awaitable[http.Response | StreamPlan]:
    """A Responses answer with the given text, stored, streamed and timed like a generated one."""
    answer = responses.fixed(
        content, context.body, context.deployment.model, context.prompt_tokens, rng_for(context), context.answer_filter
    )
    return responses_answer(context, answer)
