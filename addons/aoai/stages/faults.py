"""Faults: the declared fault profiles (runtime/faults.py) applied to requests, in generate and
replay modes (in record mode Azure's own faults are the real ones).

Two stages, each where its faults belong in a request's walk:

* `Faults`, after the rate limits, as Azure fails a request it has admitted: draws the
  request's faults, and answers those that answer it (500, 503 with retry-after, a 408 or
  504 after a delay, a hang until the client gives up, context_length_exceeded). The ones
  that change how an answer leaves are kept on the request's context for the next stage.
  (A quota cut acts earlier: the Limits stage asks the fault book for the quota of the moment.)
* `FaultTiming`, after the generators and before streaming and pacing: a slow first byte,
  a trickle and a stream cut reshape the paced stream's plan, or the hold of an answer sent
  at once.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from .. import wire
from ..openai import validation
from ..runtime import faults, latency, spillover
from ..runtime.config import SimulatorConfig
from ..runtime.context_window import too_long
from ..runtime.fault_book import FaultBook
from ..runtime.limits import Counters
from ..runtime.routes import OPENAI
from ..runtime.state import Hold, RequestContext, context_of

logger = logging.getLogger(__name__)

HANG_POLL_S = 0.2  # how often a hung request looks whether its client is still there
# Operations whose requests can be too long for the model's window.
_CONTEXT_OPERATIONS = frozenset({"chat", "completions", "responses", "embeddings"})

SERVER_ERROR = (
    "The server had an error while processing your request. Sorry about that! You can retry your "
    "request, or contact us through an Azure support request at: "
    "https://go.microsoft.com/fwlink/?linkid=2213926 if the error persists. (Please include the "
    "request ID {request_id} in your message.)"
)
# Azure's gateway texts for an overloaded service and its timeouts.
UNAVAILABLE = "The service is temporarily unable to process your request. Please try again later."
TIMEOUT = "The operation was timeout."
GATEWAY_TIMEOUT = (
    "The gateway did not receive a response from 'Microsoft.CognitiveServices' within the specified time period."
)


def server_error(request: http.Request, retry_after: int | None) -> http.Response:
    """Azure's 500, naming its request id as Azure's does."""
    request_id = wire.new_request_id()
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    response = wire.openai_error(
        500, SERVER_ERROR.format(request_id=request_id), type="server_error", request=request, headers=headers
    )
    response.headers["apim-request-id"] = response.headers["x-request-id"] = request_id
    return response


def unavailable(request: http.Request, retry_after: int | None) -> http.Response:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return wire.azure_error(503, "ServiceUnavailable", UNAVAILABLE, request, headers=headers)


def timed_out(request: http.Request, status: int) -> http.Response:
    if status == 504:
        return wire.azure_error(504, "GatewayTimeout", GATEWAY_TIMEOUT, request)
    return wire.azure_error(408, "Timeout", TIMEOUT, request)


def context_too_long(context: RequestContext) -> http.Response:
    """context_length_exceeded as if the conversation had outgrown the model's window by the
    request's own prompt."""
    window = context.deployment.model.context_window
    body = context.body if isinstance(context.body, dict) else {}
    used = window + max(1, context.prompt_tokens)
    operation = context.route.operation
    wanted = used if operation == "embeddings" else used + validation.answers_room(operation, body)
    return too_long(context, window, used, wanted)


# The injected failures Azure would spill to a provisioned deployment's spillover deployment:
# the service's own (a request too long for the model would fail there too).
SPILLED_FAULTS = frozenset({"500", "503", "timeout", "hang"})


