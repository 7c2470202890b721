"""A single PostgreSQL transaction of 1,000,000 rows is delivered whole, in memory-bounded parts.

The source streams the transaction in batches of `spec.batch.maxEvents` (cut mid-transaction,
with the index reached in each checkpoint), so the worker's memory must not grow with the
transaction: its peak RSS (VmHWM) is reported and bounded here at 300 MB.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg

from bench.kafka import RecordCounter, create_topic, delete_topic
from bench.procstat import peak_rss_mib
from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import PgDatabase, unique_name
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


def test_a_million_row_transaction_arrives_whole_with_bounded_memory(
    pg_database: PgDatabase, kafka_server: Settings, tmp_path: Path
) -> None:
    topic = unique_name("huge")
    bootstrap = kafka_server.kafka_bootstrap
    asyncio.run(create_topic(bootstrap, topic, 1))
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE big (id bigint PRIMARY KEY, qty int, note text)")
        admin.execute(f"CREATE PUBLICATION {pg_database.name} FOR TABLE big")
    manifest = postgres_pipeline(
        pg_database.name, port=kafka_server.postgres_port, database=pg_database.name, user=PG_CDC_USER,
        tables=["public.big"], slot=pg_database.name, publication=pg_database.name,
        sinks=[{"name": "events", "kafka": {"bootstrapServers": bootstrap, "topic": topic}}],
    )  # fmt: skip
    manifest["spec"]["batch"] = {"maxEvents": 5000, "maxDelay": "50ms"}
    try:
        with running_worker(
            write_manifest(tmp_path, manifest), env={"PG_PASSWORD": PG_CDC_PASSWORD}
        ) as worker:
            began = time.monotonic()
            with psycopg.connect(pg_database.admin_dsn) as writer:  # one transaction
                writer.execute(
                    "INSERT INTO big SELECT n, n %% 100, 'row number ' || n FROM generate_series(1, %s) AS n",
                    [ROWS],
                )
            committed = time.monotonic()
            count = _count_until(bootstrap, topic, ROWS, DELIVERY_TIMEOUT)
            delivered = time.monotonic()
            peak = peak_rss_mib(worker.process.pid)
            status = worker.get("/status")
        print(
            f"{ROWS:,} rows in one transaction: committed in {committed - began:.1f} s, in Kafka "
            f"{delivered - committed:.1f} s later ({ROWS / (delivered - committed):,.0f} events/s); "
            f"worker peak RSS {peak:.0f} MiB"
        )
    finally:
        asyncio.run(delete_topic(bootstrap, topic))
    assert count == ROWS, f"Kafka holds {count:,} of the transaction's {ROWS:,} rows; /status: {status}"
    assert peak < PEAK_RSS_LIMIT_MIB, f"the worker's peak RSS was {peak:.0f} MiB for one large transaction"
