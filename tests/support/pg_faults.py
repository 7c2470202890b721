"""PostgreSQL parts of the fault tests: two load tables in a fresh database with their publication
and slot, the manifest of a worker streaming them to Kafka, and the slot checks. The
source-independent parts (seed, SIGKILLs, the drain) are in tests/support/faults.py.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import psycopg

from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER
from tests.fixtures.data_stack import PgDatabase
from tests.support.faults import BATCH_EVENTS, drain_and_verify, fail, kafka_reader
from tests.support.load import LoadWriter, create_load_table
from tests.support.verify import Delivered, DeliveryReport, lsn_order
from tests.support.worker import Worker

TABLES = ("load_a", "load_b")
WORKER_ENV = {"PG_PASSWORD": PG_CDC_PASSWORD}


def prepare_source(database: PgDatabase) -> None:
    """Tables, publication and slot exist before the first write, so every row is captured even
    if the first worker dies before its own preflight would have created the slot."""
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        for table in TABLES:
            create_load_table(admin, table)
        admin.execute(f"CREATE PUBLICATION {database.name} FOR TABLE {', '.join(TABLES)}")
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [database.name])


def fault_manifest(
    database: PgDatabase, postgres_port: int, sink: dict[str, Any], max_delay: str = "20ms"
) -> dict[str, Any]:
    """A worker streaming the load tables into `sink` (one, named `events`; see `faults.kafka_sink`)."""
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": database.name.replace("_", "-"), "namespace": "tests"},
        "spec": {
            "source": {
                "postgres": {
                    "host": "127.0.0.1",
                    "port": postgres_port,
                    "database": database.name,
                    "user": PG_CDC_USER,
                    "password": "${PG_PASSWORD}",
                    "tables": ["public.load_*"],
                    "slot": {"name": database.name, "create": False},
                    "publication": {"name": database.name, "create": False},
                    "heartbeat": {"interval": "1s"},
                }
            },
            "sinks": [{"name": "events", **sink}],
            "batch": {"maxEvents": BATCH_EVENTS, "maxDelay": max_delay},
            "checkpoint": {"file": {"path": "checkpoint.json"}},
        },
    }


def confirmed_flush(admin_dsn: str, slot: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", [slot]
        ).fetchone()
    if row is None or row[0] is None:
        raise AssertionError(f"replication slot {slot} is gone or has no confirmed position")
    return lsn_order(str(row[0]))


def drain_to_kafka(
    database: PgDatabase,
    bootstrap: str,
    topics: list[str],
    worker: Worker,
    writer: LoadWriter,
    *,
    read_committed: bool = False,
) -> tuple[DeliveryReport, list[Delivered]]:
    """`faults.drain_and_verify` for a PostgreSQL pipeline into Kafka. `read_committed` reads as
    an exactly-once consumer does; such a pipeline keeps its checkpoint in Kafka, not in a file,
    so only an at-least-once one is checked for the slot it confirms on SIGTERM."""
    return drain_and_verify(
        writer,
        kafka_reader(bootstrap, topics, read_committed=read_committed),
        worker,
        on_stopped=None if read_committed else partial(assert_acknowledged_on_stop, database),
    )


def assert_acknowledged_on_stop(database: PgDatabase, worker: Worker) -> None:
    """A graceful stop confirms the slot up to the checkpoint it wrote (or beyond, over WAL that
    held no change), so a rolling restart replays nothing that was delivered."""
    checkpoint = json.loads((worker.log_path.parent / "checkpoint.json").read_text())
    confirmed = confirmed_flush(database.admin_dsn, database.name)
    print(
        f"after SIGTERM: checkpoint {checkpoint['position']}#{checkpoint['index']} "
        f"(commit end {checkpoint['lsn']:X}), slot confirmed {confirmed:X}"
    )
    if checkpoint["index"] < 0 and confirmed < checkpoint["lsn"]:
        fail(
            f"after SIGTERM the slot is confirmed up to {confirmed:X}, but the checkpoint says everything "
            f"up to {checkpoint['lsn']:X} was delivered: a restart would replay the difference",
            worker,
        )
