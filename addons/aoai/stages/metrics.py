"""Metrics: what happened during a load test, at GET /++/metrics in Prometheus text format.

Counted when a flow ends: requests by deployment, operation, mode and status; tokens; 429s
by reason; retries that came before their retry-after; streams by the path they took; declared
faults injected, by deployment and kind; requests spilled from a provisioned deployment; with
SIMULATOR_REDIS_URL, whether the shared-state Redis answers and its failed calls. Timed:
the whole request, and for streams the time to first token and the gaps between tokens as they
were really sent; the simulator's own overhead, the part of a request's time that was not a
simulated wait; and the event loop's lag. With workers, one scrape answers for all of them.
With OTEL_EXPORTER_OTLP_ENDPOINT set, the same measurements are also pushed over OTLP.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import os
from collections.abc import Awaitable, Callable

from mitmproxy import http
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..batch.runner import Counts
from ..runtime import limits, peers
from ..runtime.config import SimulatorConfig
from ..runtime.fault_book import FaultBook
from ..runtime.realtime_server import RealtimeServer, Tally
from ..runtime.routes import MANAGEMENT
from ..runtime.shared import Shared
from ..runtime.state import context_of
from ..runtime.streams import StreamPlan, StreamServer

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


_REQUEST = ("deployment", "operation", "mode")
COUNTER, HISTOGRAM = "counter", "histogram"

# name: (kind, help, labels, histogram buckets)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "requests": (COUNTER, "Requests answered.", _REQUEST + ("status",), ()),
    "prompt_tokens": (COUNTER, "Prompt tokens of answered requests.", _REQUEST, ()),
    "completion_tokens": (COUNTER, "Completion tokens generated.", _REQUEST, ()),
    "rate_limited": (COUNTER, "Requests answered 429, by reason.", ("deployment", "reason"), ()),
    "content_filtered": (
        COUNTER,
        "Prompts (400) and answers (cut) the content filter blocked, by category.",
        ("deployment", "source", "category"),
        (),
    ),
    "request_duration_seconds": (HISTOGRAM, "Arrival to last byte.", _REQUEST, _LATENCY_BUCKETS),
    "time_to_first_token_seconds": (HISTOGRAM, "Arrival to first content frame, streams.", _REQUEST, _LATENCY_BUCKETS),
    "inter_token_seconds": (HISTOGRAM, "Gaps between content frames as sent, streams.", _REQUEST, _TOKEN_GAP_BUCKETS),
    "overhead_seconds": (
        HISTOGRAM,
        "Time a request spent in the simulator beyond its simulated wait.",
        _REQUEST,
        _OVERHEAD_BUCKETS,
    ),
    "realtime_first_audio_seconds": (
        HISTOGRAM,
        "Realtime responses: from response.create (or the end of speech) to the first audio delta.",
        ("deployment",),
        _LATENCY_BUCKETS,
    ),
    "event_loop_lag_seconds": (
        HISTOGRAM,
        "How late the event loop ran a timer: what every answer waits beyond its due time when the process is busy.",
        (),
        _OVERHEAD_BUCKETS,
    ),
}


class SimulatorMetrics:
    """The metric values, kept as plain dicts and bucket lists and turned into Prometheus
    families only when scraped: prometheus-client's own counters take a lock and walk the
    buckets in Python on every update, which was most of what counting a request cost.
    The same measurements go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

    def __init__(self, otlp: bool | None = None):
        self.counters: dict[str, dict[tuple, float]] = {}
        self.histograms: dict[str, dict[tuple, list]] = {}
        for name, (kind, _, _, _) in FAMILIES.items():
            (self.counters if kind == COUNTER else self.histograms)[name] = {}
        self.registry = CollectorRegistry()  # its own: a script reload must not clash
        self.registry.register(self)
        enabled = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")) if otlp is None else otlp
        self.otlp = OtlpMirror() if enabled else None

    def inc(self, name: str, labels: tuple, amount: float = 1.0) -> None:
        values = self.counters[name]
        values[labels] = values.get(labels, 0.0) + amount
        if self.otlp:
            self.otlp.add(name, labels, amount)

    def observe(self, name: str, labels: tuple, value: float) -> None:
        series = self.histograms[name].get(labels)
        if series is None:
            # One count per bucket, the +Inf bucket, then the sum.
            series = self.histograms[name][labels] = [0] * (len(FAMILIES[name][3]) + 1) + [0.0]
        series[bisect.bisect_left(FAMILIES[name][3], value)] += 1  # buckets are "less or equal"
        series[-1] += value
        if self.otlp:
            self.otlp.add(name, labels, value)

    def collect(self):
        """The families in Prometheus' terms, for the registry's text output."""
        for name, (kind, doc, label_names, bounds) in FAMILIES.items():
            if kind == COUNTER:
                family = CounterMetricFamily(f"aoai_{name}", doc, labels=label_names)
                for labels, value in self.counters[name].items():
                    family.add_metric(labels, value)
            else:
                family = HistogramMetricFamily(f"aoai_{name}", doc, labels=label_names)
                for labels, series in self.histograms[name].items():
                    cumulative = list(itertools.accumulate(series[:-1]))
                    buckets = [(_bound(b), n) for b, n in zip(bounds, cumulative, strict=False)] + [
                        ("+Inf", cumulative[-1])
                    ]
                    family.add_metric(labels, buckets, series[-1])
            yield family

    def text(self) -> bytes:
        return generate_latest(self.registry)


