"""Prometheus metrics of one pipeline worker.

Every pipeline owns a private `CollectorRegistry`: unit tests, benchmarks and any process that
hosts several pipelines never collide on the global registry, and the worker's `/metrics` serves
exactly its own pipeline. `pipeline` and `tenant` (and the source id) are bound once here, so the
hot paths only pay a dictionary lookup for the remaining labels, and every recording method takes a
count so callers record once per batch, never once per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from deltaforge import __version__

BATCH_EVENTS_BUCKETS: Final = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0)
BATCH_BYTES_BUCKETS: Final = tuple(float(1024 * 4**i) for i in range(10))  # 1 KiB … 256 MiB
STAGE_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
PROCESSOR_LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
SINK_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
API_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

METRIC_FAMILIES: Final[tuple[str, ...]] = (
    "deltaforge_source_events_total",
    "deltaforge_source_reconnects_total",
    "deltaforge_source_lag_seconds",
    "deltaforge_source_idle_seconds",
    "deltaforge_batch_events",
    "deltaforge_batch_bytes",
    "deltaforge_stage_latency_seconds",
    "deltaforge_processor_latency_seconds",
    "deltaforge_pipeline_channel_depth",
    "deltaforge_checkpoint_success_total",
    "deltaforge_checkpoint_failure_total",
    "deltaforge_sink_events_total",
    "deltaforge_sink_latency_seconds",
    "deltaforge_sink_failures_total",
    "deltaforge_sink_backpressure",
    "deltaforge_processor_dropped_total",
    "deltaforge_sink_skipped_total",
    "deltaforge_pipeline_lifecycle_total",
    "deltaforge_pipeline_ready",
    "deltaforge_readiness_transitions_total",
    "deltaforge_panics_total",
    "deltaforge_api_requests_total",
    "deltaforge_api_request_duration_seconds",
    "deltaforge_pipeline_info",
)
"""Family names as they appear in the Prometheus text exposition (counters with `_total`)."""


class BatchTrigger(StrEnum):
    """Why the coordinator closed a batch; bounded so the `trigger` label stays small."""

    TIMER = "timer"
    LIMITS = "limits"
    SHUTDOWN = "shutdown"
    TRANSACTION = "transaction"


class SinkFailureKind(StrEnum):
    """Failure classes worth a distinct alert; anything unclassified is `OTHER`."""

    AUTH = "auth"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MESSAGE_TOO_LARGE = "message_too_large"
    SERIALIZATION = "serialization"
    OTHER = "other"


class LifecycleAction(StrEnum):
    """Worker-side lifecycle operations, audited with a success/error result."""

    START = "start"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    RESTART = "restart"


class LifecycleResult(StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class Readiness(StrEnum):
    """Values of the `to` label of `deltaforge_readiness_transitions_total`."""

    READY = "ready"
    NOT_READY = "not_ready"


_M = TypeVar("_M", bound=MetricWrapperBase)


class _Children(Generic[_M]):
    """Caches labelled children: `labels()` takes a lock and validates on every call."""

    __slots__ = ("_base", "_cache", "_family")

    def __init__(self, family: _M, base: tuple[str, ...]) -> None:
        self._family = family
        self._base = base
        self._cache: dict[tuple[str, ...], _M] = {}

    def get(self, *values: str) -> _M:
        child = self._cache.get(values)
        if child is None:
            child = self._family.labels(*self._base, *values)
            self._cache[values] = child
        return child


class PipelineMetrics:
    """All `deltaforge_*` series of one pipeline, in a registry of its own."""

    def __init__(
        self,
        pipeline: str,
        *,
        tenant: str = "default",
        source: str,
        version: str = __version__,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.tenant = tenant
        self.source = source
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._last_source_activity = clock()
        base = (pipeline, tenant)
        pt = ("pipeline", "tenant")
        reg = self.registry

        def counter(name: str, doc: str, *extra: str) -> _Children[Counter]:
            return _Children(Counter(name, doc, (*pt, *extra), registry=reg), base)

        def gauge(name: str, doc: str, *extra: str) -> _Children[Gauge]:
            return _Children(Gauge(name, doc, (*pt, *extra), registry=reg), base)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *extra: str) -> _Children[Histogram]:
            return _Children(Histogram(name, doc, (*pt, *extra), buckets=buckets, registry=reg), base)

        self._source_events = counter(
            "deltaforge_source_events", "Change events handed to the coordinator.", "source", "table"
        )
        self._source_reconnects = counter(
            "deltaforge_source_reconnects", "Reconnections of the source reader.", "source"
        )
        self._source_lag = gauge(
            "deltaforge_source_lag_seconds",
            "Seconds between the source server's commit time and the read.",
            "source",
        )
        self._source_idle = gauge(
            "deltaforge_source_idle_seconds", "Seconds since the source last produced an event.", "source"
        )
        self._batch_events = histogram(
            "deltaforge_batch_events", "Events per delivered batch.", BATCH_EVENTS_BUCKETS
        )
        self._batch_bytes = histogram(
            "deltaforge_batch_bytes", "Payload bytes per delivered batch.", BATCH_BYTES_BUCKETS
        )
        self._stage_latency = histogram(
            "deltaforge_stage_latency_seconds",
            "Time a batch spends in a coordinator stage, by what closed the batch.",
            STAGE_LATENCY_BUCKETS,
            "stage",
            "trigger",
        )
        self._processor_latency = histogram(
            "deltaforge_processor_latency_seconds",
            "Time of one processor invocation.",
            PROCESSOR_LATENCY_BUCKETS,
            "processor",
        )
        self._channel_depth = gauge(
            "deltaforge_pipeline_channel_depth", "Events queued between the source and the coordinator."
        )
        self._checkpoint_success = counter("deltaforge_checkpoint_success", "Durable checkpoint writes.")
        self._checkpoint_failure = counter("deltaforge_checkpoint_failure", "Failed checkpoint writes.")
        self._sink_events = counter("deltaforge_sink_events", "Events acknowledged by a sink.", "sink")
        self._sink_latency = histogram(
            "deltaforge_sink_latency_seconds", "Time of one sink send.", SINK_LATENCY_BUCKETS, "sink"
        )
        self._sink_failures = counter(
            "deltaforge_sink_failures", "Failed sink sends by failure class.", "sink", "kind"
        )
        self._sink_backpressure = gauge(
            "deltaforge_sink_backpressure", "Events or bytes waiting in a sink client's buffer.", "sink"
        )
        self._processor_dropped = counter(
            "deltaforge_processor_dropped", "Events a processor removed from a batch.", "processor"
        )
        self._sink_skipped = counter(
            "deltaforge_sink_skipped", "Events a sink deliberately did not send.", "sink", "reason"
        )
        self._lifecycle = counter(
            "deltaforge_pipeline_lifecycle",
            "Worker lifecycle operations and their result.",
            "action",
            "result",
        )
        self._ready = gauge("deltaforge_pipeline_ready", "1 when the worker is ready, else 0.")
        self._readiness_transitions = counter(
            "deltaforge_readiness_transitions", "Readiness changes, by the state entered.", "to"
        )
        self._panics = counter("deltaforge_panics", "Unhandled exceptions (bugs), by component.", "component")
        self._api_requests = Counter(
            "deltaforge_api_requests",
            "Requests to the worker's HTTP endpoints.",
            (*pt, "route", "method", "status"),
            registry=reg,
        )
        self._api_duration = Histogram(
            "deltaforge_api_request_duration_seconds",
            "Time to answer a request to the worker's HTTP endpoints.",
            (*pt, "route", "method"),
            buckets=API_LATENCY_BUCKETS,
            registry=reg,
        )
        info = Gauge(
            "deltaforge_pipeline_info",
            "Constant 1, labelled with the worker's version and source kind.",
            (*pt, "version", "source"),
            registry=reg,
        )
        info.labels(pipeline, tenant, version, source).set(1)

        # Series without a free label exist from the start, so rate() and absent() work before the
        # first event or checkpoint.
        self._source_reconnects.get(source)
        self._source_lag.get(source)
        self._source_idle.get(source).set_function(self._source_idle_seconds)
        self._batch_events.get()
        self._batch_bytes.get()
        self._channel_depth.get()
        self._checkpoint_success.get()
        self._checkpoint_failure.get()
        self._ready.get().set(0)

    # Sources

    def source_events(self, table: str, count: int = 1) -> None:
        """Records `count` events of `table` read together; also resets the idle clock."""
        if count > 0:
            self._source_events.get(self.source, table).inc(count)
            self._last_source_activity = self._clock()

    def source_activity(self) -> None:
        """Resets the idle clock without an event, e.g. on a heartbeat that proves the stream moves."""
        self._last_source_activity = self._clock()

    def source_reconnect(self) -> None:
        self._source_reconnects.get(self.source).inc()

    def set_source_lag(self, seconds: float) -> None:
        self._source_lag.get(self.source).set(max(seconds, 0.0))

    def _source_idle_seconds(self) -> float:
        return max(self._clock() - self._last_source_activity, 0.0)

    # Coordinator

    def batch(self, events: int, size_bytes: int) -> None:
        """Records one delivered batch."""
        self._batch_events.get().observe(events)
        self._batch_bytes.get().observe(size_bytes)

    def stage_latency(self, stage: str, trigger: BatchTrigger, seconds: float) -> None:
        self._stage_latency.get(stage, trigger).observe(seconds)

    def processor_latency(self, processor: str, seconds: float) -> None:
        self._processor_latency.get(processor).observe(seconds)

    def processor_dropped(self, processor: str, count: int = 1) -> None:
        if count > 0:
            self._processor_dropped.get(processor).inc(count)

    def set_channel_depth(self, depth: int) -> None:
        self._channel_depth.get().set(depth)

    def channel_depth_from(self, read_depth: Callable[[], float]) -> None:
        """Reads the depth at scrape time (e.g. `queue.qsize`), so the hot path never updates it."""
        self._channel_depth.get().set_function(read_depth)

    def checkpoint(self, *, ok: bool) -> None:
        (self._checkpoint_success if ok else self._checkpoint_failure).get().inc()

    # Sinks

    def register_sink(self, sink: str) -> None:
        """Creates a sink's series at zero, so failure-rate alerts see a baseline before any error."""
        self._sink_events.get(sink)
        self._sink_latency.get(sink)
        self._sink_backpressure.get(sink)
        for kind in SinkFailureKind:
            self._sink_failures.get(sink, kind)

    def sink_delivered(self, sink: str, count: int, seconds: float) -> None:
        """Records one acknowledged send of `count` events that took `seconds`."""
        if count > 0:
            self._sink_events.get(sink).inc(count)
        self._sink_latency.get(sink).observe(seconds)

    def sink_failure(self, sink: str, kind: SinkFailureKind) -> None:
        self._sink_failures.get(sink, kind).inc()

    def sink_skipped(self, sink: str, reason: str, count: int = 1) -> None:
        if count > 0:
            self._sink_skipped.get(sink, reason).inc(count)

    def set_sink_backpressure(self, sink: str, waiting: float) -> None:
        self._sink_backpressure.get(sink).set(waiting)

    def sink_backpressure_from(self, sink: str, read_waiting: Callable[[], float]) -> None:
        """Reads the client's buffer depth at scrape time."""
        self._sink_backpressure.get(sink).set_function(read_waiting)

    # Worker

    def lifecycle(self, action: LifecycleAction, result: LifecycleResult) -> None:
        self._lifecycle.get(action, result).inc()

    def readiness_changed(self, ready: bool) -> None:
        """Counts one transition; `ReadinessTracker` decides when readiness really flipped."""
        self._ready.get().set(1 if ready else 0)
        self._readiness_transitions.get(Readiness.READY if ready else Readiness.NOT_READY).inc()

    def panic(self, component: str) -> None:
        self._panics.get(component).inc()

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._api_requests.labels(self.pipeline, self.tenant, route, method, str(status)).inc()
        self._api_duration.labels(self.pipeline, self.tenant, route, method).observe(seconds)
