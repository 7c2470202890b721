"""The PostgreSQL side of a benchmark: a fresh database, the table of a shape, one slot per contender.

Order matters: the publication and the slots exist before the first row is written, and the
second slot is a copy of the first (`pg_copy_logical_replication_slot`), so every contender
decodes exactly the same change set from the same position. All rows are written (in
transactions of `tx_rows`) before any reader starts, so readers measure catch-up throughput, not
the writer.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql

from bench.procstat import ProcWatch
from bench.shapes import TABLE, Shape
from hack.stack.config import HOST, PG_ADMIN_PASSWORD, PG_ADMIN_USER, PG_CDC_PASSWORD, PG_CDC_USER

# Writes the rows server-side, COMMIT after each `tx_rows`, so neither round trips nor the client
# are the slow part, however small the transactions (1-row ones: about 11k/s here, against 6k/s
# for one round trip each). A procedure's COMMIT ends a real transaction: one per `tx_rows`.
WRITER = """
CREATE PROCEDURE bench_write(first_id bigint, last_id bigint, tx_rows int) LANGUAGE plpgsql AS $$
DECLARE
    low bigint := first_id;
BEGIN
    WHILE low <= last_id LOOP
        {insert};
        COMMIT;
        low := low + tx_rows;
    END LOOP;
END $$
"""
CALL_ROWS = 20_000  # rows per CALL (rounded to whole transactions): progress stays visible


@dataclass(frozen=True)
class PgTarget:
    """Where the PostgreSQL server is, and the credentials the stack gives it."""

    port: int
    host: str = HOST
    admin_user: str = PG_ADMIN_USER
    admin_password: str = PG_ADMIN_PASSWORD
    cdc_user: str = PG_CDC_USER
    cdc_password: str = PG_CDC_PASSWORD

    def worker_source(self, database: str, table: str, slot: str, publication: str) -> dict[str, Any]:
        """The worker's `spec.source` on this server as the CDC role, on a slot and publication
        made beforehand, its password in `${PG_PASSWORD}` (`secrets`)."""
        return {
            "postgres": {
                "host": self.host,
                "port": self.port,
                "database": database,
                "user": self.cdc_user,
                "password": "${PG_PASSWORD}",
                "sslMode": "disable",
                "tables": [table],
                "slot": {"name": slot, "create": False},
                "publication": {"name": publication, "create": False},
            }
        }

    @property
    def secrets(self) -> dict[str, str]:
        return {"PG_PASSWORD": self.cdc_password}

    def dsn(self, database: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            dbname=database,
            user=self.admin_user,
            password=self.admin_password,
        )


@dataclass
class PgWorkload:
    """A prepared change set: `rows` inserts in `transactions` transactions, up to `end_lsn`."""

    target: PgTarget
    database: str
    publication: str
    slots: dict[str, str]  # contender -> its slot
    rows: int
    tx_rows: int
    shape: Shape
    transactions: int = 0
    start_lsn: str = ""
    end_lsn: str = ""
    write_seconds: float = 0.0
    wal_bytes: int = 0
    server_version: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return f"public.{TABLE}"

    def as_json(self) -> dict[str, object]:
        return described(
            self,
            columns=self.shape.described(),
            positions={"startLsn": self.start_lsn, "endLsn": self.end_lsn, "walBytes": self.wal_bytes},
        )


class Written(Protocol):
    """What every scenario's workload records about the change set it wrote."""

    database: str
    rows: int
    tx_rows: int
    transactions: int
    write_seconds: float
    server_version: str

    @property
    def table(self) -> str: ...


def described(workload: Written, *, columns: list[str], positions: dict[str, object]) -> dict[str, object]:
    """A workload as JSON: the table and how it was written, with the server's own `positions`."""
    return {
        "database": workload.database,
        "table": workload.table,
        "columns": columns,
        "rows": workload.rows,
        "rowsPerTransaction": workload.tx_rows,
        "transactions": workload.transactions,
        **positions,
        "writeSeconds": round(workload.write_seconds, 3),
        "serverVersion": workload.server_version,
    }


