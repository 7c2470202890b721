"""The coordinator's ordering and batching rules, with in-memory sources and sinks (pure logic)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from deltaforge.coordinator import BatchLimits, Coordinator
from deltaforge.events import ChangeEvent, Checkpoint, Op, Progress, SourceInfo, event_id
from deltaforge.observability.metrics import BatchTrigger, SinkFailureKind
from deltaforge.processors.builtin import FilterProcessor
from deltaforge.protocols import Emit, Item, Processor


def _transaction(position: int, rows: int, table: str = "orders") -> list[ChangeEvent]:
    info = SourceInfo(
        "postgres", "pg:shop:slot", "shop", "public", table, f"0/{position:X}", 0, str(position)
    )
    return [
        ChangeEvent(
            op=Op.CREATE,
            source=info,
            before=None,
            after={"id": index},
            key={"id": index},
            index=index,
            last_in_tx=index == rows - 1,
            event_id=event_id("pg:shop:slot", info.position, index),
            lsn=position + 1 if index == rows - 1 else 0,
            size=100,
        )
        for index in range(rows)
    ]


class ListSource:
    name = "fake"

    def __init__(self, items: Sequence[Item], log: list[str], chunk: int = 1) -> None:
        self.items, self.log, self.chunk = list(items), log, chunk
        self.acknowledged: list[Checkpoint] = []

    async def run(self, emit: Emit) -> None:
        for start in range(0, len(self.items), self.chunk):
            await emit(self.items[start : start + self.chunk])

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        self.log.append(f"ack {checkpoint.position}:{checkpoint.index}")
        self.acknowledged.append(checkpoint)

    async def stop(self) -> None:
        return None

    def health(self) -> tuple[bool, str]:
        return True, ""


class RecordingSink:
    def __init__(self, name: str, log: list[str], *, required: bool = True, delay: float = 0.0) -> None:
        self.name, self.required, self.log, self.delay = name, required, log, delay
        self.batches: list[list[str]] = []

    async def start(self) -> None:
        return None

    async def write(self, events: Sequence[ChangeEvent], checkpoint: Checkpoint) -> None:
        await asyncio.sleep(self.delay)
        self.batches.append([f"{e.source.position}:{e.index}" for e in events])
        self.log.append(f"{self.name} wrote {len(events)}")

    async def close(self) -> None:
        return None

    def health(self) -> tuple[bool, str]:
        return True, ""


class MemoryStore:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.saved: list[Checkpoint] = []

    async def load(self) -> Checkpoint | None:
        return self.saved[-1] if self.saved else None

    async def save(self, checkpoint: Checkpoint) -> None:
        self.log.append(f"save {checkpoint.position}:{checkpoint.index}")
        self.saved.append(checkpoint)

    async def close(self) -> None:
        return None


class NullMetrics:
    def __init__(self) -> None:
        self.dropped = 0

    def batch(self, events: int, size_bytes: int) -> None: ...

    def stage_latency(self, stage: str, trigger: BatchTrigger, seconds: float) -> None: ...

    def processor_latency(self, processor: str, seconds: float) -> None: ...

    def processor_dropped(self, processor: str, count: int = 1) -> None:
        self.dropped += count

    def sink_delivered(self, sink: str, count: int, seconds: float) -> None: ...

    def sink_failure(self, sink: str, kind: SinkFailureKind) -> None: ...

    def sink_skipped(self, sink: str, reason: str, count: int = 1) -> None: ...

    def checkpoint(self, *, ok: bool) -> None: ...


def _run(
    items: Sequence[Item],
    limits: BatchLimits,
    *,
    processors: Sequence[Processor] = (),
    metrics: NullMetrics | None = None,
    more_sinks: Sequence[RecordingSink] = (),
    chunk: int = 1,
) -> tuple[list[str], RecordingSink, ListSource]:
    log: list[str] = []
    source, sink = ListSource(items, log, chunk), RecordingSink("kafka", log)
    coordinator = Coordinator(
        source=source,
        sinks=[sink, *more_sinks],
        processors=processors,
        limits=limits,
        commit_policy="required",
        checkpoints=MemoryStore(log),
        metrics=metrics or NullMetrics(),
    )
    asyncio.run(coordinator.run())
    return log, sink, source


def test_batches_end_at_transaction_boundaries() -> None:
    items = [*_transaction(0x10, 3), *_transaction(0x20, 3), *_transaction(0x30, 3)]
    _, sink, _ = _run(items, BatchLimits(max_events=4, max_bytes=10**9, max_delay=5))
    # 4 events reached after the 2nd transaction began: the cut falls after the first one.
    assert sink.batches[0] == ["0/10:0", "0/10:1", "0/10:2"]
    assert all(batch[-1].endswith(":2") for batch in sink.batches)
    assert sum(len(batch) for batch in sink.batches) == 9


def test_a_chunk_bigger_than_a_batch_is_split_at_the_same_boundaries() -> None:
    items = [*_transaction(0x10, 3), *_transaction(0x20, 3), *_transaction(0x30, 3)]
    for chunk in (1, 4, len(items)):
        _, sink, source = _run(items, BatchLimits(max_events=4, max_bytes=10**9, max_delay=5), chunk=chunk)
        assert all(len(batch) <= 4 for batch in sink.batches)
        assert [entry for batch in sink.batches for entry in batch] == [
            f"{event.source.position}:{event.index}" for event in items
        ]
        assert source.acknowledged[-1] == Checkpoint("0/30", -1, 0x31)


def test_checkpoint_is_saved_after_the_write_and_before_the_acknowledgement() -> None:
    log, _, source = _run(_transaction(0x10, 2), BatchLimits(max_events=100, max_delay=0.01))
    assert log == ["kafka wrote 2", "save 0/10:-1", "ack 0/10:-1"]
    assert source.acknowledged == [Checkpoint("0/10", -1, 0x11)]


def test_a_transaction_larger_than_the_limits_streams_in_parts_with_its_index() -> None:
    _, sink, source = _run(_transaction(0x10, 10), BatchLimits(max_events=4, max_delay=5))
    assert [len(batch) for batch in sink.batches] == [4, 4, 2]
    assert [(c.index, c.complete) for c in source.acknowledged] == [(3, False), (7, False), (-1, True)]


def test_progress_markers_advance_the_checkpoint_without_writes() -> None:
    _, sink, source = _run([Progress("0/50", 0x51)], BatchLimits(max_delay=0.01))
    assert sink.batches == []
    assert source.acknowledged == [Checkpoint("0/50", -1, 0x51)]


def test_dropped_events_are_counted_and_still_acknowledged() -> None:
    metrics = NullMetrics()
    processors = [FilterProcessor("only-deletes", ops=[Op.DELETE], tables=None)]
    _, sink, source = _run(
        _transaction(0x10, 3), BatchLimits(max_delay=0.01), processors=processors, metrics=metrics
    )
    assert sink.batches == []
    assert metrics.dropped == 3
    assert source.acknowledged[-1].position == "0/10"


def test_a_slow_optional_sink_does_not_hold_back_the_acknowledgement() -> None:
    log: list[str] = []
    slow = RecordingSink("cache", log, required=False, delay=0.5)
    _, _, source = _run(_transaction(0x10, 2), BatchLimits(max_delay=0.01), more_sinks=[slow])
    assert source.acknowledged, "the required sink alone decides the checkpoint"
