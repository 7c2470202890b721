"""A single transaction of 1,000,000 rows, in PostgreSQL and in MariaDB, is delivered whole, in
memory-bounded parts.

The source streams the transaction in batches of `spec.batch.maxEvents` (cut mid-transaction,
with the index reached in each checkpoint), so the worker's memory must not grow with the
transaction: its peak RSS (VmHWM) is reported and bounded here at 300 MB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.kafka import RecordCounter, create_topic, delete_topic
from bench.procstat import peak_rss_mib
from hack.stack.config import MYSQL_CDC_PASSWORD, PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import MysqlDatabase, PgDatabase, unique_name
from tests.support.mysql_load import mysql_manifest
from tests.support.pipelines import postgres_pipeline
from tests.support.worker import running_worker, write_manifest

ROWS = 1_000_000
PEAK_RSS_LIMIT_MIB = 300
DELIVERY_TIMEOUT = 600.0


def _count_until(bootstrap: str, topic: str, goal: int, timeout: float) -> int:
    async def poll() -> int:
        async with RecordCounter(bootstrap, topic, 1) as counter:
            deadline = time.monotonic() + timeout
            count = await counter.count()
            while count < goal and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                count = await counter.count()
            return count

    return asyncio.run(poll())


def _deliver_one_transaction(
    manifest: dict[str, Any],
    env: dict[str, str],
    write: Callable[[], None],
    *,
    bootstrap: str,
    topic: str,
    tmp_path: Path,
    source: str,
) -> None:
    """Create `topic`, start a worker on `manifest`, `write` the transaction, and wait until the
    topic holds every row; the topic is deleted whatever happened."""
    manifest["spec"]["batch"] = {"maxEvents": 5000, "maxDelay": "50ms"}
    asyncio.run(create_topic(bootstrap, topic, 1))
    try:
        with running_worker(write_manifest(tmp_path, manifest), env=env) as worker:
            began = time.monotonic()
            write()
            committed = time.monotonic()
            count = _count_until(bootstrap, topic, ROWS, DELIVERY_TIMEOUT)
            delivered = time.monotonic()
            peak = peak_rss_mib(worker.process.pid)
            status = worker.get("/status")
    finally:
        asyncio.run(delete_topic(bootstrap, topic))
    print(
        f"{source}: {ROWS:,} rows in one transaction: committed in {committed - began:.1f} s, in Kafka "
        f"{delivered - committed:.1f} s later ({ROWS / (delivered - committed):,.0f} events/s); "
        f"worker peak RSS {peak:.0f} MiB"
    )
    assert count == ROWS, f"Kafka holds {count:,} of the transaction's {ROWS:,} rows; /status: {status}"
    assert peak < PEAK_RSS_LIMIT_MIB, f"the worker's peak RSS was {peak:.0f} MiB for one large transaction"


def test_a_million_row_transaction_arrives_whole_with_bounded_memory(
    pg_database: PgDatabase, kafka_server: Settings, tmp_path: Path
) -> None:
    topic = unique_name("huge")
    bootstrap = kafka_server.kafka_bootstrap
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE big (id bigint PRIMARY KEY, qty int, note text)")
        admin.execute(f"CREATE PUBLICATION {pg_database.name} FOR TABLE big")
    manifest = postgres_pipeline(
        pg_database.name, port=kafka_server.postgres_port, database=pg_database.name, user=PG_CDC_USER,
        tables=["public.big"], slot=pg_database.name, publication=pg_database.name,
        sinks=[{"name": "events", "kafka": {"bootstrapServers": bootstrap, "topic": topic}}],
    )  # fmt: skip

    def write() -> None:
        with psycopg.connect(pg_database.admin_dsn) as writer:  # one transaction
            writer.execute(
                "INSERT INTO big SELECT n, n %% 100, 'row number ' || n FROM generate_series(1, %s) AS n",
                [ROWS],
            )

    _deliver_one_transaction(
        manifest, {"PG_PASSWORD": PG_CDC_PASSWORD}, write, bootstrap=bootstrap, topic=topic,
        tmp_path=tmp_path, source="PostgreSQL",
    )  # fmt: skip


def test_a_million_row_mariadb_transaction_arrives_whole_with_bounded_memory(
    mariadb_database: MysqlDatabase, kafka_server: Settings, tmp_path: Path
) -> None:
    prefix = unique_name("huge")
    topic, bootstrap = f"{prefix}.big", kafka_server.kafka_bootstrap
    with mariadb_database.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("CREATE TABLE big (id bigint PRIMARY KEY, qty int, note text)")
    manifest = mysql_manifest(mariadb_database, bootstrap, prefix, tables=[f"{mariadb_database.name}.big"])

    def write() -> None:
        # One statement in autocommit: one transaction (seq_1_to_N is MariaDB's SEQUENCE engine).
        with mariadb_database.admin_connection() as admin, admin.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO big SELECT seq, seq % 100, CONCAT('row number ', seq) FROM seq_1_to_{ROWS}"
            )

    _deliver_one_transaction(
        manifest, {"MYSQL_PASSWORD": MYSQL_CDC_PASSWORD}, write, bootstrap=bootstrap, topic=topic,
        tmp_path=tmp_path, source="MariaDB",
    )  # fmt: skip