def new_name(prefix: str) -> str:
    """A lower-case identifier valid in SQL and Kafka alike, unique per run."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def prepare(
    target: PgTarget, *, name: str, contenders: list[str], rows: int, tx_rows: int, shape: str
) -> PgWorkload:
    """Database, table, publication, one slot per contender at one position, then the rows."""
    if not contenders:
        raise ValueError("at least one contender needs a slot")
    workload = PgWorkload(
        target=target,
        database=name,
        publication=name,
        slots={contender: f"{name}_{index}" for index, contender in enumerate(contenders)},
        rows=rows,
        tx_rows=tx_rows,
        shape=Shape.of(shape, mysql=False),
    )
    with psycopg.connect(target.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        workload.server_version = str(admin.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    with psycopg.connect(target.dsn(name), autocommit=True) as connection:
        connection.execute(workload.shape.create_table())
        insert = workload.shape.insert(
            number="g", source="generate_series(low, least(low + tx_rows - 1, last_id)) AS g"
        )
        connection.execute(WRITER.format(insert=insert))
        connection.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(workload.publication), sql.Identifier(TABLE)
            )
        )
        first, *others = workload.slots.values()
        connection.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [first])
        for slot in others:  # a copy starts at exactly the same restart and confirmed position
            connection.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", [first, slot])
        positions = connection.execute(
            "SELECT DISTINCT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = ANY(%s)",
            [list(workload.slots.values())],
        ).fetchall()
        if len(positions) != 1:
            raise RuntimeError(f"the slots do not share one position: {positions}")
        workload.start_lsn = str(positions[0][0])
        # The CDC role streams the table: the same grants a real pipeline would be given.
        connection.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(TABLE), sql.Identifier(target.cdc_user))
        )
    started = time.perf_counter()
    per_call = tx_rows * max(1, CALL_ROWS // tx_rows)
    with psycopg.connect(target.dsn(name), autocommit=True) as writer:
        for first_id in range(1, rows + 1, per_call):
            last_id = min(first_id + per_call - 1, rows)
            writer.execute("CALL bench_write(%s, %s, %s)", [first_id, last_id, tx_rows])
            workload.transactions += -(-(last_id - first_id + 1) // tx_rows)
        # Right after our last commit: the end of its commit record, unless another database
        # wrote WAL in between (pg_recvlogical then stops at the next keepalive instead).
        row = writer.execute(
            "SELECT pg_current_wal_insert_lsn()::text, pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)",
            [workload.start_lsn],
        ).fetchone()
    assert row is not None
    workload.end_lsn, workload.wal_bytes = str(row[0]), int(row[1])
    workload.write_seconds = time.perf_counter() - started
    return workload


class SlotReader:
    """Finds the pid of the walsender reading a slot (the server-side decoder), on one connection."""

    def __init__(self, target: PgTarget, slot: str) -> None:
        self.target, self.slot = target, slot
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self) -> int | None:
        if self._connection is None:
            self._connection = psycopg.connect(self.target.dsn(), autocommit=True)
        row = self._connection.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [self.slot]
        ).fetchone()
        pid = int(row[0]) if row is not None and row[0] is not None else None  # type: ignore[call-overload]
        if pid is not None:
            self.close()
        return pid

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def walsender(target: PgTarget, slot: str, *, interval: float = 0.05) -> ProcWatch:
    """A watch (not started) on the walsender that will read `slot`: the server side of its reader."""
    reader = SlotReader(target, slot)
    return ProcWatch(reader, interval=interval, close=reader.close)


def confirmed_lsn(target: PgTarget, slot: str) -> str | None:
    with psycopg.connect(target.dsn(), autocommit=True) as admin:
        row = admin.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", [slot]
        ).fetchone()
    return str(row[0]) if row is not None and row[0] is not None else None


def lsn_reached(target: PgTarget, lsn: str, goal: str) -> bool:
    with psycopg.connect(target.dsn(), autocommit=True) as admin:
        row = admin.execute("SELECT %s::pg_lsn >= %s::pg_lsn", [lsn, goal]).fetchone()
    return bool(row and row[0])


def drop(target: PgTarget, database: str, publication: str) -> None:
    """Slots first (they pin WAL and outlive connections), then the database with its publication."""
    with psycopg.connect(target.dsn(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = %s AND active",
            [database],
        )
        for (slot,) in admin.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [database]
        ).fetchall():
            for _ in range(50):  # a terminated walsender releases its slot a moment later
                try:
                    admin.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists:
            with psycopg.connect(target.dsn(database), autocommit=True) as connection:
                connection.execute(
                    sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication))
                )
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
