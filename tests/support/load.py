"""A steady write load for fault tests: small multi-row transactions from a background thread.

Faults are injected while the source keeps committing, because that is when positions, batches
and acknowledgements are in flight. The rows follow the verifier's contract
(tests/support/verify.py): a key `id` that only grows (one counter across all tables), and a
`version` that is 0 on insert and incremented by each update, so the versions every row went
through follow from the table's final state. The writer speaks DB-API 2.0, so the same load runs
on PostgreSQL (`postgres_target`) and MariaDB (`tests.support.mysql_load.mariadb_target`).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class LoadTarget:
    """How the load reaches one database: `connect` returns a DB-API connection with autocommit
    off (psycopg or PyMySQL, both `%s` placeholders), `quote` makes a table name an identifier,
    and `lost` are the errors that mean the server or the connection went away."""

    connect: Callable[[], Any]
    quote: Callable[[str], str]
    lost: tuple[type[Exception], ...]


def postgres_target(dsn: str) -> LoadTarget:
    return LoadTarget(
        connect=lambda: psycopg.connect(dsn),
        quote=lambda name: '"' + name.replace('"', '""') + '"',
        lost=(psycopg.OperationalError,),
    )


def create_load_table(connection: psycopg.Connection[Any], table: str) -> None:
    connection.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, version int NOT NULL DEFAULT 0, payload text NOT NULL)"
        ).format(sql.Identifier(table))
    )


def committed_rows(target: LoadTarget, tables: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of `tables` as the verifier compares it with the delivered `after` images."""
    result: dict[str, list[dict[str, Any]]] = {}
    with (
        contextlib.closing(target.connect()) as connection,
        contextlib.closing(connection.cursor()) as cursor,
    ):
        for table in tables:
            cursor.execute(f"SELECT id, version, payload FROM {target.quote(table)} ORDER BY id")
            result[table] = [
                {"id": key, "version": version, "payload": payload}
                for key, version, payload in cursor.fetchall()
            ]
    return result


@dataclass
class LoadStats:
    transactions: int = 0  # committed (the commit returned)
    inserts: int = 0
    updates: int = 0
    large_transactions: int = 0
    interrupted: int = 0  # transactions cut off by a lost connection: committed or not, unknown
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.inserts + self.updates

    def __str__(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        interrupted = f", {self.interrupted} interrupted by outages" if self.interrupted else ""
        return (
            f"{self.transactions} transactions ({self.large_transactions} large{interrupted}), "
            f"{self.inserts} inserts, {self.updates} updates in {self.seconds:.1f} s ({rate:.0f} rows/s)"
        )


class LoadWriter:
    """Inserts (and sometimes updates) rows in small transactions spanning the tables, paced to
    `rows_per_second`; every `large_every` seconds one transaction of `large_rows` rows, larger
    than a batch, so the pipeline also has to cut a transaction and resume inside it.

    A database error stops the writer; `stop()` re-raises it, so a test never verifies a load
    that silently ended early. With `survive_outages` (tests that restart the server), a lost
    connection is not an error: the writer reconnects and goes on. A transaction cut off that way
    may or may not have committed; that is fine, since the verifier compares the delivered
    changes with the rows the server holds afterwards, and ids are never reused.
    """

    def __init__(
        self,
        target: LoadTarget,
        tables: Sequence[str],
        *,
        seed: int,
        rows_per_second: float = 300,
        large_every: float = 0.0,
        large_rows: int = 250,
        survive_outages: bool = False,
    ) -> None:
        self.target, self.tables = target, list(tables)
        self.rows_per_second, self.large_every, self.large_rows = rows_per_second, large_every, large_rows
        self.survive_outages = survive_outages
        self.stats = LoadStats()
        self._rng = random.Random(seed)
        self._next_id = 1
        self._recent: deque[tuple[str, int]] = deque(maxlen=500)
        self._inserts = {table: f"INSERT INTO {target.quote(table)} (id, payload) VALUES (%s, %s)"
                         for table in self.tables}  # fmt: skip
        self._updates = {table: f"UPDATE {target.quote(table)} SET version = version + 1, payload = %s WHERE id = %s"
                         for table in self.tables}  # fmt: skip
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="load-writer", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> LoadWriter:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def rows_so_far(self) -> int:
        with self._lock:
            return self.stats.rows

    def stop(self, timeout: float = 30) -> LoadStats:
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the load writer did not stop within {timeout} s")
        if self._error is not None:
            raise AssertionError(f"the load writer failed: {self._error!r}") from self._error
        return self.stats

    def _run(self) -> None:
        started = time.monotonic()
        next_large = started + self.large_every if self.large_every else float("inf")
        connection: Any = None
        try:
            while not self._stopping.is_set():
                try:
                    if connection is None:
                        connection = self.target.connect()
                    began = time.monotonic()
                    large = began >= next_large
                    rows = self._transaction(connection, large)
                    if large:
                        next_large = time.monotonic() + self.large_every
                    pause = rows / self.rows_per_second - (time.monotonic() - began)
                    if pause > 0:
                        self._stopping.wait(pause)
                except self.target.lost:
                    if not self.survive_outages:
                        raise
                    if connection is not None:
                        with self._lock:
                            self.stats.interrupted += 1
                        with contextlib.suppress(*self.target.lost):
                            connection.close()
                        connection = None
                    self._stopping.wait(0.2)  # the server is restarting: try again shortly
        except BaseException as error:
            self._error = error
        finally:
            if connection is not None:
                with contextlib.suppress(*self.target.lost):
                    connection.close()
            self.stats.seconds = time.monotonic() - started

    def _transaction(self, connection: Any, large: bool) -> int:
        """Insert rows (`large_rows` of them for a large transaction) and update up to two recent
        ones in one transaction; returns the number of rows written. Ids are taken before the
        commit, so a transaction whose fate is unknown never makes the next one reuse its ids."""
        rng = self._rng
        inserts = self.large_rows if large else rng.randint(1, 6)
        with connection.cursor() as cursor:
            for _ in range(inserts):
                table, key = rng.choice(self.tables), self._next_id
                self._next_id += 1
                cursor.execute(self._inserts[table], [key, f"{table}-{key}-{rng.getrandbits(64):x}"])
                self._recent.append((table, key))
            changed = rng.sample(list(self._recent), k=min(len(self._recent), rng.randint(0, 2)))
            for table, key in changed:
                cursor.execute(self._updates[table], [f"{table}-{key}-u{rng.getrandbits(64):x}", key])
        connection.commit()
        with self._lock:
            self.stats.transactions += 1
            self.stats.inserts += inserts
            self.stats.updates += len(changed)
            self.stats.large_transactions += large
        return inserts + len(changed)
