"""The worker's report in its own Pipeline's status: heartbeat, position, lag, sinks, last error.

The operator derives Ready from observed facts, and whether the source is connected, the sinks
accept writes and the worker still runs its loop are facts only the worker has. It writes them
into its Pipeline's `status` through the status subresource (its Role allows exactly that, for
its own Pipeline), as a JSON merge patch of the fields it owns:

- `worker.lastHeartbeatTime`; `worker.lastError`: why it is not ready, or the error it stopped
  on; removed while it is ready;
- `source.position` (acknowledged), `source.lagSeconds`, `source.lastEventTime`;
- `sinks` (name, connected, lastError) and `sinksReady` (`connected/configured`).

It never names `conditions`, `phase`, `observedGeneration`, `source.kind` or `worker.restarts`:
those are the operator's, and a merge patch leaves what it does not name alone.

The rate is low on purpose: a report every REPORT_INTERVAL seconds, and one as soon as readiness
flips (at most one per MIN_GAP seconds), so a thousand workers cost the API server about fifty
writes a second, and the operator, which ignores heartbeats that change nothing, no work at all.
A failed write is logged once per distinct error and retried after RETRY_AFTER seconds, doubling
up to the interval (a missing Pipeline or permission would not fix itself sooner); it never stops
the pipeline.

Only in a pod (`$KUBERNETES_SERVICE_HOST`), or where $DELTAFORGE_STATUS_REPORT says so (`1` to
report through the kubeconfig outside a cluster, `0` never to report). The Kubernetes client is
imported only then: it takes about half a second to import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from deltaforge.observability.logging import get_logger
from deltaforge.spec import API_VERSION, Pipeline

if TYPE_CHECKING:
    from deltaforge.observability.metrics import PipelineMetrics
    from deltaforge.worker import WorkerHealth

Json = dict[str, Any]
ENV: Final = "DELTAFORGE_STATUS_REPORT"
REPORT_INTERVAL: Final = 20.0  # the operator calls a heartbeat older than three of these stale
MIN_GAP: Final = 2.0
RETRY_AFTER: Final = 5.0
POLL: Final = 0.5
FINAL_REPORT_TIMEOUT: Final = 3.0
_MAX_ERROR: Final = 1024
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    choice = environ.get(ENV, "").strip().lower()
    if choice in ("0", "false", "no", "off"):
        return False
    return choice in ("1", "true", "yes", "on") or bool(environ.get("KUBERNETES_SERVICE_HOST"))


@dataclass(frozen=True)
class Report:
    """One observation of the worker, taken on the event loop (cheap, no I/O)."""

    ready: bool
    reason: str
    position: str | None
    lag_seconds: float | None  # None until this worker delivered a change
    last_event_time: datetime | None
    sinks: tuple[tuple[str, bool, str], ...]  # name, healthy, reason

    @classmethod
    def of(cls, health: WorkerHealth, metrics: PipelineMetrics) -> Report:
        ready, reason = health.readiness()
        coordinator = health.coordinator
        checkpoint = coordinator.last_checkpoint
        lag = last_event = None
        if coordinator.delivered_events:
            lag = metrics.registry.get_sample_value(
                "deltaforge_source_lag_seconds",
                {"pipeline": metrics.pipeline, "tenant": metrics.tenant, "source": metrics.source},
            )
            # The source records lag and the read time of the same commit: their difference is
            # the commit time of the newest change read.
            read_ago = time.monotonic() - health.source.last_event_monotonic
            last_event = datetime.now(UTC) - timedelta(seconds=read_ago + (lag or 0.0))
        return cls(
            ready=ready,
            reason=reason,
            position=checkpoint.position if checkpoint else None,
            lag_seconds=lag,
            last_event_time=last_event,
            sinks=tuple((sink.name, *sink.health()) for sink in coordinator.sinks),
        )


def status_patch(report: Report, *, now: datetime) -> Json:
    """The merge patch of the worker's own status fields (a None removes `lastError`)."""
    last_error = None if report.ready else report.reason
    source: Json = {}
    if report.position is not None:
        source["position"] = report.position
    if report.lag_seconds is not None:
        source["lagSeconds"] = round(max(report.lag_seconds, 0.0), 3)
    if report.last_event_time is not None:
        source["lastEventTime"] = report.last_event_time.strftime(_TIME_FORMAT)
    status: Json = {
        "worker": {
            "lastHeartbeatTime": now.strftime(_TIME_FORMAT),
            "lastError": last_error[:_MAX_ERROR] if last_error else None,
        },
        "sinks": [
            {"name": name, "connected": healthy, **({} if healthy else {"lastError": reason[:_MAX_ERROR]})}
            for name, healthy, reason in report.sinks
        ],
        "sinksReady": f"{sum(healthy for _, healthy, _ in report.sinks)}/{len(report.sinks)}",
    }
    if source:
        status["source"] = source
    return {"status": status}


