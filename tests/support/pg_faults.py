"""Shared parts of the fault tests: a steady write load on two tables of a fresh database, a
worker streaming them to Kafka, random SIGKILLs, and the drain that verifies delivery.

The kill schedule is random; its seed is printed, and DELTAFORGE_FAULT_SEED replays a run.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER
from tests.fixtures.data_stack import PgDatabase
from tests.support.load import LoadWriter, committed_rows, create_load_table
from tests.support.verify import Coverage, Delivered, DeliveryReport, lsn_order, read_topics, verify_delivery
from tests.support.worker import Worker, start_worker

TABLES = ("load_a", "load_b")
WORKER_ENV = {"PG_PASSWORD": PG_CDC_PASSWORD}


def fault_seed() -> int:
    configured = os.environ.get("DELTAFORGE_FAULT_SEED")
    seed = int(configured) if configured else random.SystemRandom().randrange(2**32)
    print(f"fault seed: {seed} (DELTAFORGE_FAULT_SEED={seed} replays this schedule)")
    return seed


def prepare_source(database: PgDatabase) -> None:
    """Tables, publication and slot exist before the first write, so every row is captured even
    if the first worker dies before its own preflight would have created the slot."""
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        for table in TABLES:
            create_load_table(admin, table)
        admin.execute(f"CREATE PUBLICATION {database.name} FOR TABLE {', '.join(TABLES)}")
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [database.name])


def fault_manifest(
    database: PgDatabase, postgres_port: int, bootstrap: str, topic_prefix: str, max_delay: str = "20ms"
) -> dict[str, Any]:
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
            "sinks": [
                {
                    "name": "events",
                    "kafka": {"bootstrapServers": bootstrap, "topic": f"{topic_prefix}.${{source.table}}"},
                }
            ],
            "batch": {"maxEvents": 100, "maxDelay": max_delay},
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


def fail(message: str, worker: Worker | None = None) -> None:
    log = f"\nworker log (tail):\n{worker.log()[-6000:]}" if worker is not None else ""
    pytest.fail(f"{message}{log}", pytrace=False)


def drain_and_verify(
    database: PgDatabase,
    bootstrap: str,
    topics: list[str],
    worker: Worker,
    writer: LoadWriter,
    *,
    read_committed: bool = False,
) -> tuple[DeliveryReport, list[Delivered]]:
    """Stop the writer, wait until every committed row version is in Kafka, SIGTERM the worker
    (it must exit 0), then verify everything the topics hold. `read_committed` reads as an
    exactly-once consumer does; such a pipeline keeps its checkpoint in Kafka, not in a file."""
    stats = writer.stop()
    print(f"writer: {stats}")
    committed = committed_rows(database.admin_dsn, TABLES)
    coverage = Coverage(committed)
    started = time.monotonic()
    _, drained = read_topics(bootstrap, topics, until=coverage.add, within=60, read_committed=read_committed)
    if worker.process.poll() is not None:
        fail(f"the worker exited with {worker.process.returncode} while draining", worker)
    if not drained:
        records, _ = read_topics(bootstrap, topics, within=60, read_committed=read_committed)
        report = verify_delivery(committed, records)
        fail(f"committed rows did not all reach Kafka within 60 s:\n{report.summary()}", worker)
    print(f"drained in {time.monotonic() - started:.1f} s")
    code = worker.stop(timeout=30)
    if code != 0:
        fail(f"the worker exited with {code} on SIGTERM, not 0", worker)
    if not read_committed:
        assert_acknowledged_on_stop(database, worker)
    records, complete = read_topics(bootstrap, topics, within=60, read_committed=read_committed)
    if not complete:
        fail(f"could not read the topics to their end within 60 s ({len(records)} records read)")
    report = verify_delivery(committed, records)
    print(report.summary())
    return report, records


def assert_acknowledged_on_stop(database: PgDatabase, worker: Worker) -> None:
    """A graceful stop confirms the slot up to the checkpoint it wrote, so a rolling restart
    replays nothing that was delivered."""
    checkpoint = json.loads((worker.log_path.parent / "checkpoint.json").read_text())
    confirmed = confirmed_flush(database.admin_dsn, database.name)
    print(
        f"after SIGTERM: checkpoint {checkpoint['position']}#{checkpoint['index']} "
        f"(commit end {checkpoint['lsn']:X}), slot confirmed {confirmed:X}"
    )
    if checkpoint["index"] < 0 and confirmed != checkpoint["lsn"]:
        fail(
            f"after SIGTERM the slot is confirmed up to {confirmed:X}, but the checkpoint says everything "
            f"up to {checkpoint['lsn']:X} was delivered: a restart would replay the difference",
            worker,
        )


def kill_at_random(worker: Worker, writer: LoadWriter, rng: random.Random, label: str) -> None:
    """SIGKILL during start-up (one time in four) or while streaming, at a random moment."""
    spawned = time.monotonic()
    during_startup = rng.random() < 0.25
    if during_startup:
        delay = rng.uniform(0.2, 1.5)
    else:
        worker.wait_ready(timeout=30)
        delay = rng.uniform(0.1, 3.0)
    time.sleep(delay)
    if worker.process.poll() is not None:
        fail(f"before kill {label} the worker exited by itself with {worker.process.returncode}", worker)
    if not writer.alive:
        writer.stop()  # raises the writer's error
    worker.kill()
    print(
        f"kill {label}: SIGKILL {delay:.2f} s {'after spawn' if during_startup else 'after ready'} "
        f"(worker lived {time.monotonic() - spawned:.2f} s, {writer.rows_so_far()} rows written so far)"
    )


def cleanup(writer: LoadWriter, worker: Worker | None) -> None:
    try:
        if writer.alive:
            writer.stop()
    finally:
        if worker is not None and worker.process.poll() is None:
            worker.kill()


def sigkill_storm(manifest: Path, writer: LoadWriter, rng: random.Random, kills: int) -> None:
    """Start a worker and SIGKILL it at a random moment, `kills` times over."""
    for kill in range(1, kills + 1):
        worker = start_worker(manifest, env=WORKER_ENV)
        try:
            kill_at_random(worker, writer, rng, f"{kill:2}/{kills}")
        finally:
            if worker.process.poll() is None:
                worker.kill()
