"""The sink protocol, the failure taxonomy, and the retry loop every sink shares.

A required sink that keeps failing never drops data: it retries with capped exponential backoff
and jitter while reporting itself unhealthy, so the pipeline stops acknowledging the source.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from deltaforge.backoff import Backoff
from deltaforge.events import ChangeEvent, Checkpoint
from deltaforge.observability.metrics import SinkFailureKind

FailureKind = SinkFailureKind


class SinkFencedError(Exception):
    """Another worker took over this sink's identity (a Kafka transactional id): this worker must
    stop, never retry, or two writers would interleave the same stream."""


class SinkError(Exception):
    """A write failed; `kind` is the class of failure counted in deltaforge_sink_failures_total."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Sink(Protocol):
    name: str
    required: bool

    async def start(self) -> None: ...

    async def write(self, events: Sequence[ChangeEvent], checkpoint: Checkpoint) -> None:
        """Return once every event is durably accepted by the destination.

        `checkpoint` is the source position the pipeline reaches with this batch: a sink that can
        store it atomically with the events (Kafka in exactly-once mode) does; others ignore it.
        """

    async def close(self) -> None: ...

    def health(self) -> tuple[bool, str]: ...


class FailureRecorder(Protocol):
    def sink_failure(self, sink: str, kind: SinkFailureKind) -> None: ...


class Health:
    """A sink's own view of itself, read by /readyz and the pipeline status."""

    def __init__(self) -> None:
        self.ok, self.reason, self.since = True, "", time.monotonic()

    def fail(self, reason: str) -> None:
        if self.ok or reason != self.reason:
            self.since = time.monotonic()
        self.ok, self.reason = False, reason

    def recover(self) -> None:
        if not self.ok:
            self.since = time.monotonic()
        self.ok, self.reason = True, ""

    def as_tuple(self) -> tuple[bool, str]:
        return self.ok, self.reason


async def retry_until_written(
    attempt_write: Callable[[], Awaitable[None]],
    *,
    sink: str,
    health: Health,
    failures: FailureRecorder,
    on_failure: Callable[[SinkError], Awaitable[None]] | None = None,
    backoff: Backoff | None = None,
    log: Callable[[str, SinkError, float], None] | None = None,
) -> None:
    """Call `attempt_write` until it succeeds; each failure is counted, reported and backed off."""
    backoff = backoff or Backoff()
    attempt = 0
    while True:
        try:
            await attempt_write()
        except SinkError as error:
            failures.sink_failure(sink, error.kind)
            health.fail(f"{error.kind.value}: {error}")
            delay = backoff.delay(attempt)
            if log is not None:
                log(sink, error, delay)
            if on_failure is not None:
                await on_failure(error)
            await asyncio.sleep(delay)
            attempt += 1
            continue
        health.recover()
        return
