"""The coordinator: source -> bounded channel -> batches at transaction boundaries -> processors ->
sinks -> checkpoint -> source acknowledgement, in that order and never out of it.

Backpressure: the channel is bounded and a required sink blocks until it accepted a batch, so a slow
or failing sink stops the source read instead of growing memory. A transaction larger than the
batch limits is delivered in parts; its checkpoint then records the index reached inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from deltaforge.channel import Channel, ChannelClosed
from deltaforge.events import ChangeEvent, Checkpoint, Progress
from deltaforge.observability.metrics import BatchTrigger
from deltaforge.protocols import CheckpointStore, CoordinatorMetrics, Item, Processor, Source
from deltaforge.sinks.base import Sink


@dataclass(frozen=True)
class BatchLimits:
    max_events: int = 2000
    max_bytes: int = 4 * 1024 * 1024
    max_delay: float = 0.05


_UNLIMITED = BatchLimits(max_events=sys.maxsize, max_bytes=sys.maxsize)


@dataclass
class Batch:
    items: list[Item]
    trigger: BatchTrigger
    size: int  # bytes as received from the source, for the batch metrics

    @property
    def events(self) -> list[ChangeEvent]:
        return [item for item in self.items if type(item) is ChangeEvent]

    def checkpoint(self) -> Checkpoint:
        last = self.items[-1]
        if isinstance(last, Progress):
            return Checkpoint(last.position, -1, last.lsn)
        return Checkpoint(last.source.position, -1 if last.last_in_tx else last.index, last.lsn)


@dataclass
class _Accumulator:
    """Items read but not yet delivered, and where the last complete transaction ends among them."""

    items: list[Item] = field(default_factory=list)
    events: int = 0
    size: int = 0
    boundary: int = 0  # items[:boundary] hold only complete transactions
    started: float = 0.0

    def add_until_full(self, chunk: list[Item], limits: BatchLimits) -> int:
        """Add items of `chunk` until a batch limit is reached; how many were added."""
        items = self.items
        if not items and chunk:
            self.started = time.monotonic()
        events, size, boundary = self.events, self.size, self.boundary
        max_events, max_bytes = limits.max_events, limits.max_bytes
        taken = 0
        for item in chunk:
            if events >= max_events or size >= max_bytes:
                break
            items.append(item)
            taken += 1
            if type(item) is Progress:
                boundary = len(items)
                continue
            assert isinstance(item, ChangeEvent)
            events += 1
            size += item.size
            if item.last_in_tx:
                boundary = len(items)
        self.events, self.size, self.boundary = events, size, boundary
        return taken

    def take(self, count: int, trigger: BatchTrigger) -> Batch:
        """The first `count` items as a batch; the rest stay pending."""
        taken, rest, size = self.items[:count], self.items[count:], self.size
        self.items, self.events, self.size, self.boundary = [], 0, 0, 0
        if rest:
            self.add_until_full(rest, _UNLIMITED)
        return Batch(taken, trigger, size - self.size)


class NonRequiredDelivery:
    """Feeds a sink that may fail without stopping the pipeline, from a small queue of its own.

    When the queue is full the batch is skipped for that sink (counted), never waited for.
    """

    def __init__(self, sink: Sink, metrics: CoordinatorMetrics, depth: int = 8) -> None:
        self.sink, self._metrics = sink, metrics
        self._queue: asyncio.Queue[tuple[list[ChangeEvent], Checkpoint] | None] = asyncio.Queue(maxsize=depth)
        self._task = asyncio.create_task(self._drain(), name=f"sink-{sink.name}")

    def offer(self, events: list[ChangeEvent], checkpoint: Checkpoint) -> None:
        try:
            self._queue.put_nowait((events, checkpoint))
        except asyncio.QueueFull:
            self._metrics.sink_skipped(self.sink.name, "backpressure", len(events))

    async def _drain(self) -> None:
        while (queued := await self._queue.get()) is not None:
            events, checkpoint = queued
            started = time.perf_counter()
            await self.sink.write(events, checkpoint)
            self._metrics.sink_delivered(self.sink.name, len(events), time.perf_counter() - started)

    async def close(self, grace: float) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, grace)
        except TimeoutError:
            self._task.cancel()


class Coordinator:
    def __init__(
        self,
        *,
        source: Source,
        sinks: Sequence[Sink],
        processors: Sequence[Processor],
        limits: BatchLimits,
        commit_policy: str,
        checkpoints: CheckpointStore,
        metrics: CoordinatorMetrics,
        queue_capacity: int = 10_000,
    ) -> None:
        self.source, self.sinks, self.processors = source, list(sinks), list(processors)
        self.limits, self.checkpoints, self.metrics = limits, checkpoints, metrics
        waits_for_all = commit_policy == "all"
        self._awaited = [sink for sink in self.sinks if sink.required or waits_for_all]
        self._background_sinks = [sink for sink in self.sinks if sink not in self._awaited]
        self.channel = Channel(queue_capacity)
        self._pending = _Accumulator()
        self._stopping = asyncio.Event()
        self._finished = False  # the source ended or a stop was requested: drain, then return
        self.last_checkpoint: Checkpoint | None = None
        self.last_delivery = 0.0  # monotonic time of the last delivered batch
        self.delivered_events = 0

    async def emit(self, items: list[Item]) -> None:
        await self.channel.put(items)

    def stop(self) -> None:
        """Stop reading; what was read up to the last complete transaction is still delivered."""
        self._stopping.set()

    async def run(self) -> None:
        # The source connects and reads ahead (into the bounded channel) while the sinks connect:
        # start-up takes the longer of the two, not their sum.
        source_task = asyncio.create_task(self._read_source(), name="source")
        stop_task = asyncio.create_task(self._stopping.wait(), name="stop-signal")
        background: list[NonRequiredDelivery] = []
        try:
            await self._start_sinks(source_task)
            background = [NonRequiredDelivery(sink, self.metrics) for sink in self._background_sinks]
            while True:
                batch = await self._next_batch(stop_task)
                if batch is None:
                    break
                await self._deliver(batch, background)
            if source_task.done() and not source_task.cancelled() and source_task.exception():
                raise source_task.exception()  # type: ignore[misc]
        finally:
            await self.source.stop()
            for task in (source_task, stop_task):
                task.cancel()
            await asyncio.gather(source_task, stop_task, return_exceptions=True)
            for delivery in background:
                await delivery.close(grace=5)
            for sink in self.sinks:
                await sink.close()

    async def _start_sinks(self, source_task: asyncio.Task[None]) -> None:
        """Start the sinks one by one; a source that fails meanwhile (bad settings, say) ends the
        wait instead of hiding behind a sink that retries its connection."""
        starting = asyncio.create_task(self._start_each_sink(), name="sinks-starting")
        try:
            await asyncio.wait((starting, source_task), return_when=asyncio.FIRST_COMPLETED)
            if not starting.done() and not source_task.cancelled() and source_task.exception():
                raise source_task.exception()  # type: ignore[misc]
            await starting
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting

    async def _start_each_sink(self) -> None:
        for sink in self.sinks:
            await sink.start()

    async def _read_source(self) -> None:
        try:
            await self.source.run(self.emit)
        finally:
            self.channel.close()

    def _fill(self) -> bool:
        """Move queued items into the pending batch until a limit is reached; False once the
        source has finished and everything it queued was taken."""
        pending, limits, channel = self._pending, self.limits, self.channel
        while pending.events < limits.max_events and pending.size < limits.max_bytes:
            try:
                chunk = channel.get_nowait()
            except ChannelClosed:
                return False
            if chunk is None:
                break
            taken = pending.add_until_full(chunk, limits)
            if taken < len(chunk):
                channel.unget(chunk[taken:])
        return True

    async def _next_batch(self, stop_task: asyncio.Task[bool]) -> Batch | None:
        pending, limits = self._pending, self.limits
        if self._finished:
            return self._final_batch()
        while True:
            if not self._fill():
                self._finished = True
                return self._final_batch()
            if pending.events >= limits.max_events or pending.size >= limits.max_bytes:
                # Cut at the last complete transaction; a single huge transaction is cut mid-way.
                return pending.take(pending.boundary or len(pending.items), BatchTrigger.LIMITS)
            if pending.boundary and time.monotonic() >= pending.started + limits.max_delay:
                return pending.take(pending.boundary, BatchTrigger.TIMER)
            timeout = None
            if pending.boundary:
                timeout = max(pending.started + limits.max_delay - time.monotonic(), 0)
            readable = asyncio.ensure_future(self.channel.wait_readable())
            done, _ = await asyncio.wait(
                {readable, stop_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if readable not in done:
                readable.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await readable
                if stop_task in done:
                    self._finished = True
                    return self._final_batch()
                return pending.take(pending.boundary, BatchTrigger.TIMER)

    def _final_batch(self) -> Batch | None:
        """On stop: deliver complete transactions; the partial one replays after restart."""
        if not self._pending.boundary:
            return None
        return self._pending.take(self._pending.boundary, BatchTrigger.SHUTDOWN)

    def _process(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        for processor in self.processors:
            started = time.perf_counter()
            kept = [out for event in events if (out := processor.apply(event)) is not None]
            self.metrics.processor_latency(processor.name, time.perf_counter() - started)
            if len(kept) != len(events):
                self.metrics.processor_dropped(processor.name, len(events) - len(kept))
            events = kept
        return events

    async def _deliver(self, batch: Batch, background: list[NonRequiredDelivery]) -> None:
        started = time.perf_counter()
        raw = batch.events
        self.metrics.batch(len(raw), batch.size)
        events = self._process(raw)
        self.metrics.stage_latency("processors", batch.trigger, time.perf_counter() - started)
        checkpoint = batch.checkpoint()
        if events:
            await asyncio.gather(*(self._write(sink, events, checkpoint) for sink in self._awaited))
            for delivery in background:
                delivery.offer(events, checkpoint)
        try:
            await self.checkpoints.save(checkpoint)
        except Exception:
            self.metrics.checkpoint(ok=False)
            raise
        self.metrics.checkpoint(ok=True)
        await self.source.acknowledge(checkpoint)
        self.last_checkpoint = checkpoint
        self.last_delivery = time.monotonic()
        self.delivered_events += len(events)
        self.metrics.stage_latency("deliver", batch.trigger, time.perf_counter() - started)

    async def _write(self, sink: Sink, events: list[ChangeEvent], checkpoint: Checkpoint) -> None:
        started = time.perf_counter()
        await sink.write(events, checkpoint)
        self.metrics.sink_delivered(sink.name, len(events), time.perf_counter() - started)

    def health(self) -> tuple[bool, str]:
        """Ready when the source is connected and every awaited sink is writable."""
        ok, reason = self.source.health()
        if not ok:
            return False, f"source: {reason}"
        for sink in self._awaited:
            ok, reason = sink.health()
            if not ok:
                return False, f"sink {sink.name}: {reason}"
        return True, "streaming"
