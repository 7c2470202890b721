"""Records to ChangeEvents: transaction order, indexes, positions, and where to resume.

The same rules as the PostgreSQL source: every event of a transaction carries the transaction's
position and its index inside it; the last one is flagged `last_in_tx` (an event is held back
until we know whether another follows); a transaction with no captured rows becomes one
`Progress` so its position is still checkpointed; a replayed transaction skips the indexes at or
below the checkpoint's. Indexes count the captured rows only (rows of other tables are never
decoded), so changing `tables` changes the ids of transactions that touch both kinds of table.

The assembler also knows where to resume after a lost connection *without* replaying what it
already emitted: after the last committed transaction, or, in the middle of a transaction whose
first events were emitted, at that transaction's start, skipping them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deltaforge.events import ChangeEvent, Op, Progress, SourceInfo, event_ids
from deltaforge.protocols import Emit, Item, SourceMetrics
from deltaforge.sources.mysql.catalog import TableShape
from deltaforge.sources.mysql.position import BinlogPosition, GtidState, ResumePoint, Skip
from deltaforge.sources.mysql.records import Begin, Commit, Heartbeat, Rows, Truncate

PROGRESS_EVERY = 1.0  # seconds: how often a run of uncaptured transactions is checkpointed


@dataclass
class _Transaction:
    position: BinlogPosition
    text: str  # position.format(), shared by every event of the transaction
    timestamp: int
    skip_through: int
    index: int = 0
    emitted_through: int = -1
    held: ChangeEvent | None = None
    ids: Callable[[int], str] | None = None  # event ids, hashed once at the first captured change
    infos: dict[tuple[str, str], SourceInfo] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class Assembler:
    def __init__(
        self,
        source_id: str,
        *,
        gtids: GtidState | None,
        resume: ResumePoint,
        skip: Skip | None,
        metrics: SourceMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source_id, self._gtids, self._metrics, self._clock = source_id, gtids, metrics, clock
        self._resume, self._skip = resume, skip
        self._tx: _Transaction | None = None
        self._pending: str | None = None  # a Progress not sent yet
        self._last_sent = 0.0
        self.last_event_monotonic = time.monotonic()
        self.position: str | None = None  # the last position handed on

    def resume_point(self) -> tuple[ResumePoint, Skip | None]:
        """Where a new reader starts so that nothing emitted is emitted again; forgets the open
        transaction, which the new reader reads again."""
        tx, self._tx = self._tx, None
        if tx is not None and tx.emitted_through >= 0:
            self._skip = Skip(tx.position.identity, max(tx.emitted_through, tx.skip_through))
            return tx.position.before(), self._skip
        return self._resume, self._skip

    async def feed(self, record: object, emit: Emit) -> None:
        if isinstance(record, Rows):
            await self._rows(record, emit)
        elif isinstance(record, Begin):
            self._begin(record)
        elif isinstance(record, Commit):
            await self._commit(record, emit)
        elif isinstance(record, Truncate):  # a statement: one change without row images
            table = TableShape(record.schema, record.table, [], [], [], frozenset())
            await self._rows(Rows(table, Op.TRUNCATE, [(None, None)], 0), emit)
        elif isinstance(record, Heartbeat):
            self._metrics.source_activity()
            self._metrics.set_source_lag(0.0)

    async def idle(self, emit: Emit) -> None:
        """The reader is caught up: checkpoint the uncaptured transactions read so far."""
        if self._pending is not None and self._tx is None:
            await self._send_progress(emit)

    def _begin(self, record: Begin) -> None:
        gtids = self._gtids
        position = BinlogPosition(
            gtid=record.gtid if gtids is not None else None,
            prior=str(gtids) if gtids is not None else None,
            file=record.file,
            offset=record.start,
        )
        skip = self._skip
        through = skip.index if skip is not None and skip.identity == position.identity else -1
        self._tx = _Transaction(position, position.format(), record.timestamp, through)

    async def _rows(self, record: Rows, emit: Emit) -> None:
        """The changes of one rows record, handed on in one list: all but the last, which is held
        back until it is known whether the transaction ends with it."""
        tx = self._tx
        if tx is None:
            return
        shape, op, size = record.shape, record.op, record.size
        info = tx.infos.get((shape.schema, shape.table))
        if info is None:
            info = tx.infos[(shape.schema, shape.table)] = SourceInfo(
                "mysql", self.source_id, shape.schema, shape.schema, shape.table, tx.text,
                tx.timestamp * 1_000_000, tx.position.identity,
            )  # fmt: skip
        if tx.ids is None:
            tx.ids = event_ids(self.source_id, tx.position.identity)
        ids, key_of, skip_through = tx.ids, shape.key_of, tx.skip_through
        out: list[Item] = []
        held, first, index, through = tx.held, tx.index, tx.index, -1
        for before, after in record.rows:
            if index > skip_through:
                key = key_of(after if after is not None else before)
                # Positional: keyword arguments cost a measurable share of the per-event budget.
                event = ChangeEvent(op, info, before, after, key, index, False, ids(index), 0, size)
                if held is not None:
                    out.append(held)
                    through = held.index
                held = event
            index += 1
        tx.index, tx.held = index, held
        made = index - max(first, skip_through + 1)
        if made > 0:
            path = f"{shape.schema}.{shape.table}"
            tx.counts[path] = tx.counts.get(path, 0) + made
        if out:
            await emit(out)
            tx.emitted_through = through

    async def _commit(self, record: Commit, emit: Emit) -> None:
        tx, self._tx = self._tx, None
        if tx is None:
            return
        if self._gtids is not None and tx.position.gtid is not None:
            self._gtids.add(tx.position.gtid)
        self._resume = ResumePoint(
            str(self._gtids) if self._gtids is not None else None, record.file, record.end
        )
        self._skip = None
        if tx.held is not None:
            tx.held.last_in_tx = True
            await emit([tx.held])
            self._pending = None
            self._last_sent = self._clock()
            self.position = tx.text
            self.last_event_monotonic = time.monotonic()
            for table, count in tx.counts.items():
                self._metrics.source_events(table, count)
            self._metrics.set_source_lag(max(self._clock() - record.timestamp, 0.0))
            return
        self._pending = tx.text
        if self._clock() - self._last_sent >= PROGRESS_EVERY:
            await self._send_progress(emit)

    async def _send_progress(self, emit: Emit) -> None:
        assert self._pending is not None
        await emit([Progress(self._pending)])
        self.position, self._pending = self._pending, None
        self._last_sent = self._clock()