Write = Callable[[Json], Awaitable[None]]


def kubernetes_writer(pipeline: Pipeline) -> Write:
    """Merge-patches `pipelines/<name>/status` with the pod's service account (or the kubeconfig)."""
    group, version = API_VERSION.split("/")
    api: Any = None

    def patch(body: Json) -> None:
        nonlocal api
        if api is None:
            from kubernetes import client, config  # noqa: PLC0415 - slow to import; only in a pod

            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
            api = client.CustomObjectsApi()
        api.patch_namespaced_custom_object_status(
            group, version, pipeline.namespace, "pipelines", pipeline.name, body,
            _content_type="application/merge-patch+json", _request_timeout=(5, 10),
        )  # fmt: skip

    async def write(body: Json) -> None:
        await asyncio.to_thread(patch, body)

    return write


class StatusReporter:
    def __init__(
        self,
        pipeline: Pipeline,
        observe: Callable[[], Report],
        write: Write,
        *,
        interval: float = REPORT_INTERVAL,
    ) -> None:
        self.observe, self.write, self.interval = observe, write, interval
        self._log = get_logger("deltaforge.status_report", pipeline=pipeline.name, tenant=pipeline.tenant)
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._failures = 0  # in a row

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-report")

    async def _run(self) -> None:
        reported_ready: bool | None = None
        written = due = 0.0
        while True:
            report = self.observe()
            now = time.monotonic()
            if report.ready is not reported_ready:  # a flip: now, or once MIN_GAP has passed
                due = min(due, written + MIN_GAP)
            if now >= due:
                ok = await self._send(report)
                # After a failure the retry carries the newest state; a flip does not hurry it.
                reported_ready, written = report.ready, now
                due = now + (
                    self.interval if ok else min(RETRY_AFTER * 2 ** (self._failures - 1), self.interval)
                )
            await asyncio.sleep(POLL)

    async def _send(self, report: Report) -> bool:
        try:
            await self.write(status_patch(report, now=datetime.now(UTC)))
        except Exception as failure:  # the API server's or the network's: never the pipeline's end
            text = f"{type(failure).__name__}: {failure}"[:_MAX_ERROR]
            self._failures += 1
            if text != self._failure:
                self._log.warning("status_report_failed", error=text)
                self._failure = text
            return False
        if self._failure is not None:
            self._log.info("status_report_recovered")
            self._failure, self._failures = None, 0
        return True

    async def close(self, error: str | None) -> None:
        """Stop reporting; a last report (bounded) leaves the final position and the error it
        stopped on, if any, in the status."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Stopping is not an error: a clean stop clears lastError, a failed one leaves its reason.
        final = replace(self.observe(), ready=error is None, reason=error or "")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_REPORT_TIMEOUT):
                await self._send(final)


def start(pipeline: Pipeline, health: WorkerHealth, metrics: PipelineMetrics) -> StatusReporter | None:
    """A running reporter when `enabled()`, else None."""
    if not enabled():
        return None
    reporter = StatusReporter(pipeline, lambda: Report.of(health, metrics), kubernetes_writer(pipeline))
    reporter.start()
    return reporter
