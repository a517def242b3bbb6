"""Metrics: what happened during a load test, at GET /++/metrics in Prometheus text format.

Counted when a flow ends: requests by deployment, operation, mode and status; tokens; 429s
by reason; retries that came before their retry-after. With OTEL_EXPORTER_OTLP_ENDPOINT set, the same measurements are also pushed over
OTLP. Timed: the whole request, and for streams the time to first token and the gaps
between tokens as they were really sent; and the simulator's own overhead, the part of a
request's time that was not a simulated wait.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mitmproxy import http
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import SimulatorConfig, context_of
from .streaming import StreamPlan, StreamServer

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (.01, .025, .05, .1, .25, .5, .75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60)
_TOKEN_GAP_BUCKETS = (.001, .0025, .005, .01, .015, .02, .03, .05, .075, .1, .2, .5)
_OVERHEAD_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25)


_REQUEST = ("deployment", "operation", "mode")

# name: (kind, help, labels, histogram buckets)
FAMILIES: dict[str, tuple[type, str, tuple[str, ...], tuple[float, ...]]] = {
    "requests": (Counter, "Requests answered.", _REQUEST + ("status",), ()),
    "prompt_tokens": (Counter, "Prompt tokens of answered requests.", _REQUEST, ()),
    "completion_tokens": (Counter, "Completion tokens generated.", _REQUEST, ()),
    "rate_limited": (Counter, "Requests answered 429, by reason.", ("deployment", "reason"), ()),
    "request_duration_seconds": (Histogram, "Arrival to last byte.", _REQUEST, _LATENCY_BUCKETS),
    "time_to_first_token_seconds": (Histogram, "Arrival to first content frame, streams.", _REQUEST,
                                    _LATENCY_BUCKETS),
    "inter_token_seconds": (Histogram, "Gaps between content frames as sent, streams.", _REQUEST,
                            _TOKEN_GAP_BUCKETS),
    "overhead_seconds": (Histogram, "Time a request spent in the simulator beyond its simulated wait.", _REQUEST,
                         _OVERHEAD_BUCKETS),
}


class SimulatorMetrics:
    """The metric families, in a registry of their own (a script reload must not clash), and
    the same measurements sent over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

    def __init__(self, otlp: bool | None = None):
        self.registry = CollectorRegistry()
        self.families = {}
        for name, (kind, doc, labels, buckets) in FAMILIES.items():
            extra = {"buckets": buckets} if kind is Histogram else {}
            self.families[name] = kind(f"aoai_{name}", doc, labels, registry=self.registry, **extra)
        enabled = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) if otlp is None else otlp
        self.otlp = OtlpMirror() if enabled else None
        # Each family's child per label values: `labels()` checks and locks on every call,
        # about half of what counting a request cost.
        self._children: dict[tuple[str, tuple], Any] = {}

    def _child(self, name: str, labels: tuple) -> Any:
        child = self._children.get((name, labels))
        if child is None:
            child = self._children[name, labels] = self.families[name].labels(*labels)
        return child

    def inc(self, name: str, labels: tuple, amount: float = 1.0) -> None:
        self._child(name, labels).inc(amount)
        if self.otlp:
            self.otlp.add(name, labels, amount)

    def observe(self, name: str, labels: tuple, value: float) -> None:
        self._child(name, labels).observe(value)
        if self.otlp:
            self.otlp.add(name, labels, value)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class OtlpMirror:
    """OpenTelemetry instruments mirroring the Prometheus families, pushed over OTLP/HTTP to
    OTEL_EXPORTER_OTLP_ENDPOINT (the exporter reads the standard OTEL_* variables)."""

    def __init__(self):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        interval = int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "10000"))
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=interval)
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "aoai-simulator")})
        self.provider = MeterProvider(metric_readers=[reader], resource=resource)
        meter = self.provider.get_meter("aoai-simulator")
        self.instruments = {}
        for name, (kind, doc, labels, _) in FAMILIES.items():
            make = meter.create_histogram if kind is Histogram else meter.create_counter
            self.instruments[name] = (make(f"aoai_{name}", description=doc), labels, kind is Histogram)

    def add(self, name: str, labels: tuple, value: float) -> None:
        instrument, names, histogram = self.instruments[name]
        attributes = dict(zip(names, labels))
        if histogram:
            instrument.record(value, attributes)
        else:
            instrument.add(value, attributes)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _labels(flow: http.HTTPFlow, mode: str) -> tuple[str, str, str]:
    context = context_of(flow)
    deployment = context.deployment.name if context and context.deployment else ""
    operation = context.operation.name if context and context.operation else _other_operation(flow.request.path)
    return deployment, operation, mode


def _other_operation(path: str) -> str:
    if path.startswith(("/documentintelligence/", "/formrecognizer/")):
        return "document_intelligence"
    return "other"


class EarlyRetries:
    """`aoai_early_retries_total`: clients that came back before their retry-after had passed,
    read from the rate limiter's own count when scraped."""

    def __init__(self, config: SimulatorConfig):
        self.config = config

    def collect(self):
        family = CounterMetricFamily("aoai_early_retries", "Retries sent before the retry-after had passed.",
                                     labels=("deployment",))
        limits = self.config.limits
        for deployment, count in (limits.counters.early_retries.items() if limits is not None else ()):
            family.add_metric((deployment,), count)
        yield family


class Metrics:
    def __init__(self, config: SimulatorConfig, streams: StreamServer, metrics: SimulatorMetrics | None = None):
        self.config = config
        self.metrics = metrics or SimulatorMetrics()
        self.metrics.registry.register(EarlyRetries(config))
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
        m.inc("requests", labels + (str(status),))
        context = context_of(flow)
        if status == 429:
            reason = "tokens" if flow.response.headers.get("policy-id", "").endswith("Token") else "requests"
            m.inc("rate_limited", (labels[0], reason))
            return
        if context is not None and status == 200:
            m.inc("prompt_tokens", labels, context.values.get("prompt_tokens", 0))
            m.inc("completion_tokens", labels, context.values.get("completion_tokens", 0))
        ended = flow.response.timestamp_end
        if ended and flow.request.timestamp_start:
            took = ended - flow.request.timestamp_start
            m.observe("request_duration_seconds", labels, took)
            if "aoai.stream" not in flow.metadata:
                waited = context.values.get("latency_s", 0.0) if context else 0.0
                m.observe("overhead_seconds", labels, max(0.0, took - waited))

    def stream_played(self, plan: StreamPlan) -> None:
        if plan.first_frame_s is None or not plan.labels:
            return
        labels = (plan.labels.get("deployment", ""), plan.labels.get("operation", ""), self.config.mode)
        m = self.metrics
        m.observe("time_to_first_token_seconds", labels, plan.first_frame_s)
        # How late the first frame left against its plan: the simulator's own cost for a stream.
        m.observe("overhead_seconds", labels, max(0.0, plan.first_frame_s - plan.first_frame_due_s))
        for gap in plan.gaps:
            m.observe("inter_token_seconds", labels, gap)

    def done(self) -> None:
        if self.metrics.otlp:
            self.metrics.otlp.shutdown()  # pushes what is left
