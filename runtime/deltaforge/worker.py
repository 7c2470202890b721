"""Running one pipeline: wire the parts, serve /metrics /healthz /readyz /status, stop on SIGTERM.

SIGTERM stops the source read, delivers what was read up to the last complete transaction,
writes the checkpoint, acknowledges the source and exits 0: a rolling restart loses nothing and
replays nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from deltaforge import __version__, gc_tuning, status_report
from deltaforge.assembly import Secrets, build_checkpoints, build_processors, build_sinks, build_source
from deltaforge.coordinator import BatchLimits, Coordinator
from deltaforge.observability.http import ObservabilityServer
from deltaforge.observability.logging import get_logger
from deltaforge.observability.metrics import LifecycleAction, LifecycleResult, PipelineMetrics
from deltaforge.observability.panics import install_panic_hooks
from deltaforge.protocols import CheckpointStore, Source
from deltaforge.sinks.base import Sink, SinkFencedError
from deltaforge.sources.errors import SourceConfigError
from deltaforge.spec import Pipeline

STUCK_AFTER_SECONDS = 300.0  # liveness fails when a healthy pipeline delivered nothing for this long
SHUTDOWN_GRACE_SECONDS = 2.0  # how long an exit waits for closed HTTP connections to wind down


class ObservedSource(Source, Protocol):
    """A source, plus when it last produced an event (for /status)."""

    @property
    def last_event_monotonic(self) -> float: ...


class WorkerHealth:
    """The worker's answers to /healthz, /readyz and /status, from observed facts only."""

    def __init__(self, pipeline: Pipeline, coordinator: Coordinator, source: ObservedSource) -> None:
        self.pipeline, self.coordinator, self.source = pipeline, coordinator, source
        self.started = time.monotonic()
        self.fatal: str | None = None

    def liveness(self) -> tuple[bool, str]:
        if self.fatal:
            return False, self.fatal
        waiting = self.coordinator.channel.depth()
        idle = time.monotonic() - max(self.coordinator.last_delivery, self.started)
        ready, _ = self.coordinator.health()
        if waiting and ready and idle > STUCK_AFTER_SECONDS:
            return False, f"{waiting} events waiting and nothing delivered for {idle:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        if self.fatal:
            return False, self.fatal
        return self.coordinator.health()

    def status(self) -> Mapping[str, Any]:
        checkpoint = self.coordinator.last_checkpoint
        ready, reason = self.readiness()
        return {
            "pipeline": self.pipeline.name,
            "namespace": self.pipeline.namespace,
            "tenant": self.pipeline.tenant,
            "version": __version__,
            "ready": ready,
            "reason": reason,
            "position": checkpoint.position if checkpoint else None,
            "checkpoint": {"position": checkpoint.position, "index": checkpoint.index}
            if checkpoint
            else None,
            "deliveredEvents": self.coordinator.delivered_events,
            "queueDepth": self.coordinator.channel.depth(),
            "lastEventAgeSeconds": round(time.monotonic() - self.source.last_event_monotonic, 3),
            "sinks": {
                sink.name: dict(zip(("healthy", "reason"), sink.health(), strict=True))
                for sink in self.coordinator.sinks
            },
        }