def _bound(value: float) -> str:
    return repr(float(value))


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
            make = meter.create_histogram if kind == HISTOGRAM else meter.create_counter
            self.instruments[name] = (make(f"aoai_{name}", description=doc), labels, kind == HISTOGRAM)

    def add(self, name: str, labels: tuple, value: float) -> None:
        instrument, names, histogram = self.instruments[name]
        attributes = dict(zip(names, labels, strict=False))
        if histogram:
            instrument.record(value, attributes)
        else:
            instrument.add(value, attributes)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _throttle_reason(headers: http.Headers) -> str:
    """Which limit a 429 hit: tokens or requests (policy-id), a provisioned deployment's
    utilization, else requests (Document Intelligence)."""
    policy = headers.get("policy-id", "")
    if policy:
        return "tokens" if policy.endswith("Token") else "requests"
    return limits.UTILIZATION if limits.UTILIZATION_HEADER in headers else "requests"


def _labels(flow: http.HTTPFlow, mode: str) -> tuple[str, str, str]:
    context = context_of(flow)
    # Never the name a client sent as it is: a bounded label (runtime/labels.py).
    deployment = context.deployment.label if context and context.deployment else ""
    operation = context.route.operation if context and context.route else "other"
    return deployment, operation, mode


class EarlyRetries:
    """`aoai_early_retries_total`: clients that came back before their retry-after had passed,
    read from the rate limiter's own count when scraped."""

    def __init__(self, limiter: limits.Limiter | None):
        self.limiter = limiter

    def collect(self):
        family = CounterMetricFamily(
            "aoai_early_retries", "Retries sent before the retry-after had passed.", labels=("deployment",)
        )
        for deployment, count in self.limiter.counters.early_retries.items() if self.limiter is not None else ():
            family.add_metric((deployment,), count)
        yield family


class Spillover:
    """`aoai_spillover_requests_total`: requests a provisioned deployment at its limit passed to
    its spillover deployment, by both, read from the rate limiter's own count when scraped."""

    def __init__(self, limiter: limits.Limiter | None):
        self.limiter = limiter

    def collect(self):
        family = CounterMetricFamily(
            "aoai_spillover_requests",
            "Requests a provisioned deployment at its limit spilled to a standard deployment.",
            labels=("deployment", "to"),
        )
        for (deployment, to), count in (
            sorted(self.limiter.counters.spilled.items()) if self.limiter is not None else ()
        ):
            family.add_metric((deployment, to), count)
        yield family


class FaultsInjected:
    """`aoai_faults_injected_total`: declared faults that struck, by deployment and kind (a
    quota cut counts once, when it begins), read from the fault book when scraped."""

    def __init__(self, book: FaultBook | None):
        self.book = book

    def collect(self):
        family = CounterMetricFamily(
            "aoai_faults_injected", "Declared faults injected, by deployment and kind.", labels=("deployment", "kind")
        )
        for (deployment, kind), count in sorted(self.book.injected.items()) if self.book is not None else ():
            family.add_metric((deployment, kind), count)
        yield family


