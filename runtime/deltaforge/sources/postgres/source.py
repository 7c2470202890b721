"""The PostgreSQL source: pgoutput over a logical replication slot, as ChangeEvents in commit order.

Position rules (see notes/lessons.md): events carry the commit LSN of their transaction and their
index inside it; the slot is confirmed only up to the end LSN of the last transaction every
required sink acknowledged. A replayed transaction that was delivered in part is skipped up to
the checkpoint's index, so a huge transaction is neither lost nor duplicated beyond one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from deltaforge.backoff import SOURCE_RECONNECT
from deltaforge.events import ChangeEvent, Checkpoint, Op, Progress, Row, SourceInfo, event_ids
from deltaforge.protocols import Emit, Item, SourceMetrics
from deltaforge.sources.errors import SourceConfigError, SourceUnavailable
from deltaforge.sources.patterns import TablePatterns
from deltaforge.sources.postgres import pgoutput
from deltaforge.sources.postgres.connection import PostgresSettings, connect
from deltaforge.sources.postgres.preflight import preflight
from deltaforge.sources.postgres.resume import delivered_through
from deltaforge.sources.postgres.rows import text_row
from deltaforge.sources.postgres.state import OpenTransaction, Table
from deltaforge.sources.postgres.stream import (
    KEEPALIVE,
    XLOG_DATA,
    ReplicationStream,
    SilenceWatch,
    SlotInUse,
    format_lsn,
)
from deltaforge.sources.postgres.values import convert_row, converter_for

HEARTBEAT_PREFIX = "deltaforge.heartbeat"
_INSERT = ord("I")
_NEW_TUPLE = ord("N")
_RELATION_ID = struct.Struct(">I")
STATUS_INTERVAL = 10.0  # seconds between standby status updates when nothing changes
# How long a reconnect waits for the server to end our previous walsender, which may hold the slot
# until wal_sender_timeout (default 60 s) when the old connection died without a goodbye.
SLOT_RELEASE_WAIT = 150.0


@dataclass(frozen=True)
class PostgresSourceConfig:
    settings: PostgresSettings
    patterns: TablePatterns
    slot: str
    create_slot: bool
    publication: str
    create_publication: bool
    heartbeat_interval: float  # 0 disables heartbeats

    @property
    def source_id(self) -> str:
        """The identity of the change stream in event ids: the database and the slot, not the host."""
        return f"pg:{self.settings.database}:{self.slot}"


class PostgresSource:
    name = "postgres"

    def __init__(
        self,
        config: PostgresSourceConfig,
        *,
        resume: Checkpoint | None,
        metrics: SourceMetrics,
        log: Callable[..., None],
    ) -> None:
        self.config, self._resume, self._metrics, self._log = config, resume, metrics, log
        self._stopping = asyncio.Event()
        self._tables: dict[int, Table] = {}
        self._tx: OpenTransaction | None = None
        self._out: list[Item] = []  # items of the current network read, not yet handed over
        self._received_lsn = 0
        self._acked_lsn = 0
        self._emitted_lsn = 0  # the end of the last transaction or heartbeat handed over
        self._server_end = 0  # the WAL end of the server's last keepalive: all it has sent
        self._reported_lsn = -1
        self._health: tuple[bool, str] = (False, "connecting")
        self.last_event_monotonic = time.monotonic()
        self.position: str | None = None

    # --- the Source protocol ---------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        return self._health

    async def stop(self) -> None:
        self._stopping.set()

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        if checkpoint.lsn > self._acked_lsn and checkpoint.complete:
            self._acked_lsn = checkpoint.lsn
        self._resume = checkpoint

    async def run(self, emit: Emit) -> None:
        config = self.config
        plan = await preflight(
            config.settings,
            config.patterns,
            slot=config.slot,
            create_slot=config.create_slot,
            publication=config.publication,
            create_publication=config.create_publication,
        )
        self._log(
            "source_ready",
            tables=[f"{schema}.{table}" for schema, table in plan.tables],
            slot=config.slot,
            slot_created=plan.slot_created,
            publication=config.publication,
        )
        attempt, streamed, slot_busy_since = 0, False, None
        while not self._stopping.is_set():
            try:
                await self._stream(emit)
                return
            except SlotInUse as error:
                now = time.monotonic()
                slot_busy_since = slot_busy_since or now
                if not streamed or now - slot_busy_since > SLOT_RELEASE_WAIT:
                    self._health = (False, str(error))
                    raise
                failure: Exception = error
            except SourceConfigError as error:
                self._health = (False, str(error))
                raise
            except (SourceUnavailable, psycopg.Error, OSError) as error:
                failure = error
            if self._stopping.is_set():
                return
            if self._health[0]:  # it had been streaming: a fresh outage starts a fresh backoff
                attempt, streamed, slot_busy_since = 0, True, None
            self._health = (False, f"reconnecting: {failure}")
            self._metrics.source_reconnect()
            delay = SOURCE_RECONNECT.delay(attempt)
            self._log(
                "source_reconnecting", level="warning", error=str(failure), retry_in_seconds=round(delay, 2)
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    # --- streaming -----------------------------------------------------------------------
    async def _stream(self, emit: Emit) -> None:
        connection = await connect(self.config.settings, replication=True)
        heartbeat: asyncio.Task[None] | None = None
        feedback: asyncio.Task[None] | None = None
        stream: ReplicationStream | None = None
        try:
            stream = ReplicationStream(connection)
            await stream.start(self.config.slot, self.config.publication)
            self._health = (True, "streaming")
            self._tables.clear()
            self._tx = None
            self._out = []  # what a broken connection left behind is read again from the slot
            decoder = pgoutput.PgOutputDecoder()
            if self.config.heartbeat_interval > 0:
                heartbeat = asyncio.create_task(self._heartbeats(), name="postgres-heartbeat")
            feedback = asyncio.create_task(self._feedback(stream), name="postgres-feedback")
            last_status = 0.0
            silence = SilenceWatch(limit=3 * STATUS_INTERVAL)
            while not self._stopping.is_set():
                frames = await stream.read(wait_seconds=0.2)
                now = time.monotonic()
                silence.observe(bool(frames), now)
                if self._take(frames, decoder):
                    last_status = 0.0
                out, self._out = self._out, []
                await emit(out)
                # The channel rarely makes us wait: yield so the coordinator drains while we read on.
                await asyncio.sleep(0)
                if self._flushed() != self._reported_lsn or now - last_status > STATUS_INTERVAL:
                    await self._report(stream)
                    last_status = now
        finally:
            for task in (heartbeat, feedback):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if stream is not None and stream.streaming and self._flushed() != self._reported_lsn:
                # On stop the coordinator acknowledges its last batch and then cancels this task,
                # before the loop above reports it: report it now, or the next start replays it.
                with contextlib.suppress(SourceUnavailable, psycopg.Error, OSError):
                    await self._report(stream)
            await connection.close()

    def _take(self, frames: list[memoryview], decoder: pgoutput.PgOutputDecoder) -> bool:
        """Decode `frames` into `self._out`; True when the server asked for an answer."""
        decode, handle, insert, header = decoder.decode, self._handle, self._insert, XLOG_DATA.size
        last_data, reply_requested = None, False
        for frame in frames:
            kind = frame[0]
            if kind == 0x77:  # 'w' XLogData
                last_data = frame
                body = bytes(frame[header:])
                if body[0] != _INSERT or decoder.in_stream or not insert(body, len(frame)):
                    handle(decode(body), len(frame))
            elif kind == 0x6B:  # 'k' keepalive: the server's WAL end, all it has sent
                _, wal_end, _, reply = KEEPALIVE.unpack_from(frame)
                self._server_end = max(self._server_end, wal_end)
                reply_requested = reply_requested or bool(reply)
        if last_data is not None:  # frames arrive in WAL order: the last one ends furthest
            self._received_lsn = max(self._received_lsn, XLOG_DATA.unpack_from(last_data)[2])
        return reply_requested

    async def _feedback(self, stream: ReplicationStream) -> None:
        """Standby status updates even while the reader is blocked on a full queue (a sink is
        down): without them the server ends the connection after wal_sender_timeout, and the
        reconnect replays everything since the last confirmed position."""
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            with contextlib.suppress(SourceUnavailable, psycopg.Error, OSError):
                await self._report(stream, reply=True)

    async def _report(self, stream: ReplicationStream, *, reply: bool = False) -> None:
        """A standby status update confirming `_flushed()`."""
        flushed = self._flushed()
        await stream.send_status(written=max(self._received_lsn, flushed), flushed=flushed, reply=reply)
        self._reported_lsn = flushed

    def _flushed(self) -> int:
        """The position to confirm: what the sinks acknowledged; and when nothing is in flight (no
        transaction open, everything handed over acknowledged), all the server has sent, since the
        WAL after the last delivered transaction produced no change (aborted transactions, other
        databases, unpublished tables). A walsender ends only once its client confirmed all it
        sent: without this, a fast shutdown of the server waits for us forever."""
        if self._tx is None and not self._out and self._acked_lsn >= self._emitted_lsn:
            return max(self._acked_lsn, self._server_end)
        return self._acked_lsn

    async def _heartbeats(self) -> None:
        """A non-transactional logical message in our database now and then, so an idle slot advances."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                connection = await connect(self.config.settings)
                try:
                    await connection.execute(
                        "SELECT pg_logical_emit_message(false, %s, '')", [HEARTBEAT_PREFIX]
                    )
                finally:
                    await connection.close()
            except (SourceUnavailable, SourceConfigError, psycopg.Error, OSError) as error:
                self._log("heartbeat_failed", level="warning", error=str(error))

    def _handle(self, message: pgoutput.Message, size: int) -> None:
        """Turn one message into items appended to `self._out`, which `_stream` hands over after
        each network read."""
        if isinstance(message, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):
            self._change(message, size)
        elif isinstance(message, pgoutput.Begin):
            position = format_lsn(message.final_lsn)
            skip = delivered_through(self._resume, message.final_lsn)
            self._tx = OpenTransaction(
                position,
                message.commit_ts_us,
                str(message.xid),
                skip,
                event_ids(self.config.source_id, position),
            )
        elif isinstance(message, pgoutput.Commit):
            self._commit(message)
        elif isinstance(message, pgoutput.Relation):
            self._relation(message)
        elif isinstance(message, pgoutput.Truncate):
            for relation_id in message.relation_ids:
                self._add_event(Op.TRUNCATE, self._tables.get(relation_id), None, None, None, size=size)
        elif (
            isinstance(message, pgoutput.LogicalMessage)
            and not message.transactional
            and message.prefix == HEARTBEAT_PREFIX
            and self._tx is None
            # A replay after a reconnect resends old heartbeats too: the checkpoint covers them,
            # and a checkpoint at one would move the resume point back.
            and delivered_through(self._resume, message.lsn) < 0
        ):
            self._out.append(Progress(format_lsn(message.lsn), message.lsn))
            self._emitted_lsn = max(self._emitted_lsn, message.lsn)

    def _relation(self, relation: pgoutput.Relation) -> None:
        schema = relation.namespace or "pg_catalog"
        self._tables[relation.relation_id] = Table(
            relation_id=relation.relation_id,
            schema=schema,
            name=relation.name,
            columns=[column.name for column in relation.columns],
            converters=[converter_for(column.type_oid) for column in relation.columns],
            key_positions=[index for index, column in enumerate(relation.columns) if column.is_key],
            wanted=self.config.patterns.matches(schema, relation.name),
        )

    def _insert(self, body: bytes, size: int) -> bool:
        """An Insert the fast path can take (see `rows.text_row`); False leaves it to `_handle`."""
        table = self._tables.get(_RELATION_ID.unpack_from(body, 1)[0])
        if table is None or not table.wanted or self._tx is None or body[5] != _NEW_TUPLE:
            return False
        row = text_row(body, 6, table.columns, table.converters)
        if row is None:
            return False
        self._add_event(Op.CREATE, table, None, row, table.key_of(row), size=size)
        return True

    def _change(self, message: pgoutput.Insert | pgoutput.Update | pgoutput.Delete, size: int) -> None:
        table = self._tables.get(message.relation_id)
        if table is None:
            raise SourceUnavailable(
                f"a change for relation {message.relation_id} arrived before its Relation message"
            )
        if not table.wanted:
            self._skip_index()
            return
        before: Row | None = None
        after: Row | None = None
        if type(message) is pgoutput.Insert:
            op, after = Op.CREATE, convert_row(table.columns, table.converters, message.new)
        elif isinstance(message, pgoutput.Update):
            op, after = Op.UPDATE, convert_row(table.columns, table.converters, message.new)
            before = None if message.old is None else self._old_row(table, message.old, message.old_is_key)
        else:
            assert isinstance(message, pgoutput.Delete)
            op, before = Op.DELETE, self._old_row(table, message.old, message.old_is_key)
        key = table.key_of(after if after is not None else before)
        self._add_event(op, table, before, after, key, size=size)

    def _skip_index(self) -> None:
        """Changes of tables we do not stream still take an index, so event ids never depend on
        which tables a pipeline selects."""
        if self._tx is not None:
            self._tx.index += 1

    @staticmethod
    def _old_row(table: Table, values: pgoutput.TupleValues, only_key: bool) -> Row:
        """A 'K' old tuple holds real values only in key columns: the others are not fake nulls."""
        row = convert_row(table.columns, table.converters, values)
        if only_key:
            return {table.columns[index]: row[table.columns[index]] for index in table.key_positions}
        return row

    def _add_event(
        self,
        op: Op,
        table: Table | None,
        before: Row | None,
        after: Row | None,
        key: Row | None,
        *,
        size: int,
    ) -> None:
        tx = self._tx
        if tx is None or table is None or not table.wanted:
            self._skip_index()
            return
        index = tx.index
        tx.index += 1
        if index <= tx.skip_through:
            return
        info = tx.infos.get(table.relation_id)
        if info is None:
            info = tx.infos[table.relation_id] = SourceInfo(
                "postgres", self.config.source_id, self.config.settings.database, table.schema, table.name,
                tx.position, tx.commit_ts_us, tx.xid,
            )  # fmt: skip
        # Positional: keyword arguments cost a measurable share of the per-event budget.
        event = ChangeEvent(op, info, before, after, key, index, False, tx.event_ids(index), 0, size)
        tx.counts[table.path] = tx.counts.get(table.path, 0) + 1
        if tx.held is not None:
            self._out.append(tx.held)
        tx.held = event

    def _commit(self, commit: pgoutput.Commit) -> None:
        tx, self._tx = self._tx, None
        if tx is None:
            return
        if tx.held is not None:
            tx.held.last_in_tx, tx.held.lsn = True, commit.end_lsn
            self._out.append(tx.held)
            self.last_event_monotonic = time.monotonic()
            for table, count in tx.counts.items():
                self._metrics.source_events(table, count)
            self._metrics.set_source_lag(max(time.time() - commit.commit_ts_us / 1_000_000, 0.0))
        elif tx.skip_through != sys.maxsize:  # a replay the checkpoint covers must not move it back
            self._out.append(Progress(tx.position, commit.end_lsn))
        self._emitted_lsn = max(self._emitted_lsn, commit.end_lsn)
        self.position = tx.position
