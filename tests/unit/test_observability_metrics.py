"""PipelineMetrics exposes every playbook metric with pipeline/tenant labels, in its own registry."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deltaforge.observability import (
    METRIC_FAMILIES,
    BatchTrigger,
    LifecycleAction,
    LifecycleResult,
    PipelineMetrics,
    SinkFailureKind,
)

PT = {"pipeline": "orders", "tenant": "shop"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _touch_everything(metrics: PipelineMetrics) -> None:
    metrics.source_events("public.orders", 3)
    metrics.source_reconnect()
    metrics.set_source_lag(0.4)
    metrics.batch(events=120, size_bytes=50_000)
    metrics.stage_latency("processors", BatchTrigger.LIMITS, 0.002)
    metrics.processor_latency("filter", 0.0001)
    metrics.processor_dropped("filter", 2)
    metrics.set_channel_depth(7)
    metrics.checkpoint(ok=True)
    metrics.checkpoint(ok=False)
    metrics.sink_delivered("events", 118, 0.012)
    metrics.sink_failure("events", SinkFailureKind.TIMEOUT)
    metrics.sink_skipped("cache", "filtered", 1)
    metrics.set_sink_backpressure("events", 42)
    metrics.lifecycle(LifecycleAction.START, LifecycleResult.SUCCESS)
    metrics.readiness_changed(True)
    metrics.panic("main")
    metrics.api_request("/metrics", "GET", 200, 0.003)


def test_every_family_is_exposed_after_touching_each_metric() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres")
    _touch_everything(metrics)
    text = generate_latest(metrics.registry).decode()

    missing = [name for name in METRIC_FAMILIES if f"# TYPE {name} " not in text]
    assert missing == []
    assert len(set(METRIC_FAMILIES)) == len(METRIC_FAMILIES) == 24


def test_every_pipeline_series_carries_pipeline_and_tenant() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres")
    _touch_everything(metrics)
    text = generate_latest(metrics.registry).decode()

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels["pipeline"] == "orders", sample
            assert sample.labels["tenant"] == "shop", sample


def test_component_labels_and_values() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres", version="9.9.9")
    _touch_everything(metrics)
    metrics.source_events("public.orders", 2)
    value = metrics.registry.get_sample_value

    assert (
        value("deltaforge_source_events_total", {**PT, "source": "postgres", "table": "public.orders"}) == 5
    )
    assert value("deltaforge_sink_events_total", {**PT, "sink": "events"}) == 118
    assert value("deltaforge_sink_failures_total", {**PT, "sink": "events", "kind": "timeout"}) == 1
    assert value("deltaforge_sink_skipped_total", {**PT, "sink": "cache", "reason": "filtered"}) == 1
    assert value("deltaforge_processor_dropped_total", {**PT, "processor": "filter"}) == 2
    assert value("deltaforge_checkpoint_success_total", PT) == 1
    assert value("deltaforge_checkpoint_failure_total", PT) == 1
    assert value("deltaforge_pipeline_lifecycle_total", {**PT, "action": "start", "result": "success"}) == 1
    assert value("deltaforge_pipeline_ready", PT) == 1
    assert value("deltaforge_readiness_transitions_total", {**PT, "to": "ready"}) == 1
    assert value("deltaforge_panics_total", {**PT, "component": "main"}) == 1
    assert (
        value("deltaforge_api_requests_total", {**PT, "route": "/metrics", "method": "GET", "status": "200"})
        == 1
    )
    assert value("deltaforge_pipeline_info", {**PT, "version": "9.9.9", "source": "postgres"}) == 1
    assert value("deltaforge_sink_backpressure", {**PT, "sink": "events"}) == 42
    assert value("deltaforge_source_lag_seconds", {**PT, "source": "postgres"}) == 0.4


def test_histogram_buckets() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres")
    metrics.batch(events=120, size_bytes=50_000)
    metrics.batch(events=3, size_bytes=900)
    metrics.stage_latency("processors", BatchTrigger.TIMER, 0.002)
    value = metrics.registry.get_sample_value

    assert value("deltaforge_batch_events_bucket", {**PT, "le": "10.0"}) == 1
    assert value("deltaforge_batch_events_bucket", {**PT, "le": "250.0"}) == 2
    assert value("deltaforge_batch_bytes_bucket", {**PT, "le": "1024.0"}) == 1
    assert value("deltaforge_batch_bytes_bucket", {**PT, "le": "65536.0"}) == 2
    assert value("deltaforge_batch_bytes_sum", PT) == 50_900
    stage = {**PT, "stage": "processors", "trigger": "timer"}
    assert value("deltaforge_stage_latency_seconds_bucket", {**stage, "le": "0.001"}) == 0
    assert value("deltaforge_stage_latency_seconds_bucket", {**stage, "le": "0.0025"}) == 1
    assert value("deltaforge_stage_latency_seconds_count", stage) == 1


def test_series_without_free_labels_exist_before_the_first_event() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="mysql")
    metrics.register_sink("events")
    value = metrics.registry.get_sample_value

    assert value("deltaforge_checkpoint_failure_total", PT) == 0
    assert value("deltaforge_pipeline_ready", PT) == 0
    assert value("deltaforge_source_reconnects_total", {**PT, "source": "mysql"}) == 0
    for kind in SinkFailureKind:
        assert value("deltaforge_sink_failures_total", {**PT, "sink": "events", "kind": kind.value}) == 0


def test_idle_seconds_grow_without_events_and_reset_on_events() -> None:
    clock = FakeClock()
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres", clock=clock)
    labels = {**PT, "source": "postgres"}

    def idle() -> float | None:
        return metrics.registry.get_sample_value("deltaforge_source_idle_seconds", labels)

    assert idle() == 0
    clock.now += 12.5
    assert idle() == 12.5
    metrics.source_events("public.orders", 0)  # an empty read is not activity
    assert idle() == 12.5
    metrics.source_events("public.orders", 1)
    clock.now += 2
    assert idle() == 2
    metrics.source_activity()
    assert idle() == 0


def test_scrape_time_gauges_read_their_callbacks() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres")
    depth = [3]
    metrics.channel_depth_from(lambda: depth[0])
    metrics.sink_backpressure_from("events", lambda: 17)
    value = metrics.registry.get_sample_value

    assert value("deltaforge_pipeline_channel_depth", PT) == 3
    depth[0] = 9
    assert value("deltaforge_pipeline_channel_depth", PT) == 9
    assert value("deltaforge_sink_backpressure", {**PT, "sink": "events"}) == 17


def test_two_pipelines_in_one_process_do_not_clash() -> None:
    first = PipelineMetrics("orders", tenant="shop", source="postgres")
    second = PipelineMetrics("orders", tenant="shop", source="postgres")
    first.source_events("t", 1)

    labels = {**PT, "source": "postgres", "table": "t"}
    assert first.registry.get_sample_value("deltaforge_source_events_total", labels) == 1
    assert second.registry.get_sample_value("deltaforge_source_events_total", labels) is None