class SharedState:
    """`aoai_shared_state_up` and `aoai_shared_state_failures_total`: whether Redis, through
    which the replicas share state, answers now, and the calls that failed because it did not
    (each replica then serves from its own memory). Without a Redis set, no samples."""

    def __init__(self, shared: Shared | None):
        self.shared = shared

    def collect(self):
        up = GaugeMetricFamily(
            "aoai_shared_state_up", "Whether the Redis replicas share state through answers (1) or not (0)."
        )
        failures = CounterMetricFamily(
            "aoai_shared_state_failures", "Calls to the shared-state Redis that failed; memory served instead."
        )
        shared = self.shared
        if shared is not None and shared.enabled:
            up.add_metric((), 1 if shared.up else 0)
            failures.add_metric((), shared.failures)
        yield up
        yield failures


class BatchJobs:
    """`aoai_batch_jobs` (kept in the data folder, by status: every replica sharing the folder
    sees the same), `aoai_batch_lines_total` (lines this replica answered, by deployment and
    outcome) and `aoai_batch_tokens_total` (their tokens, prompt and completion)."""

    def __init__(self, counts: Counts | None, by_status: Callable[[], dict[str, int]] | None):
        self.counts, self.by_status = counts, by_status

    def collect(self):
        jobs = GaugeMetricFamily("aoai_batch_jobs", "Batch jobs kept, by status.", labels=["status"])
        lines = CounterMetricFamily(
            "aoai_batch_lines",
            "Batch lines answered here, by deployment and outcome.",
            labels=["deployment", "outcome"],
        )
        used = CounterMetricFamily(
            "aoai_batch_tokens", "Tokens of the batch lines answered here.", labels=["deployment", "kind"]
        )
        if self.by_status is not None:
            try:
                for status, n in sorted(self.by_status().items()):
                    jobs.add_metric((status,), n)
            except Exception as e:  # the data folder went away: the rest of the scrape still helps
                logger.warning("batch jobs cannot be counted: %s", e)
        if self.counts is not None:
            for (deployment, outcome), n in sorted(self.counts.lines.items()):
                lines.add_metric((deployment, outcome), n)
            for (deployment, kind), n in sorted(self.counts.tokens.items()):
                used.add_metric((deployment, kind), n)
        yield jobs
        yield lines
        yield used


class StreamsPlayed:
    """`aoai_streams_total`: paced streams by how they were played, `direct` (onto the client's
    socket) or `loopback` (through mitmproxy's layers, several times the CPU per frame); a
    fallback to loopback for plain HTTP/1.1 clients shows here."""

    def __init__(self, streams: StreamServer):
        self.streams = streams

    def collect(self):
        family = CounterMetricFamily("aoai_streams", "Paced streams played, by path.", labels=("path",))
        for path, count in self.streams.played.items():
            family.add_metric((path,), count)
        yield family


class RealtimeSessions:
    """`aoai_realtime_sessions` (open now), `aoai_realtime_sessions_total`,
    `aoai_realtime_events_total{direction}` and `aoai_realtime_audio_seconds_total{direction}`
    by deployment, read from the sessions' own usage when scraped (in: from the client); the
    first-audio times go into `aoai_realtime_first_audio_seconds` then. Nothing per event."""

    def __init__(self, server: RealtimeServer | None, metrics: SimulatorMetrics):
        self.server, self.metrics = server, metrics
        self.totals: dict[str, Tally] = {}
        self.open_now: dict[str, int] = {}

    def harvest(self) -> None:
        """Before a scrape: the totals now, and the first-audio times since the last one."""
        if self.server is None:
            return
        self.totals, self.open_now = self.server.tallies()
        for label, seconds in self.server.take_first_audio():
            self.metrics.observe("realtime_first_audio_seconds", (label,), seconds)

    def collect(self):
        sessions = GaugeMetricFamily("aoai_realtime_sessions", "Realtime sessions open now.", labels=("deployment",))
        started = CounterMetricFamily("aoai_realtime_sessions", "Realtime sessions started.", labels=("deployment",))
        events = CounterMetricFamily(
            "aoai_realtime_events", "Realtime events, in (from the client) and out.", labels=("deployment", "direction")
        )
        audio = CounterMetricFamily(
            "aoai_realtime_audio_seconds",
            "Seconds of realtime audio, in (from the client) and out.",
            labels=("deployment", "direction"),
        )
        for label in sorted(set(self.totals) | set(self.open_now)):
            sessions.add_metric((label,), self.open_now.get(label, 0))
        for label, tally in sorted(self.totals.items()):
            started.add_metric((label,), tally.sessions)
            events.add_metric((label, "in"), tally.events_in)
            events.add_metric((label, "out"), tally.events_out)
            audio.add_metric((label, "in"), tally.audio_in)
            audio.add_metric((label, "out"), tally.audio_out)
        yield sessions
        yield started
        yield events
        yield audio


