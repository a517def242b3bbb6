"""Fail closed: a stage or extension hook that raises ends its request with Azure's 500.

mitmproxy logs an exception in an addon's hook and carries on with the flow, which in
reverse mode means forwarding it upstream: a simulator would then answer with mitmproxy's
HTML 502 (generate, replay) or send an unchecked request on to Azure (record). `guard` wraps
an addon's flow hooks so that the exception is logged with its traceback and the request
gets an Azure-shaped JSON 500 naming its request id instead; the proxy keeps serving.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable

from mitmproxy import http

from .. import wire

logger = logging.getLogger(__name__)

FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response")


def describe(function: object) -> str:
    """A function's name, with the extension file it comes from."""
    name = getattr(function, "__qualname__", repr(function))
    module = sys.modules.get(getattr(function, "__module__", ""))
    file = getattr(module, "__file__", None)
    return (
        f"{name} in {file}"
        if file and module and module.__name__.startswith("aoai_ext_")
        else f"{function.__module__}.{name}"
    )


def internal_error(flow: http.HTTPFlow, where: str, error: BaseException) -> http.Response:
    """Azure's 500 for a request the simulator failed on; the traceback goes to the log."""
    request_id = wire.new_request_id()
    logger.error(
        "%s failed on %s %.200s (request id %s)",
        where,
        flow.request.method,
        flow.request.path,
        request_id,
        exc_info=error,
    )
    response = wire.azure_error(
        500,
        "InternalServerError",
        f"The simulator failed on this request (request id {request_id}): "
        f"{type(error).__name__} in {where}. The simulator's log has the details.",
        flow.request,
    )
    response.headers["apim-request-id"] = response.headers["x-request-id"] = request_id
    return response


def guard(addon: object, where: str | None = None) -> None:
    """Wrap the addon's flow hooks (and its child addons') in place."""
    for child in getattr(addon, "addons", None) or ():
        guard(child, where)
    label = where or type(addon).__name__
    for name in FLOW_HOOKS:
        hook = getattr(addon, name, None)
        if callable(hook) and not getattr(hook, "guarded", False):
            setattr(addon, name, _guarded(hook, f"{label} ({name} hook)"))


def _guarded(hook: Callable[[http.HTTPFlow], object], where: str) -> Callable[[http.HTTPFlow], object]:
    @functools.wraps(hook)
    def call(flow: http.HTTPFlow) -> object:
        try:
            result = hook(flow)
        except Exception as e:
            flow.response = internal_error(flow, where, e)
            return None
        if result is not None and inspect.isawaitable(result):
            return _awaited(result, flow, where)
        return result

    call.guarded = True  # type: ignore[attr-defined]
    return call


async def _awaited(pending: Awaitable[object], flow: http.HTTPFlow, where: str) -> None:
    try:
        await pending
    except Exception as e:
        flow.response = internal_error(flow, where, e)
