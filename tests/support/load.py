"""A steady write load for fault tests: small multi-row transactions from a background thread.

Faults are injected while the source keeps committing, because that is when positions, batches
and acknowledgements are in flight. The rows follow the verifier's contract
(tests/support/verify.py): a key `id` that only grows (one counter across all tables), and a
`version` that is 0 on insert and incremented by each update, so the versions every row went
through follow from the table's final state.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


def create_load_table(connection: psycopg.Connection[Any], table: str) -> None:
    connection.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, version int NOT NULL DEFAULT 0, payload text NOT NULL)"
        ).format(sql.Identifier(table))
    )


def committed_rows(dsn: str, tables: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of `tables` as the verifier compares it with the delivered `after` images."""
    result: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(dsn) as connection:
        for table in tables:
            rows = connection.execute(
                sql.SQL("SELECT id, version, payload FROM {} ORDER BY id").format(sql.Identifier(table))
            ).fetchall()
            result[table] = [
                {"id": key, "version": version, "payload": payload} for key, version, payload in rows
            ]
    return result


@dataclass
class LoadStats:
    transactions: int = 0
    inserts: int = 0
    updates: int = 0
    large_transactions: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return self.inserts + self.updates

    def __str__(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        return (
            f"{self.transactions} transactions ({self.large_transactions} large), {self.inserts} inserts, "
            f"{self.updates} updates in {self.seconds:.1f} s ({rate:.0f} rows/s)"
        )


class LoadWriter:
    """Inserts (and sometimes updates) rows in small transactions spanning the tables, paced to
    `rows_per_second`; every `large_every` seconds one transaction of `large_rows` rows, larger
    than a batch, so the pipeline also has to cut a transaction and resume inside it.

    A database error stops the writer; `stop()` re-raises it, so a test never verifies a load
    that silently ended early.
    """

    def __init__(
        self,
        dsn: str,
        tables: Sequence[str],
        *,
        seed: int,
        rows_per_second: float = 300,
        large_every: float = 0.0,
        large_rows: int = 250,
    ) -> None:
        self.dsn, self.tables = dsn, list(tables)
        self.rows_per_second, self.large_every, self.large_rows = rows_per_second, large_every, large_rows
        self.stats = LoadStats()
        self._rng = random.Random(seed)
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
        try:
            with psycopg.connect(self.dsn) as connection:
                self._write(connection)
        except BaseException as error:
            self._error = error
        finally:
            self.stats.seconds = time.monotonic() - started

    def _write(self, connection: psycopg.Connection[Any]) -> None:
        rng, next_id = self._rng, 1
        recent: deque[tuple[str, int]] = deque(maxlen=500)
        inserts = {table: sql.SQL("INSERT INTO {} (id, payload) VALUES (%s, %s)").format(sql.Identifier(table))
                   for table in self.tables}  # fmt: skip
        updates = {
            table: sql.SQL("UPDATE {} SET version = version + 1, payload = %s WHERE id = %s").format(
                sql.Identifier(table)
            )
            for table in self.tables
        }
        next_large = time.monotonic() + self.large_every if self.large_every else float("inf")
        while not self._stopping.is_set():
            began = time.monotonic()
            large = began >= next_large
            count = self.large_rows if large else rng.randint(1, 6)
            with connection.cursor() as cursor:
                for _ in range(count):
                    table = rng.choice(self.tables)
                    cursor.execute(inserts[table], [next_id, f"{table}-{next_id}-{rng.getrandbits(64):x}"])
                    recent.append((table, next_id))
                    next_id += 1
                changed = rng.sample(list(recent), k=min(len(recent), rng.randint(0, 2)))
                for table, key in changed:
                    cursor.execute(updates[table], [f"{table}-{key}-u{rng.getrandbits(64):x}", key])
            connection.commit()
            with self._lock:
                self.stats.transactions += 1
                self.stats.inserts += count
                self.stats.updates += len(changed)
                self.stats.large_transactions += large
            if large:
                next_large = time.monotonic() + self.large_every
            pause = (count + len(changed)) / self.rows_per_second - (time.monotonic() - began)
            if pause > 0:
                self._stopping.wait(pause)