LAG_PERIOD_S = 0.1


class Metrics:
    def __init__(
        self,
        config: SimulatorConfig,
        streams: StreamServer,
        limiter: limits.Limiter | None = None,
        faults: FaultBook | None = None,
        link: peers.Link | None = None,
        metrics: SimulatorMetrics | None = None,
        shared: Shared | None = None,
        batch_counts: Counts | None = None,
        batch_jobs: Callable[[], dict[str, int]] | None = None,
        realtime: RealtimeServer | None = None,
    ):
        self.config = config
        self.link = link if link is not None else peers.Link()  # other workers' metrics are scraped through it
        self.metrics = metrics or SimulatorMetrics()
        self.metrics.registry.register(EarlyRetries(limiter))
        self.metrics.registry.register(Spillover(limiter))
        self.metrics.registry.register(StreamsPlayed(streams))
        self.metrics.registry.register(FaultsInjected(faults))
        self.metrics.registry.register(SharedState(shared))
        self.metrics.registry.register(BatchJobs(batch_counts, batch_jobs))
        self.realtime = RealtimeSessions(realtime, self.metrics)
        self.metrics.registry.register(self.realtime)
        streams.observers.append(self.stream_played)
        self._lag: asyncio.Task | None = None  # the loop-lag watch, from running()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        context = context_of(flow)
        if (
            flow.response is None
            and context is not None
            and context.route is not None
            and context.route.operation == "metrics"
            and context.route.family == MANAGEMENT
        ):
            self.realtime.harvest()
            if self.config.peers and not peers.from_peer(flow.request.headers, self.config.peer_secret):
                return self._every_worker(flow)
            flow.response = http.Response.make(200, self.metrics.text(), {"content-type": CONTENT_TYPE_LATEST})
        return None

    async def _every_worker(self, flow: http.HTTPFlow) -> None:
        """One scrape for all workers: each sample labelled with its worker."""
        texts = {self.config.worker or "this": self.metrics.text().decode()}
        texts.update(await peers.scrape(self.link, self.config))
        flow.response = http.Response.make(200, peers.merge_metrics(texts), {"content-type": CONTENT_TYPE_LATEST})

    def response(self, flow: http.HTTPFlow) -> None:
        context = context_of(flow)
        if context is not None and context.route is not None and context.route.family == MANAGEMENT:
            return
        m, labels = self.metrics, _labels(flow, self.config.mode)
        status = flow.response.status_code
        # A fixed set of label values: an HTTP status, else "other" (an extension's odd number).
        m.inc("requests", labels + (str(status) if 100 <= status < 600 else "other",))
        if context is not None and context.filtered:
            for source, category in context.filtered:
                m.inc("content_filtered", (labels[0], source, category))
        if status == 429:
            reason = _throttle_reason(flow.response.headers)
            m.inc("rate_limited", (labels[0], reason))
            return
        if context is not None and status == 200:
            m.inc("prompt_tokens", labels, context.prompt_tokens)
            m.inc("completion_tokens", labels, context.completion_tokens)
        ended = flow.response.timestamp_end
        if ended and flow.request.timestamp_start:
            took = ended - flow.request.timestamp_start
            m.observe("request_duration_seconds", labels, took)
            if context is None or context.stream is None:
                waited = context.latency_s if context else 0.0
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

    async def running(self) -> None:
        self._lag = asyncio.get_running_loop().create_task(self._watch_the_loop())

    async def _watch_the_loop(self) -> None:
        """Every LAG_PERIOD_S, how much later than asked a timer fired (the loop's lag)."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + LAG_PERIOD_S
            await asyncio.sleep(LAG_PERIOD_S)
            self.metrics.observe("event_loop_lag_seconds", (), max(0.0, loop.time() - asked))

    def done(self) -> None:
        if self._lag is not None:
            self._lag.cancel()
        if self.metrics.otlp:
            self.metrics.otlp.shutdown()  # pushes what is left
