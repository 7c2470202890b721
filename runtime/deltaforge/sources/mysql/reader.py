"""The binlog reader: mysql-replication's synchronous BinLogStreamReader in a thread of its own,
handing records to the asyncio loop through a bounded queue.

- Backpressure: the queue is bounded; when the loop falls behind, the thread blocks on `put` and
  stops reading the socket, so memory stays flat and the server keeps the binlog.
- A dead connection is noticed: the server sends heartbeats on an idle stream
  (`@master_heartbeat_period`), and a read that sees neither an event nor a heartbeat for
  `read_timeout` seconds fails.
- No reconnect of the library's own: on a lost connection mysql-replication reconnects by itself
  from the GTID set it was *created* with, replaying everything since. Our connections turn a
  lost connection into `StreamLost` (not a PyMySQL error, so the library does not catch it); the
  thread ends, and the source builds a new reader from its own position.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import pymysql
from pymysqlreplication import BinLogStreamReader

from deltaforge.sources.errors import SourceUnavailable
from deltaforge.sources.mysql.catalog import JsonColumns
from deltaforge.sources.mysql.config import SYSTEM_SCHEMAS, MysqlSourceConfig
from deltaforge.sources.mysql.position import ResumePoint
from deltaforge.sources.mysql.records import Connected, Failed, Record, Rows
from deltaforge.sources.mysql.translate import EVENT_TYPES, Translator

CR_SERVER_GONE = 2006
CR_SERVER_LOST = 2013
QUEUE_BYTES: Final = 256 * 1024  # binlog bytes of the records waiting for the loop: ~32 full rows events
RECORD_BYTES: Final = 64  # what a record without rows (a BEGIN, a COMMIT) counts for in that bound
IDLE: Final = object()  # yielded by `records()` when the queue ran empty: the reader is caught up


class StreamLost(SourceUnavailable):
    """The binlog connection dropped or timed out; we reconnect from our own position."""


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection whose lost-connection errors escape mysql-replication's own reconnect."""

    def _read_packet(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._read_packet(*args, **kwargs)
        except pymysql.err.OperationalError as error:
            if error.args and error.args[0] in (CR_SERVER_GONE, CR_SERVER_LOST):
                raise StreamLost(f"binlog connection lost: {error.args[-1]}") from error
            raise


def stream_options(config: MysqlSourceConfig, start: ResumePoint, *, mariadb: bool) -> dict[str, Any]:
    """BinLogStreamReader's arguments for reading from `start`: the events we translate, the schemas
    the patterns name, server heartbeats. One place, so that bench/ reads the same stream as the
    source does when it measures the library's own ceiling."""
    gtid_mode = start.gtid_state is not None
    literal = config.literal_schemas()
    return {
        "connection_settings": config.settings.connect_kwargs(read_timeout=config.read_timeout),
        "server_id": config.server_id,
        "resume_stream": True,
        "blocking": True,
        "only_events": EVENT_TYPES,
        "filter_non_implemented_events": False,
        "auto_position": start.gtid_state if gtid_mode else None,
        "log_file": None if gtid_mode else start.file,
        "log_pos": None if gtid_mode else start.offset,
        "only_schemas": literal,
        "ignored_schemas": None if literal is not None else sorted(SYSTEM_SCHEMAS),
        "slave_heartbeat": config.server_heartbeat,
        "is_mariadb": mariadb,
        "enable_logging": False,
    }


class _RecordQueue(queue.Queue[Record]):
    """Bounded by the binlog bytes its records were decoded from, not by their number.

    A rows event holds up to 8 KiB of binlog (`binlog_row_event_max_size`): 20 wide rows or 200
    narrow ones, which take 5-10 times that once decoded. Counted in records, a bound that keeps
    single-row transactions (three records each) flowing held 50,000 narrow rows at a time; counted
    in bytes, both kinds are bounded alike. `_init`, `_qsize`, `_put` and `_get` are the hooks that
    the standard library's own variants of Queue override."""

    def _init(self, maxsize: int) -> None:
        self.queue: deque[Record] = deque()
        self.bytes = 0

    def _qsize(self) -> int:
        return self.bytes

    def _put(self, item: Record) -> None:
        self.queue.append(item)
        self.bytes += _bytes_of(item)

    def _get(self) -> Record:
        item = self.queue.popleft()
        self.bytes -= _bytes_of(item)
        return item


def _bytes_of(record: Record) -> int:
    return record.size * len(record.rows) if isinstance(record, Rows) else RECORD_BYTES


def _release(event: Any) -> None:
    """Break the library's reference cycle between an event and its packet once it is translated.

    Without it an event and its packet (a few KiB of binlog) wait for the cyclic garbage
    collector, which runs its full passes rarely while the channel holds many long-lived objects:
    at the peak of a catch-up of wide rows, 2,800 of them (26 MB) were waiting."""
    packet = getattr(event, "packet", None)
    if packet is not None:
        packet.event = None


class BinlogReader:
    """Reads the binlog from `start` in a daemon thread until `stop()` or an error."""

    def __init__(self, config: MysqlSourceConfig, start: ResumePoint, *, mariadb: bool) -> None:
        self.config, self.start_point, self.mariadb = config, start, mariadb
        self._queue = _RecordQueue(maxsize=QUEUE_BYTES)
        self._stopping = threading.Event()
        self._connections: list[pymysql.connections.Connection] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._waiting = False
        self._thread = threading.Thread(target=self._run, name="binlog-reader", daemon=True)

    # --- loop side -------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._thread.start()

    async def records(self) -> AsyncIterator[Record | object]:
        """Records in binlog order; `IDLE` whenever the queue is empty. Ends after a `Failed`."""
        assert self._wake is not None, "start() first"
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                yield IDLE
                self._waiting = True
                if self._queue.empty():
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):  # no task per wait, unlike wait_for
                            await self._wake.wait()
                self._waiting = False
                continue
            yield record
            if isinstance(record, Failed):
                return

    async def stop(self) -> None:
        """Ends the thread: wakes it from a blocked read (socket shutdown) or a full queue."""
        self._stopping.set()
        with self._lock:
            for connection in self._connections:
                sock = getattr(connection, "_sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10.0)

    # --- reader thread ---------------------------------------------------------------------
    def _connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        connection = _Connection(**kwargs)
        with self._lock:
            self._connections.append(connection)
        if self._stopping.is_set():
            connection.close()
            raise StreamLost("stopping")
        return connection

    def _put(self, record: Record) -> bool:
        """Queue `record`, blocking while the queue is full; False once stopping."""
        while not self._stopping.is_set():
            try:
                self._queue.put(record, timeout=0.5)
            except queue.Full:
                continue
            if self._waiting and self._loop is not None and self._wake is not None:
                # One wake per wait: with small transactions the loop drains faster than this
                # thread reads, and a wake per record (a write to the loop's self-pipe and a GIL
                # hand-off each) took more CPU than decoding.
                self._waiting = False
                with contextlib.suppress(RuntimeError):  # the loop is closing
                    self._loop.call_soon_threadsafe(self._wake.set)
            return True
        return False

    def _stream(self) -> BinLogStreamReader:
        options = stream_options(self.config, self.start_point, mariadb=self.mariadb)
        return BinLogStreamReader(**options, pymysql_wrapper=self._connect)

    def _run(self) -> None:
        stream: BinLogStreamReader | None = None
        try:
            stream = self._stream()
            translator = Translator(
                self.config.patterns.matches,
                JsonColumns(self._catalog_query(), mariadb=self.mariadb),
                mariadb=self.mariadb,
                file=self.start_point.file,
            )
            connected = False
            while not self._stopping.is_set():
                event = stream.fetchone()
                if event is None:
                    raise StreamLost("the server ended the binlog stream")
                if not connected:
                    connected = True
                    if not self._put(Connected()):
                        return
                records = translator.translate(event)
                _release(event)
                for record in records:
                    if not self._put(record):
                        return
        except BaseException as error:  # every failure goes to the loop, which decides
            if not self._stopping.is_set():
                self._put(Failed(error))
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            with self._lock:
                for connection in self._connections:
                    with contextlib.suppress(Exception):
                        connection.close()

    def _catalog_query(self) -> Callable[[str, tuple[str, ...]], list[tuple[Any, ...]]]:
        """Catalog lookups on a control connection of our own (UTC session), opened on first use."""
        holder: list[pymysql.connections.Connection] = []

        def query(sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
            if not holder:
                holder.append(self._connect(**self.config.settings.connect_kwargs(read_timeout=30.0)))
            with holder[0].cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())

        return query
