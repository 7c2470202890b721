"""The streaming replication protocol on a psycopg connection: START_REPLICATION, CopyData frames,
keepalives and standby status updates, all non-blocking on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass

import psycopg
from psycopg import pq, sql

from deltaforge.sources.errors import SourceConfigError, SourceUnavailable

XLOG_DATA = struct.Struct(">cQQq")  # 'w', WAL start, WAL end, server time
KEEPALIVE = struct.Struct(">cQqB")  # 'k', WAL end, server time, reply requested
STATUS = struct.Struct(">cQQQqB")  # 'r', written, flushed, applied, client time, reply requested
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
OBJECT_IN_USE = "55006"


class SlotInUse(SourceConfigError):
    """Another connection streams from the slot. At start that is another reader; after a lost
    connection it may be our own previous walsender, which the server ends only at
    wal_sender_timeout (the source waits for that, bounded)."""


class SlotLostError(SourceConfigError):
    """The server invalidated the slot: the changes it held are gone, so never resume silently."""

    def __init__(self, slot: str) -> None:
        super().__init__(
            f"replication slot '{slot}' was invalidated by PostgreSQL (it retained more WAL than "
            "max_slot_wal_keep_size allows): the changes it held are lost and it cannot be read. "
            f"Drop it (SELECT pg_drop_replication_slot('{slot}')) and start again from a re-snapshot "
            "of the tables; raise max_slot_wal_keep_size or keep the pipeline running to avoid this"
        )


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def pg_now_us() -> int:
    return time.time_ns() // 1000 - PG_EPOCH_US


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ReplicationStream:
    """One logical replication stream; the caller owns (and closes) the connection."""

    def __init__(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._pgconn = connection.pgconn
        self._loop = asyncio.get_running_loop()
        self.streaming = False  # START_REPLICATION succeeded: status updates may be sent

    async def _wait(self, *, writable: bool = False, seconds: float | None = None) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()
        fd = self._pgconn.socket
        watch, unwatch = (
            (self._loop.add_writer, self._loop.remove_writer)
            if writable
            else (self._loop.add_reader, self._loop.remove_reader)
        )
        watch(fd, _resolve, ready)
        try:
            await asyncio.wait_for(ready, seconds)
        except TimeoutError:
            pass
        finally:
            unwatch(fd)

    async def start(self, slot: str, publication: str) -> None:
        """START_REPLICATION from the slot's confirmed position (0/0 lets the server choose it)."""
        command = sql.SQL(
            "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names {}, messages 'true')"
        ).format(sql.Identifier(slot), sql.Literal(sql.Identifier(publication).as_string(None)))
        pgconn = self._pgconn
        pgconn.nonblocking = 1
        pgconn.send_query(command.as_string(None).encode())
        while pgconn.flush() == 1:
            await self._wait(writable=True)
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            await self._wait(seconds=5)
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = (pgconn.error_message or b"").decode(errors="replace").strip()
            state = result.error_field(pq.DiagnosticField.SQLSTATE) if result is not None else None
            if state == OBJECT_IN_USE.encode():
                raise SlotInUse(
                    f"{message}: another process reads slot '{slot}'; one slot serves one pipeline worker. "
                    "Stop the other reader or give this pipeline its own spec.source.postgres.slot.name"
                )
            if "has been invalidated" in message:
                raise SlotLostError(slot)
            raise SourceUnavailable(f"START_REPLICATION failed: {message}")
        self.streaming = True

    async def read(self, *, wait_seconds: float, limit: int = 2000) -> list[memoryview]:
        """The CopyData frames available now (at most `limit`), waiting up to `wait_seconds` for the first."""
        pgconn = self._pgconn
        frames: list[memoryview] = []
        waited = False
        while len(frames) < limit:
            size, data = pgconn.get_copy_data(1)
            if size > 0:
                frames.append(data)
                continue
            if size == 0:
                if frames or waited:
                    return frames
                await self._wait(seconds=wait_seconds)
                waited = True
                pgconn.consume_input()
                continue
            message = (pgconn.error_message or b"").decode(errors="replace").strip()
            raise SourceUnavailable(f"the replication stream ended: {message or 'server closed the stream'}")
        return frames

    async def send_status(self, *, written: int, flushed: int, reply: bool = False) -> None:
        """Standby status update: the server may recycle WAL up to `flushed` (our acknowledged LSN).

        `reply` asks the server to answer at once with a keepalive: proof that the connection lives.
        """
        pgconn = self._pgconn
        pgconn.put_copy_data(STATUS.pack(b"r", written, flushed, flushed, pg_now_us(), 1 if reply else 0))
        while pgconn.flush() == 1:
            await self._wait(writable=True, seconds=5)


@dataclass
class SilenceWatch:
    """Notices a dead or stalled connection: reading for `limit` seconds without one message, while
    every status update asks the server to answer (`send_status(reply=True)`), means the network
    drops packets or the server froze; waiting for TCP to give up takes many minutes.

    Counts only time spent reading: while the reader waits on a full channel, the server's
    answers pile up unread and are no sign of a dead connection."""

    limit: float  # seconds
    silent_since: float | None = None

    def observe(self, received: bool, now: float) -> None:
        if received:
            self.silent_since = None
        elif self.silent_since is None:
            self.silent_since = now
        elif now - self.silent_since > self.limit:
            raise SourceUnavailable(
                f"no message from the server for {now - self.silent_since:.0f} s although asked to "
                "answer: the connection is dead or stalled"
            )
