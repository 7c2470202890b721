"""status_report.py: what the worker writes into its Pipeline's status, when, and what a failed
write costs (a log line, never the pipeline)."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from deltaforge import status_report
from deltaforge.events import Checkpoint
from deltaforge.observability.metrics import PipelineMetrics
from deltaforge.spec import parse_pipeline
from deltaforge.status_report import Report, StatusReporter, enabled, status_patch

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
READY = Report(ready=True, reason="streaming", position="0/16B6C50", lag_seconds=0.4321,
               last_event_time=NOW - timedelta(seconds=1),
               sinks=(("events", True, "writing"), ("cache", False, "timeout")))  # fmt: skip
PIPELINE = parse_pipeline({
    "apiVersion": "deltaforge.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "orders", "namespace": "shop"},
    "spec": {"source": {"postgres": {"host": "pg", "database": "shop", "user": "cdc", "tables": ["public.t"]}},
             "sinks": [{"name": "out", "stdout": {}, "required": True}]},
})  # fmt: skip


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "DELTAFORGE_STATUS_REPORT": "0"}, False),
        ({"DELTAFORGE_STATUS_REPORT": "1"}, True),
    ],
)
def test_reports_only_in_a_pod_unless_told(environ: dict[str, str], expected: bool) -> None:
    assert enabled(environ) is expected


def test_the_patch_holds_only_the_workers_fields() -> None:
    patch = status_patch(READY, now=NOW)
    assert patch == {"status": {
        "worker": {"lastHeartbeatTime": "2026-05-01T12:00:00Z", "lastError": None},  # None removes it
        "source": {"position": "0/16B6C50", "lagSeconds": 0.432, "lastEventTime": "2026-05-01T11:59:59Z"},
        "sinks": [{"name": "events", "connected": True}, {"name": "cache", "connected": False, "lastError": "timeout"}],
        "sinksReady": "1/2",
    }}  # fmt: skip


def test_not_ready_reports_the_reason_and_only_what_it_knows() -> None:
    starting = Report(ready=False, reason="source: connecting", position=None, lag_seconds=None,
                      last_event_time=None, sinks=())  # fmt: skip
    status = status_patch(starting, now=NOW)["status"]
    assert status["worker"]["lastError"] == "source: connecting"
    assert "source" not in status  # the previous worker's position and lag stay
    assert status["sinksReady"] == "0/0"


def test_a_report_is_taken_from_the_running_parts() -> None:
    metrics = PipelineMetrics("orders", tenant="shop", source="postgres")
    metrics.set_source_lag(2.0)
    sink = SimpleNamespace(name="out", health=lambda: (True, "writing"))
    coordinator = SimpleNamespace(last_checkpoint=Checkpoint("0/AB"), delivered_events=3, sinks=[sink])
    health = SimpleNamespace(
        readiness=lambda: (True, "streaming"), coordinator=coordinator,
        source=SimpleNamespace(last_event_monotonic=time.monotonic() - 1.0),
    )  # fmt: skip
    report = Report.of(health, metrics)  # type: ignore[arg-type]
    assert (report.ready, report.position, report.lag_seconds, report.sinks) == (
        True, "0/AB", 2.0, (("out", True, "writing"),)
    )  # fmt: skip
    assert report.last_event_time is not None
    # Read one second ago, two seconds after its commit.
    commit_ago = (datetime.now(UTC) - report.last_event_time).total_seconds()
    assert 2.9 < commit_ago < 3.5
    coordinator.delivered_events = 0
    assert Report.of(health, metrics).lag_seconds is None  # type: ignore[arg-type]


async def test_reports_at_start_on_a_flip_and_at_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_report, "POLL", 0.01)
    monkeypatch.setattr(status_report, "MIN_GAP", 0.05)
    current = replace(READY, ready=False, reason="source: connecting")
    written: list[dict[str, Any]] = []

    async def write(body: dict[str, Any]) -> None:
        written.append(body["status"])

    reporter = StatusReporter(PIPELINE, lambda: current, write, interval=0.5)
    reporter.start()
    await asyncio.sleep(0.1)
    assert [status["worker"]["lastError"] for status in written] == ["source: connecting"]
    current = READY
    await asyncio.sleep(0.15)
    assert [status["worker"]["lastError"] for status in written] == ["source: connecting", None]
    await asyncio.sleep(0.5)
    assert len(written) == 3  # the interval's heartbeat
    await reporter.close(None)
    assert written[-1]["worker"]["lastError"] is None


async def test_a_failed_write_is_logged_once_retried_and_never_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status_report, "POLL", 0.01)
    monkeypatch.setattr(status_report, "RETRY_AFTER", 0.05)
    attempts: list[float] = []

    async def failing(_body: dict[str, Any]) -> None:
        attempts.append(time.monotonic())
        raise OSError("connection refused")

    reporter = StatusReporter(PIPELINE, lambda: READY, failing, interval=0.2)
    reporter.start()
    await asyncio.sleep(0.7)
    # RETRY_AFTER (0.05 s) doubling up to the interval (0.2 s), never every poll (0.01 s).
    first, second, third = [later - earlier for earlier, later in itertools.pairwise(attempts)][:3]
    assert 0.04 < first < second < third < 0.3
    assert third > 0.15
    assert capsys.readouterr().out.count("status_report_failed") == 1
    await reporter.close("source: wal_level is replica")  # bounded, and the failure is swallowed


async def test_the_last_report_carries_the_error_the_worker_stopped_on() -> None:
    written: list[dict[str, Any]] = []

    async def write(body: dict[str, Any]) -> None:
        written.append(body["status"])

    reporter = StatusReporter(PIPELINE, lambda: READY, write)
    await reporter.close("source: wal_level is replica")
    assert written[-1]["worker"]["lastError"] == "source: wal_level is replica"
