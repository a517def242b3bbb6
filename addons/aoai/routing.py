"""Routing: which operation and deployment a request is for, and whether Azure would accept it.

Every OpenAI request leaves this stage either answered with Azure's error for what is wrong
with it, or carrying a `RequestContext` (operation, deployment, parsed body, prompt tokens)
that the later stages read. Paths it does not know pass on untouched: an extension may serve
them, and the last stage answers 404 if nobody does.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

import orjson
from mitmproxy import http

from . import catalogue, completions, embeddings, tokens, validation, wire
from .config import CHAT_COMPLETIONS, COMPLETIONS, EMBEDDINGS, Operation, RequestContext, SimulatorConfig

logger = logging.getLogger(__name__)

OPERATIONS = {"chat/completions": CHAT_COMPLETIONS, "completions": COMPLETIONS, "embeddings": EMBEDDINGS}
_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)/?$")
_V1_PATH = re.compile(r"^/openai/v1/(chat/completions|completions|embeddings)/?$")
_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(-preview)?$")
_V1_VERSIONS = {"v1", "preview", "latest"}
_FIRST_VERSION = datetime.date(2022, 12, 1)

_CHECKS = {"chat": validation.check_chat, "completions": validation.check_completions,
           "embeddings": validation.check_embeddings}


@dataclass
class Route:
    operation: Operation
    deployment: str | None  # None on v1 paths: the body's "model" names it
    v1: bool


def match(path: str) -> Route | None:
    """The OpenAI operation a path (without query) names, if any."""
    m = _DEPLOYMENT_PATH.match(path)
    if m:
        return Route(OPERATIONS[m.group(2)], unquote(m.group(1)), False)
    m = _V1_PATH.match(path)
    if m:
        return Route(OPERATIONS[m.group(1)], None, True)
    return None


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


@functools.lru_cache(maxsize=256)
def _version_day(version: str) -> datetime.date | None:
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


def prompt_tokens(operation: Operation, body: dict, enc) -> int:
    if operation is CHAT_COMPLETIONS:
        return tokens.count_chat_prompt(body["messages"], enc, body.get("tools"))
    if operation is COMPLETIONS:
        return sum(tokens.count(p, enc) if isinstance(p, str) else len(p) for p in completions.prompts_of(body))
    return tokens.count_embedding_input(body["input"], enc)


def route(flow: http.HTTPFlow, config: SimulatorConfig) -> http.Response | None:
    """Fill the flow's context for an OpenAI request; return an error response if Azure would."""
    request = flow.request
    path = request.path.partition("?")[0]
    found = match(path)
    if found is None:
        return None
    if request.method != "POST":
        return wire.azure_error(405, "405", f"Method {request.method} is not allowed on {path}; use POST.", request,
                                headers={"allow": "POST"})
    version = query_value(request.path, "api-version")
    if version is None and not found.v1:
        return wire.not_found(request)
    if version is not None and not version_supported(version, found.v1):
        return wire.azure_error(400, "BadRequest", "API version not supported", request)
    if len(request.raw_content or b"") > config.max_body_bytes:
        return wire.azure_error(413, "RequestEntityTooLarge",
                                f"The request body is larger than the {config.max_body_bytes} bytes allowed.", request)
    try:
        body = orjson.loads(request.content or b"")
    except (orjson.JSONDecodeError, ValueError) as e:
        return wire.bad_json(request, str(e) if request.content else "The body was empty.")
    if not isinstance(body, dict):
        return wire.openai_error(400, "Invalid type for body: expected a JSON object, but got "
                                      f"{validation._type_name(body)} instead.", request=request)
    operation = found.operation
    name = found.deployment
    if name is None:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return wire.openai_error(400, "Missing required parameter: 'model'.", param="model",
                                     code="missing_required_parameter", request=request)
    deployment = config.deployment(name, operation.kind)
    if deployment is None:
        return wire.azure_error(404, "DeploymentNotFound",
                                "The API deployment for this resource does not exist. If you created the deployment "
                                "within the last 5 minutes, please wait a moment and try again.", request)
    model = deployment.model
    if model.kind != operation.kind:
        return wire.azure_error(
            400, "OperationNotSupported",
            f"The {operation.verb} operation does not work with the specified model, {model.name}. Please choose "
            "different model and try again. You can learn more about which models can be used with each operation "
            "here: https://go.microsoft.com/fwlink/?linkid=2197993.", request)
    try:
        _CHECKS[operation.name](body, model)
    except validation.Invalid as e:
        return wire.openai_error(e.status, e.message, param=e.param, code=e.code, request=request)
    context = RequestContext(flow, config, operation, deployment, version, body)
    context.values["deployment"] = deployment.name
    context.values["model"] = model.name
    used = context.values["prompt_tokens"] = prompt_tokens(operation, body, tokens.encoding(model.encoding))
    flow.metadata["aoai"] = context
    return _context_length_error(operation, body, model, used, request)


def _context_length_error(operation: Operation, body: dict, model: catalogue.Model, used: int,
                          request: http.Request) -> http.Response | None:
    if operation is EMBEDDINGS:
        if used <= model.context_window:
            return None
        # The window limits each input, not their sum: one input too long fails the request.
        enc = tokens.encoding(model.encoding)
        longest = max(tokens.count_embedding_input([item], enc) for item in embeddings.items_of(body["input"]))
        if longest > model.context_window:
            return wire.openai_error(400, f"This model's maximum context length is {model.context_window} tokens, "
                                          f"however you requested {longest} tokens. Please reduce your prompt.",
                                     param="input", code="context_length_exceeded", request=request)
        return None
    limit = body.get("max_completion_tokens", body.get("max_tokens")) or 0
    wanted = used + limit * (body.get("n") or 1)
    if wanted <= model.context_window:
        return None
    return wire.openai_error(
        400, f"This model's maximum context length is {model.context_window} tokens. However, you requested "
             f"{wanted} tokens ({used} in the messages, {wanted - used} in the completion). Please reduce the "
             "length of the messages or completion.",
        param="messages" if operation is CHAT_COMPLETIONS else "prompt", code="context_length_exceeded",
        request=request)


class Routing:
    def __init__(self, config: SimulatorConfig):
        self.config = config

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response:
            return
        error = route(flow, self.config)
        if error is not None:
            logger.debug("%s for %s %s", error.status_code, flow.request.method, flow.request.path)
            flow.response = error