class Faults:
    """Draws each admitted request's faults and answers those that answer it."""

    def __init__(self, config: SimulatorConfig, book: FaultBook | None = None, counters: Counters | None = None):
        self.config = config
        self.book = book if book is not None else FaultBook()  # draws, quota cuts, counts, hanging requests
        self.counters = counters if counters is not None else Counters()  # spilled requests, for metrics

    def request(self, flow: http.HTTPFlow):
        context = context_of(flow)
        config = self.config
        if (
            flow.response
            or context is None
            or context.deployment is None
            or config.mode == "record"
            or context.route is None
            or context.route.family != OPENAI
        ):
            return None
        book = self.book
        if config.default_faults is None and context.deployment.faults is None:
            return None  # nothing declared: the usual case costs one test
        choice = book.choose(context.deployment, config.default_faults, config.seed)
        # A realtime session draws its own shapes for each response; its handshake takes none.
        context.fault_shapes = () if context.route.websocket else tuple(choice.shapes)
        fault = choice.answer
        if fault is None or (fault.kind == "contextLength" and context.route.operation not in _CONTEXT_OPERATIONS):
            return None
        book.count(context.deployment.label, fault.kind)
        logger.info("fault %s injected on %s %.200s", fault.kind, flow.request.method, flow.request.path)
        context.fault_shapes = ()
        if fault.kind in SPILLED_FAULTS and context.deployment.provisioned and self._spill(context):
            return None  # the spillover deployment answers instead
        request = flow.request
        if fault.kind == "500":
            flow.response = server_error(request, fault.retry_after_s)
        elif fault.kind == "503":
            flow.response = unavailable(request, fault.retry_after_s)
        elif fault.kind == "contextLength":
            flow.response = context_too_long(context)
        elif fault.kind == "timeout":
            flow.response = timed_out(request, fault.status)
            latency.hold(context, fault.after_s)  # the Pacing stage sends it when due
        else:
            return self._hang(context, fault)
        return None

    def _spill(self, context: RequestContext) -> bool:
        """A provisioned deployment's server-side failure goes to its spillover deployment, as
        Azure spills any non-200 answer of the provisioned one (its quota was charged already)."""
        assert context.deployment is not None and context.route is not None
        standard = spillover.target(
            context.deployment,
            context.route.operation,
            context.request.headers.get(spillover.REQUEST_HEADER),
            self.config.deployments,
        )
        if standard is None:
            return False
        provisioned = context.deployment
        self.counters.spilled[(provisioned.label, standard.label)] += 1
        context.deployment = standard  # it answers: its latency, its metrics
        context.quota_headers = {
            **(context.quota_headers or {}),
            **spillover.served_headers(provisioned.name, standard.name),
        }
        return True

    async def _hang(self, context: RequestContext, fault: faults.Fault) -> None:
        """No answer until the client gives up (then the flow ends and is forgotten), or a 408
        after the fault's maxS."""
        book, flow = self.book, context.flow
        loop = asyncio.get_running_loop()
        deadline = loop.time() + fault.max_s - latency.since_arrival(context)
        book.hanging += 1
        try:
            # The client leaving shows as its connection's state (mitmproxy reads EOF at once);
            # the hook holds the flow until then, so a short poll is all it costs.
            while flow.client_conn.connected and loop.time() < deadline:  # noqa: ASYNC110 (no event tells when the client leaves)
                await asyncio.sleep(min(HANG_POLL_S, max(0.0, deadline - loop.time())))
        finally:
            book.hanging -= 1
        flow.response = timed_out(flow.request, 408)
        if not flow.client_conn.connected:
            # Nobody to answer: the response only keeps later stages from making one.
            flow.kill()


class FaultTiming:
    """Reshapes answers that a slow first byte, a trickle or a stream cut struck."""

    def __init__(self, config: SimulatorConfig, book: FaultBook | None = None):
        self.config = config
        self.book = book if book is not None else FaultBook()  # where the faults that struck are counted

    def request(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is None or not context.fault_shapes or context.stream is None or flow.response:
            return
        plan = context.stream
        self._count(context, faults.shape_stream(plan, list(context.fault_shapes)))
        context.fault_shapes = ()
        if plan.cut and plan.on_cut is not None:
            plan.on_cut()

    def response(self, flow: http.HTTPFlow) -> None:
        # Before the Pacing stage's own response hook, which holds the answer.
        context = context_of(flow)
        if (
            context is None
            or not context.fault_shapes
            or flow.response is None
            or flow.response.status_code >= 400
            or context.stream is not None
        ):
            return
        held = context.hold
        seconds, applied = faults.shape_wait(held.seconds if held is not None else 0.0, list(context.fault_shapes))
        context.fault_shapes = ()
        if applied:
            context.hold = Hold(seconds, held.gate if held is not None else None)
            self._count(context, applied)

    def _count(self, context: RequestContext, applied: list[str]) -> None:
        for kind in applied:
            self.book.count(context.deployment.label, kind)