async def run_pipeline(pipeline: Pipeline, *, http_host: str, http_port: int, secrets: Secrets) -> int:
    """Stream until SIGTERM/SIGINT (exit 0) or a configuration error (exit 1, message logged)."""
    log = get_logger("deltaforge.worker", pipeline=pipeline.name, tenant=pipeline.tenant)
    source_kind = pipeline.spec.source.kind
    metrics = PipelineMetrics(pipeline.name, tenant=pipeline.tenant, source=source_kind)
    restore_hooks = install_panic_hooks(metrics, log)
    try:
        if pipeline.spec.state.value != "running":
            log.info("pipeline_not_running", state=pipeline.spec.state.value)
            return 0

        sinks = build_sinks(pipeline, metrics, secrets, _parts_log(log))
        checkpoints = build_checkpoints(pipeline, sinks)
        try:
            resume = await checkpoints.load()
        except ValueError as error:  # unreadable, or its Kafka topic unreachable: say which
            metrics.lifecycle(LifecycleAction.START, LifecycleResult.ERROR)
            log.error("pipeline_failed", reason=str(error))
            return 1
        source = build_source(pipeline, resume, metrics, secrets, _parts_log(log))
        coordinator = _coordinator(pipeline, source, sinks, checkpoints, metrics, secrets)
        metrics.channel_depth_from(coordinator.channel.depth)
        health = WorkerHealth(pipeline, coordinator, source)
        server = ObservabilityServer(metrics, health, host=http_host, port=http_port)
        try:
            await server.start()
        except OSError as error:  # the port is taken or the address is not ours: a user error
            await checkpoints.close()
            metrics.lifecycle(LifecycleAction.START, LifecycleResult.ERROR)
            log.error(
                "pipeline_failed",
                reason=f"cannot serve /metrics, /healthz and /readyz on {http_host}:{http_port}: "
                f"{error.strerror or error}; choose another --http-port (or $DELTAFORGE_HTTP_PORT)",
            )
            return 1
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, coordinator.stop)
        watcher = asyncio.create_task(_watch_readiness(server, health), name="readiness")
        reporter = status_report.start(pipeline, health, metrics)  # into the Pipeline's status, in a pod
        log.info(
            "pipeline_starting",
            source=source_kind,
            resume=str(resume) if resume else None,
            http_port=server.port,
        )
        metrics.lifecycle(LifecycleAction.START, LifecycleResult.SUCCESS)
        gc_tuning.tune_for_streaming()
        try:
            await coordinator.run()
        except (SourceConfigError, SinkFencedError) as error:
            health.fatal = str(error)
            server.readiness.update(False, str(error))
            metrics.lifecycle(LifecycleAction.STOP, LifecycleResult.ERROR)
            log.error("pipeline_failed", reason=str(error))
            return 1
        finally:
            if reporter is not None:
                await reporter.close(health.fatal)
            await _shut_down(watcher, checkpoints, server)
        metrics.lifecycle(LifecycleAction.STOP, LifecycleResult.SUCCESS)
        log.info(
            "pipeline_stopped",
            checkpoint=str(coordinator.last_checkpoint),
            delivered=coordinator.delivered_events,
        )
        return 0
    finally:
        restore_hooks()


def _coordinator(  # noqa: PLR0917 - the parts, built by the caller in dependency order
    pipeline: Pipeline,
    source: ObservedSource,
    sinks: list[Sink],
    checkpoints: CheckpointStore,
    metrics: PipelineMetrics,
    secrets: Secrets,
) -> Coordinator:
    batch = pipeline.spec.batch
    return Coordinator(
        source=source,
        sinks=sinks,
        processors=build_processors(pipeline, secrets),
        limits=BatchLimits(int(batch.max_events), int(batch.max_bytes), float(batch.max_delay)),
        commit_policy=pipeline.spec.commit_policy.value,
        checkpoints=checkpoints,
        metrics=metrics,
    )


def _parts_log(log: Any) -> Callable[..., None]:
    """The log the source and sinks write to: info, or `level="warning"` for faults they retry."""

    def say(event: str, *, level: str = "info", **fields: Any) -> None:
        getattr(log, level)(event, **fields)

    return say


async def _shut_down(
    watcher: asyncio.Task[None], checkpoints: CheckpointStore, server: ObservabilityServer
) -> None:
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await checkpoints.close()
    await server.stop()
    await _let_closing_tasks_finish(SHUTDOWN_GRACE_SECONDS)


async def _let_closing_tasks_finish(grace: float) -> None:
    """Waits (bounded) for tasks that are ending, such as HTTP connections `server.stop()` closed.

    Whatever is left when `run_pipeline` returns is cancelled by `asyncio.run`, and on Python 3.11
    a cancelled `asyncio.start_server` connection task makes asyncio log a spurious
    "Exception in callback ... CancelledError" traceback: a probe that arrived just before exit
    would put a traceback in the log of every clean stop or fail-fast exit.
    """
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    if leftovers:
        await asyncio.wait(leftovers, timeout=grace)


async def _watch_readiness(server: ObservabilityServer, health: WorkerHealth) -> None:
    """Readiness transitions are logged with their reason and counted, once per change."""
    while True:
        server.readiness.update(*health.readiness())
        await asyncio.sleep(0.5)
