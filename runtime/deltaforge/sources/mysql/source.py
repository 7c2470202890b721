"""The MySQL/MariaDB source: the row-based binlog as ChangeEvents in commit order.

Position rules (see notes/lessons.md): the checkpoint store is the only durable position (a
binlog has no slot); each event carries its transaction's position (`position.py`), and the
source starts from the checkpoint it is given, or, without one, from the server's current
position, which it emits at once as a `Progress` so that the first checkpoint pins it.

Faults: a lost connection (server restart, KILL, network, a read timeout) is retried with
exponential backoff and full jitter from the source's own position, without replaying what was
already emitted (`Assembler.resume_point`); every reconnect is counted. Two readers with one
server_id make the server drop one of them each time the other connects: after a few such drops
the source fails with a message naming `serverId`. A position the server no longer has is never
skipped: it fails with "position lost, re-snapshot required".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

import pymysql

from deltaforge.backoff import SOURCE_RECONNECT
from deltaforge.events import Checkpoint, Progress
from deltaforge.protocols import Emit, SourceMetrics
from deltaforge.sources.errors import SourceConfigError, SourceUnavailable
from deltaforge.sources.mysql.config import MysqlSourceConfig
from deltaforge.sources.mysql.connection import (
    ER_MASTER_FATAL_READING_BINLOG,
    error_code,
    error_text,
    is_duplicate_server_id,
    translate,
)
from deltaforge.sources.mysql.position import (
    BinlogPosition,
    GtidState,
    ResumePoint,
    Skip,
    is_mariadb_gtid,
    parse_gtid_state,
)
from deltaforge.sources.mysql.preflight import ServerFacts, preflight
from deltaforge.sources.mysql.reader import IDLE, BinlogReader
from deltaforge.sources.mysql.records import Connected, Failed
from deltaforge.sources.mysql.transactions import Assembler

DUPLICATE_LIMIT = 3  # drops for a duplicate server_id within DUPLICATE_WINDOW that make it fatal
DUPLICATE_WINDOW = 120.0
_RETRIED = (SourceUnavailable, pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError, EOFError)


class MysqlSource:
    name = "mysql"

    def __init__(
        self,
        config: MysqlSourceConfig,
        *,
        resume: Checkpoint | None,
        metrics: SourceMetrics,
        log: Callable[..., None],
    ) -> None:
        self.config, self._resume, self._metrics, self._log = config, resume, metrics, log
        self._stopping = asyncio.Event()
        self._health: tuple[bool, str] = (False, "connecting")
        self._assembler: Assembler | None = None
        self._reader: BinlogReader | None = None
        self._duplicates: deque[float] = deque()
        self._started = time.monotonic()
        self.acknowledged: Checkpoint | None = resume

    @property
    def last_event_monotonic(self) -> float:
        return self._assembler.last_event_monotonic if self._assembler is not None else self._started

    @property
    def position(self) -> str | None:
        return self._assembler.position if self._assembler is not None else None

    # --- the Source protocol ---------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        return self._health

    async def stop(self) -> None:
        self._stopping.set()
        if self._reader is not None:
            await self._reader.stop()

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        """Nothing to release on the server (a binlog has no slot): the checkpoint store holds it."""
        self.acknowledged = checkpoint

    async def run(self, emit: Emit) -> None:
        start, skip = self._start_point()
        checkpoint = self._resume.position if self._resume is not None else ""
        facts = await self._preflight(start, checkpoint)
        if facts is None:
            return  # stopped while the server was unreachable
        self._log(
            "source_ready", server=facts.version, gtid_mode=facts.gtid_mode, server_id=self.config.server_id,
            resume=checkpoint or None, current=facts.current.format(),
        )  # fmt: skip
        if start is None:
            start = facts.current.before()
            await emit([Progress(facts.current.format())])  # pins the start in the first checkpoint
        self._assembler = Assembler(
            self.config.source_id,
            gtids=self._gtids(start, facts),
            resume=start,
            skip=skip,
            metrics=self._metrics,
        )
        await self._stream_with_retries(emit, facts)

    # --- internals -----------------------------------------------------------------------
    async def _preflight(self, start: ResumePoint | None, checkpoint: str) -> ServerFacts | None:
        """Preflight, retried while the server is unreachable (it may be starting); a
        misconfiguration fails at once."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                return await asyncio.to_thread(preflight, self.config, start, checkpoint)
            except SourceConfigError as error:
                self._health = (False, str(error))
                raise
            except _RETRIED as error:
                delay = SOURCE_RECONNECT.delay(attempt)
                attempt += 1
                self._health = (False, f"connecting: {error_text(error)}")
                self._log(
                    "source_unavailable",
                    level="warning",
                    error=error_text(error),
                    retry_in_seconds=round(delay, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        return None

    def _start_point(self) -> tuple[ResumePoint | None, Skip | None]:
        if self._resume is None:
            return None, None
        return BinlogPosition.parse(self._resume.position).resume(self._resume.index)

    @staticmethod
    def _gtids(start: ResumePoint, facts: ServerFacts) -> GtidState | None:
        if start.gtid_state is None:
            return None
        state = start.gtid_state
        sample = state.split(",")[0]
        if sample and is_mariadb_gtid(sample) != facts.mariadb:
            kind = "MariaDB" if facts.mariadb else "MySQL"
            raise SourceConfigError(
                f"the checkpoint's GTID position ({state}) is not a {kind} GTID: the checkpoint belongs to another "
                "server; delete the pipeline's checkpoint to start from the current position"
            )
        return parse_gtid_state(state, mariadb=facts.mariadb)

    async def _stream_with_retries(self, emit: Emit, facts: ServerFacts) -> None:
        assembler = self._assembler
        assert assembler is not None
        attempt = 0
        while not self._stopping.is_set():
            start, _ = assembler.resume_point()
            reader = self._reader = BinlogReader(self.config, start, mariadb=facts.mariadb)
            reader.start()
            try:
                async for record in reader.records():
                    if record is IDLE:
                        await assembler.idle(emit)
                    elif isinstance(record, Connected):
                        attempt = 0
                        self._health = (True, "streaming")
                    elif isinstance(record, Failed):
                        raise record.error
                    else:
                        await assembler.feed(record, emit)
                    if self._stopping.is_set():
                        return
            except SourceConfigError as error:
                self._health = (False, str(error))
                raise
            except _RETRIED as error:
                if self._stopping.is_set():
                    return
                fatal = self._fatal(error)
                if fatal is not None:
                    self._health = (False, str(fatal))
                    raise fatal from error
                delay = SOURCE_RECONNECT.delay(attempt)
                attempt += 1
                self._health = (False, f"reconnecting: {error_text(error)}")
                self._metrics.source_reconnect()
                self._log(
                    "source_reconnecting",
                    level="warning",
                    error=error_text(error),
                    retry_in_seconds=round(delay, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            finally:
                await reader.stop()

    def _fatal(self, error: BaseException) -> SourceConfigError | None:
        """The errors a reconnect cannot fix, as the message a user needs."""
        code, text = error_code(error), error_text(error)
        if is_duplicate_server_id(error):
            now = time.monotonic()
            self._duplicates.append(now)
            while self._duplicates and now - self._duplicates[0] > DUPLICATE_WINDOW:
                self._duplicates.popleft()
            if len(self._duplicates) < DUPLICATE_LIMIT:
                return None
            return SourceConfigError(
                f"another binlog reader keeps connecting with server_id {self.config.server_id} (error {code}: {text}): "
                "two pipelines, or a pipeline and a replica, share it; give each a unique spec.source.mysql.serverId"
            )
        if code == ER_MASTER_FATAL_READING_BINLOG:
            return SourceConfigError(
                f"position lost, re-snapshot required: the server cannot send the binlog from the pipeline's position "
                f"(error {code}: {text}); delete the pipeline's checkpoint to start from the current position and "
                "re-load the tables"
            )
        if isinstance(error, pymysql.Error):
            translated = translate(error, self.config.settings)
            if isinstance(translated, SourceConfigError):
                return translated
        return None
