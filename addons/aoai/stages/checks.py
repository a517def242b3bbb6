"""Checks: what Azure refuses before it runs a model, for the request's route.

A wrong method (405), a missing or unknown api-version, a body too large (413) or not JSON
(or, for uploads, not a multipart form), an unknown deployment (404) or one whose model cannot
do the operation, a body field or file of the wrong type or value, a prompt beyond the context
window (400). A request that passes carries its deployment, parsed body (and form), what the
route's check made of it, and prompt tokens in its context for the stages after this one.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from mitmproxy import http

from .. import wire
from ..openai import catalogue, embeddings, forms, responses, tokens, validation
from ..runtime import offload
from ..runtime.context_window import too_long
from ..runtime.labels import DeploymentLabels
from ..runtime.routes import FORM_BODY, NO_BODY, OPTIONAL, REFUSED, REQUIRED
from ..runtime.state import RequestContext, context_of
from ..runtime.stored import ResponseStore

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(-preview)?$")
_V1_VERSIONS = {"v1", "preview", "latest"}
_FIRST_VERSION = datetime.date(2022, 12, 1)
_WINDOWED = frozenset({"chat", "completions", "embeddings", "responses"})  # operations a context window limits


# The GA realtime path takes no api-version; Azure answers one with 401 (its text is not
# documented: this one says what to change).
VERSION_REFUSED = (
    "Access denied: /openai/v1/realtime takes no api-version query parameter. Remove it, or use "
    "/openai/realtime?api-version=...&deployment=... for the preview API."
)
NOT_A_WEBSOCKET = (
    "The Realtime API is reached over a WebSocket: send this request as a WebSocket handshake "
    "(Connection: Upgrade, Upgrade: websocket)."
)


def is_websocket_upgrade(request: http.Request) -> bool:
    """Whether the request asks to become a WebSocket (HTTP/1.1 Upgrade)."""
    upgrade = request.headers.get("upgrade", "").lower()
    connection = request.headers.get("connection", "").lower()
    return upgrade == "websocket" and "upgrade" in connection


def query_value(path: str, name: str) -> str | None:
    """The first value of a query parameter, as `request.query.get(name)` gives it, without
    building the full URL and mitmproxy's query view for it (every request asks)."""
    query = path.partition("?")[2].partition("#")[0]
    if not query:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape"):
        if key == name:
            return value
    return None


def _version_day(version: str) -> datetime.date | None:
    # Only what can be a date is remembered: a client's endless long versions never are.
    return _day_of(version) if len(version) <= len("2024-10-01-preview") else None


@functools.lru_cache(maxsize=256)
def _day_of(version: str) -> datetime.date | None:
    m = _VERSION.match(version)
    if not m:
        return None
    try:
        return datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def version_supported(version: str, v1: bool) -> bool:
    if v1 and version in _V1_VERSIONS:
        return True
    day = _version_day(version)
    return day is not None and _FIRST_VERSION <= day <= _latest_version_day()


@functools.lru_cache(maxsize=1)
def _latest_day_for(epoch_day: int) -> datetime.date:
    return datetime.date(1970, 1, 1) + datetime.timedelta(days=epoch_day + 31)


