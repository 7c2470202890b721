"""The small protocols the coordinator drives: sources, processors, checkpoint stores, metrics.

Sources and sinks stay independent of one another and of the coordinator: a new one is a module
that satisfies one of these shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from deltaforge.events import ChangeEvent, Checkpoint, Progress
from deltaforge.observability.metrics import BatchTrigger, SinkFailureKind

Item = ChangeEvent | Progress
Emit = Callable[[list[Item]], Awaitable[None]]


class Source(Protocol):
    name: str

    async def run(self, emit: Emit) -> None:
        """Read changes and hand them to `emit` in commit order, a list at a time (one call per
        network read, not per event), until `stop()`; may raise on fatal errors."""

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        """Everything up to `checkpoint` is durable in the sinks: the source may release it."""

    async def stop(self) -> None: ...

    def health(self) -> tuple[bool, str]: ...


class Processor(Protocol):
    name: str

    def apply(self, event: ChangeEvent) -> ChangeEvent | None:
        """The event, changed or not, or None to drop it."""


class CheckpointStore(Protocol):
    async def load(self) -> Checkpoint | None: ...

    async def save(self, checkpoint: Checkpoint) -> None: ...

    async def close(self) -> None: ...


class SourceMetrics(Protocol):
    """The part of `observability.metrics.PipelineMetrics` a source records."""

    def source_events(self, table: str, count: int = 1) -> None: ...

    def source_activity(self) -> None: ...

    def source_reconnect(self) -> None: ...

    def set_source_lag(self, seconds: float) -> None: ...


class CoordinatorMetrics(Protocol):
    """The part of `observability.metrics.PipelineMetrics` the coordinator records."""

    def batch(self, events: int, size_bytes: int) -> None: ...

    def stage_latency(self, stage: str, trigger: BatchTrigger, seconds: float) -> None: ...

    def processor_latency(self, processor: str, seconds: float) -> None: ...

    def processor_dropped(self, processor: str, count: int = 1) -> None: ...

    def sink_delivered(self, sink: str, count: int, seconds: float) -> None: ...

    def sink_failure(self, sink: str, kind: SinkFailureKind) -> None: ...

    def sink_skipped(self, sink: str, reason: str, count: int = 1) -> None: ...

    def checkpoint(self, *, ok: bool) -> None: ...
