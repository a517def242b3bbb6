"""Metrics: what happened during a load test, at GET /++/metrics in Prometheus text format.

Counted when a flow ends: requests by deployment, operation, mode and status; tokens; 429s
by reason. Timed: the whole request, and for streams the time to first token and the gaps
between tokens as they were really sent; and the simulator's own overhead, the part of a
request's time that was not a simulated wait.
"""

from __future__ import annotations

import logging

from mitmproxy import http
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import SimulatorConfig, context_of
from .streaming import StreamPlan, StreamServer

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (.01, .025, .05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60)
_TOKEN_GAP_BUCKETS = (.001, .0025, .005, .01, .015, .02, .03, .05, .075, .1, .2, .5)
_OVERHEAD_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25)


class SimulatorMetrics:
    """The metric families, in a registry of their own (a script reload must not clash)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        labels = ("deployment", "operation", "mode")
        self.requests = Counter("aoai_requests", "Requests answered.", labels + ("status",), registry=self.registry)
        self.prompt_tokens = Counter("aoai_prompt_tokens", "Prompt tokens of answered requests.", labels,
                                     registry=self.registry)
        self.completion_tokens = Counter("aoai_completion_tokens", "Completion tokens generated.", labels,
                                         registry=self.registry)
        self.throttled = Counter("aoai_rate_limited", "Requests answered 429, by reason.",
                                 ("deployment", "reason"), registry=self.registry)
        self.duration = Histogram("aoai_request_duration_seconds", "Arrival to last byte.", labels,
                                  buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("aoai_time_to_first_token_seconds", "Arrival to first content frame, streams.",
                              labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("aoai_inter_token_seconds", "Gaps between content frames sent, streams.", labels,
                             buckets=_TOKEN_GAP_BUCKETS, registry=self.registry)
        self.overhead = Histogram("aoai_overhead_seconds",
                                  "Time a request spent in the simulator beyond its simulated wait.", labels,
                                  buckets=_OVERHEAD_BUCKETS, registry=self.registry)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def _labels(flow: http.HTTPFlow, mode: str) -> tuple[str, str, str]:
    context = context_of(flow)
    deployment = context.deployment.name if context and context.deployment else ""
    operation = context.operation.name if context and context.operation else _other_operation(flow.request.path)
    return deployment, operation, mode


def _other_operation(path: str) -> str:
    if path.startswith(("/documentintelligence/", "/formrecognizer/")):
        return "document_intelligence"
    return "other"


class Metrics:
    def __init__(self, config: SimulatorConfig, streams: StreamServer, metrics: SimulatorMetrics | None = None):
        self.config = config
        self.metrics = metrics or SimulatorMetrics()
        streams.observers.append(self.stream_played)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and flow.request.method == "GET" and \
                flow.request.path.partition("?")[0] == "/++/metrics":
            flow.response = http.Response.make(200, self.metrics.text(), {"content-type": CONTENT_TYPE_LATEST})
            flow.metadata["aoai.unmetered"] = True

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.request.path.startswith("/++/") or flow.metadata.get("aoai.unmetered"):
            return
        m, labels = self.metrics, _labels(flow, self.config.mode)
        status = flow.response.status_code
        m.requests.labels(*labels, str(status)).inc()
        context = context_of(flow)
        if status == 429:
            reason = "tokens" if flow.response.headers.get("policy-id", "").endswith("Token") else "requests"
            m.throttled.labels(labels[0], reason).inc()
            return
        if context is not None and status == 200:
            m.prompt_tokens.labels(*labels).inc(context.values.get("prompt_tokens", 0))
            m.completion_tokens.labels(*labels).inc(context.values.get("completion_tokens", 0))
        ended = flow.response.timestamp_end
        if ended and flow.request.timestamp_start:
            took = ended - flow.request.timestamp_start
            m.duration.labels(*labels).observe(took)
            if "aoai.stream" not in flow.metadata:
                waited = context.values.get("latency_s", 0.0) if context else 0.0
                m.overhead.labels(*labels).observe(max(0.0, took - waited))

    def stream_played(self, plan: StreamPlan) -> None:
        if plan.first_frame_s is None or not plan.labels:
            return
        labels = (plan.labels.get("deployment", ""), plan.labels.get("operation", ""), self.config.mode)
        m = self.metrics
        m.ttft.labels(*labels).observe(plan.first_frame_s)
        # How late the first frame left against its plan: the simulator's own cost for a stream.
        m.overhead.labels(*labels).observe(max(0.0, plan.first_frame_s - plan.first_frame_due_s))
        for gap in plan.gaps:
            m.itl.labels(*labels).observe(gap)