def _latest_version_day() -> datetime.date:
    """The newest api-version date accepted: a month ahead of today (previews come early).
    Worked out once a day: every request asks."""
    return _latest_day_for(int(time.time() // 86400))


def check(
    context: RequestContext, labels: DeploymentLabels | None = None, stored_responses: ResponseStore | None = None
) -> http.Response | None:
    """Azure's error for what is wrong with the request, or None; fills the context. An
    undefined deployment is counted under the label `labels` gives it; a Responses follow-up's
    earlier turns are read from `stored_responses`."""
    request = context.request
    if context.route is None:
        if context.allowed_methods:
            path = request.path.partition("?")[0]
            return wire.azure_error(
                405,
                "405",
                f"Method {request.method} is not allowed on {path}; use {' or '.join(context.allowed_methods)}.",
                request,
                headers={"allow": ", ".join(context.allowed_methods)},
            )
        return None
    route, config = context.route, context.config
    if route.api_version not in (OPTIONAL, REQUIRED, REFUSED):
        return None
    version = query_value(request.path, "api-version")
    if version is not None and route.api_version == REFUSED:
        return wire.azure_error(401, "401", VERSION_REFUSED, request)
    if version is None and route.api_version == REQUIRED:
        return wire.not_found(request)
    if version is not None and (
        not version_supported(version, route.api_version == OPTIONAL)
        or not _since(version, route.since)
        or (route.previews_only and not version.endswith("-preview"))
    ):
        return wire.azure_error(400, "BadRequest", "API version not supported", request)
    context.api_version = version
    if route.websocket and not is_websocket_upgrade(request):
        return wire.azure_error(400, "BadRequest", NOT_A_WEBSOCKET, request)
    if not route.needs_deployment:
        return None
    if route.body == NO_BODY:
        body: dict | http.Response = {}
    elif route.body == FORM_BODY:
        body = _read_form(context)
    else:
        body = _read_json(context)
    if isinstance(body, http.Response):
        return body
    name = context.params.get("deployment")
    if route.deployment_query:
        name = query_value(request.path, route.deployment_query)
        if not name:
            return wire.openai_error(
                400,
                f"Missing required parameter: '{route.deployment_query}'.",
                param=route.deployment_query,
                code="missing_required_parameter",
                request=request,
            )
    if name is None:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return wire.openai_error(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
                request=request,
            )
    deployment = config.deployment(name, route.model_kind, labels)
    if deployment is None:
        return wire.azure_error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again.",
            request,
        )
    model = deployment.model
    if model.kind != route.model_kind:
        return wire.azure_error(
            400,
            "OperationNotSupported",
            f"The {route.verb} operation does not work with the specified model, {model.name}. Please choose "
            "different model and try again. You can learn more about which models can be used with each operation "
            "here: https://go.microsoft.com/fwlink/?linkid=2197993.",
            request,
        )
    try:
        if route.body == FORM_BODY:  # uploads: their media are judged by the bounds too
            context.checked = route.check(context.form, model, config.bounds)
        else:
            context.checked = route.check(body, model)
    except validation.Invalid as e:
        return wire.openai_error(e.status, e.message, param=e.param, code=e.code, request=request)
    context.deployment, context.body = deployment, body
    enc = tokens.encoding(model.encoding)
    used = route.prompt_tokens(body, enc)
    previous = body.get("previous_response_id") if route.operation == "responses" else None
    # Generated responses are stored here; recorded ones live at Azure, which answers for them.
    if previous is not None and config.mode == "generate":
        stored = stored_responses.get(previous) if stored_responses is not None else None
        if stored is None:
            return wire.openai_error(
                400,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
                request=request,
            )
        # The earlier turns are read again: they are input tokens of this one, as on Azure.
        context.history = _fitted(stored.conversation, body, model, used, enc)
        used += responses.count_history(context.history, enc)
    if route.operation == "responses" and config.mode == "generate" and stored_responses is not None:
        unknown = _unknown_reasoning_item(body, stored_responses)
        if unknown is not None:
            return wire.openai_error(404, f"Item with id '{unknown}' not found.", param="input", request=request)
    context.prompt_tokens = used
    if route.operation not in _WINDOWED:
        return None
    too_long = _context_length_error(context, model, used)
    if too_long is not None or route.operation not in ("chat", "completions"):
        return too_long
    try:
        validation.check_output_ceiling(body, model, route.operation)
    except validation.Invalid as e:
        return wire.openai_error(e.status, e.message, param=e.param, code=e.code, request=request)
    return None


def _too_large(request: http.Request, limit: int) -> http.Response | None:
    if len(request.raw_content or b"") <= limit:
        return None
    return wire.azure_error(
        413, "RequestEntityTooLarge", f"The request body is larger than the {limit} bytes allowed.", request
    )


def _read_json(context: RequestContext) -> dict | http.Response:
    """The JSON object in the body, or Azure's answer for a body that is not one."""
    request = context.request
    error = _too_large(request, context.config.max_body_bytes)
    if error is not None:
        return error
    try:
        body = orjson.loads(request.content or b"")
    except (orjson.JSONDecodeError, ValueError) as e:
        return wire.bad_json(request, str(e) if request.content else "The body was empty.")
    if not isinstance(body, dict):
        return wire.openai_error(
            400,
            f"Invalid type for body: expected a JSON object, but got {validation.type_name(body)} instead.",
            request=request,
        )
    if validation.nested_too_deep(request.content or b"", body):
        return wire.openai_error(
            400,
            f"Invalid body: arrays and objects are nested more than {validation.MAX_NESTING} levels deep.",
            request=request,
        )
    return body


def _read_form(context: RequestContext) -> dict | http.Response:
    """A multipart/form-data body, parsed once into `context.form`; its text fields."""
    request, limit = context.request, context.route.max_body
    size = len(request.raw_content or b"")
    if size > limit:  # Azure counts the whole body, and refuses it before reading the form
        return wire.openai_error(
            413,
            f"Maximum content size limit ({limit}) exceeded ({size} bytes read)",
            type="server_error",
            request=request,
        )
    content_type = request.headers.get("content-type", "")
    try:
        context.form = forms.parse(request.content or b"", content_type)
    except forms.NotAForm as e:
        if forms.boundary_of(content_type) is None:
            return wire.openai_error(
                400,
                f"Invalid Content-Type header ({content_type or 'none'}), expected "
                "multipart/form-data. (HINT: If you're using curl, you can pass -H "
                "'Content-Type: multipart/form-data')",
                request=request,
            )
        return wire.openai_error(400, f"Could not parse multipart form: {e}", request=request)
    return context.form.summary()


def _fitted(history: list[dict], body: dict, model: catalogue.Model, used: int, enc) -> list[dict]:
    """The earlier turns a request reads: all of them, or with `truncation: "auto"` the newest
    that fit the context window with this input and its output limit (Azure drops the oldest)."""
    if body.get("truncation") != "auto":
        return history
    room = model.context_window - used - (body.get("max_output_tokens") or 0)
    costs = [responses.count_history([item], enc) for item in history]  # turns add up one by one
    start, total = 0, sum(costs)
    while start < len(history) and total > room:
        total -= costs[start]
        start += 1
    return history[start:]


def _since(version: str, first: str) -> bool:
    """Whether `version` is `first` or later (v1 spellings are always new enough)."""
    if not first or version in _V1_VERSIONS:
        return True
    day, first_day = _version_day(version), _version_day(first)
    return day is not None and first_day is not None and day >= first_day


def _unknown_reasoning_item(body: dict[str, Any], stored_responses: ResponseStore) -> str | None:
    """The id of a reasoning item given back by id alone (no encrypted_content) that no stored
    response holds; with `store: false` the body checks refuse such items already."""
    items = body.get("input")
    if not isinstance(items, list) or body.get("store") is False:
        return None
    ids = [
        str(item.get("id"))
        for item in items
        if isinstance(item, dict) and item.get("type") == "reasoning" and item.get("encrypted_content") is None
    ]
    if not ids:
        return None
    missing = stored_responses.missing_items(set(ids))
    return next((i for i in ids if i in missing), None)


def _context_length_error(context: RequestContext, model: catalogue.Model, used: int) -> http.Response | None:
    body = context.body
    if context.route.operation == "embeddings":
        if used <= model.context_window:
            return None
        # The window limits each input, not their sum: one input too long fails the request.
        enc = tokens.encoding(model.encoding)
        longest = max(tokens.count_embedding_input([item], enc) for item in embeddings.items_of(body["input"]))
        return too_long(context, model.context_window, longest, longest) if longest > model.context_window else None
    wanted = used + validation.answers_room(context.route.operation, body)
    return too_long(context, model.context_window, used, wanted) if wanted > model.context_window else None


def _may_name_stored(raw: bytes) -> bool:
    return b"previous_response_id" in raw or b"reasoning" in raw


def _names_stored(request: http.Request) -> tuple[str, set[str]]:
    """The previous response and the reasoning items (given back by id alone) a Responses
    request names; nothing when its body cannot be read (the checks then say why)."""
    try:
        body = orjson.loads(request.content or b"")
    except ValueError:
        return "", set()
    if not isinstance(body, dict):
        return "", set()
    previous = body.get("previous_response_id")
    items = body.get("input")
    ids = {
        item["id"]
        for item in (items if isinstance(items, list) else ())
        if isinstance(item, dict)
        and item.get("type") == "reasoning"
        and item.get("encrypted_content") is None
        and isinstance(item.get("id"), str)
    }
    return (previous if isinstance(previous, str) else ""), ids


class Checks:
    def __init__(self, labels: DeploymentLabels | None = None, responses: ResponseStore | None = None):
        self.labels = labels  # undefined deployments' labels
        self.responses = responses  # stored responses a follow-up continues

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        context = context_of(flow)
        if flow.response or context is None:
            return None
        # A large body is parsed, checked and counted in a worker thread (seconds for 10 MiB of
        # prompt), and so is a Responses follow-up, whose earlier turns (any length) are counted
        # again; the usual small request here, with no thread hop.
        route = context.route
        if (
            route is not None
            and route.operation == "responses"
            and self.responses is not None
            and self.responses.shared
            and _may_name_stored(flow.request.raw_content or b"")
        ):
            return self._check_shared(flow, context)
        if (
            route is not None
            and route.needs_deployment
            and (
                offload.heavy(flow.request)
                or (route.operation == "responses" and b"previous_response_id" in (flow.request.raw_content or b""))
            )
        ):
            return self._check_off_loop(flow, context)
        self._answer(flow, check(context, self.labels, self.responses))
        return None

    async def _check_shared(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        """A request that names stored responses or items: what the shared store holds of
        them is brought here first (any replica may have made them), then it is checked."""
        assert self.responses is not None
        request = flow.request
        previous, item_ids = (
            await asyncio.to_thread(_names_stored, request) if offload.heavy(request) else _names_stored(request)
        )
        if previous:
            await self.responses.fetch(previous)
        if item_ids:
            await self.responses.fetch_items(item_ids)
        await self._check_off_loop(flow, context)

    async def _check_off_loop(self, flow: http.HTTPFlow, context: RequestContext) -> None:
        self._answer(flow, await asyncio.to_thread(check, context, self.labels, self.responses))

    @staticmethod
    def _answer(flow: http.HTTPFlow, error: http.Response | None) -> None:
        if error is not None:
            logger.debug("%s for %s %.200s", error.status_code, flow.request.method, flow.request.path)
            flow.response = error
