"""The source database restarts while the worker streams into Kafka under a steady write load.

PostgreSQL and MariaDB are each restarted twice (a clean fast shutdown, then a start) on a
private server of the test's own (tests/support/isolated_stack.py), since other tests use the
shared ones at the same time. Each shutdown finds a transaction open, as on any busy database;
it must not keep the server from stopping, and its row must never arrive. The worker must stay
up, count the reconnects in `deltaforge_source_reconnects_total`, turn ready again by itself and
lose nothing. The writer reconnects too; a transaction cut off by the shutdown counts only if it
committed, since the verifier compares what Kafka holds with the rows the server holds afterwards.

- PostgreSQL: the slot replays from the confirmed position it last saved to disk (PostgreSQL 15
  saves it only now and then, so that may be long before), and the source skips what its
  checkpoint covers: at most the batch in flight may come again, as exact replays.
- MariaDB: the binlog reader resumes from the source's own position, so nothing is replayed.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hack.stack.config import MYSQL_CDC_PASSWORD, Settings
from tests.fixtures.data_stack import unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import (
    BATCH_EVENTS,
    assert_at_least_once,
    cleanup,
    drain_and_verify,
    fail,
    fault_topics,
    kafka_reader,
    kafka_sink,
    wait_reconnects,
)
from tests.support.isolated_stack import IsolatedStack, isolated_stack
from tests.support.load import LoadTarget, LoadWriter, postgres_target
from tests.support.mysql_load import (
    MARIADB_POSITIONS,
    create_load_tables,
    mariadb_target,
    mysql_manifest,
    wait_for_checkpoint,
)
from tests.support.pg_faults import (
    TABLES,
    WORKER_ENV,
    assert_acknowledged_on_stop,
    fault_manifest,
    prepare_source,
)
from tests.support.verify import POSTGRES_POSITIONS, Positions
from tests.support.worker import Worker, start_worker, write_manifest

RESTARTS = 2
STOP_LIMIT = 10.0  # seconds; a fast shutdown takes about one here


@contextlib.contextmanager
def _open_transaction(target: LoadTarget, key: int) -> Iterator[None]:
    """A transaction that has written a row and is still open when the server shuts down, as a
    busy database always has: the shutdown aborts it, so its row must never arrive."""
    connection = target.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {target.quote(TABLES[0])} (id, payload) VALUES (%s, 'never committed')", [key]
            )
        yield
    finally:
        with contextlib.suppress(*target.lost):
            connection.close()


def _restart_under_load(
    stack: IsolatedStack, service: str, worker: Worker, writer: LoadWriter, rng: random.Random
) -> list[str]:
    """Restart `service` RESTARTS times, a few seconds of streaming apart, each time with a
    transaction open; after each, the worker must count a reconnect and be ready again. Returns
    a line per restart for the report."""
    notes: list[str] = []
    for restart in range(1, RESTARTS + 1):
        time.sleep(rng.uniform(2.0, 4.0))
        if not writer.alive:
            writer.stop()  # raises the writer's error
        before = int(worker.metric("deltaforge_source_reconnects_total"))
        rows = writer.rows_so_far()
        with _open_transaction(writer.target, -restart):
            stopping = time.monotonic()
            stack.down(service)
            starting = time.monotonic()
        if starting - stopping > STOP_LIMIT:
            # Connection attempts refused during the shutdown fill the log: leave them out.
            lines = [
                line for line in stack.log(service).splitlines() if "system is shutting down" not in line
            ]
            hint = (
                " A walsender ends only once its client confirmed all the WAL it was sent, including"
                " WAL without changes (here: the abort of the open transaction)."
                if service == "postgres"
                else ""
            )
            fail(
                f"restart {restart}: the clean shutdown of {service} took {starting - stopping:.1f} s (the "
                f"stack waits 30 s, then SIGKILLs it).{hint} Server log (tail):\n" + "\n".join(lines[-15:]),
                worker,
            )
        stack.up(service)
        started = time.monotonic()
        reconnects = wait_reconnects(worker, before + 1, 60, f"after {service} restart {restart}")
        worker.wait_ready(timeout=60)
        notes.append(
            f"restart {restart}: {service} stopped in {starting - stopping:.1f} s and started in "
            f"{started - starting:.1f} s ({rows} rows written before); worker ready "
            f"{time.monotonic() - started:.1f} s later, reconnects {before} -> {reconnects}"
        )
        print(notes[-1])
    time.sleep(2.0)  # live rows after the last restart, not only the backlog
    return notes


@dataclass(frozen=True)
class _Pipeline:
    """What differs between the two sources in this scenario."""

    target: LoadTarget
    manifest: dict[str, Any]
    env: dict[str, str]
    positions: Positions
    on_stopped: Callable[[Worker], None] | None  # what a SIGTERM promises besides delivery
    before_load: Callable[[Worker], None]  # waits until the first write will be captured
    replay_limit: int  # duplicate records allowed over all the restarts


def _postgres(stack: IsolatedStack, bootstrap: str, prefix: str, tmp_path: Path) -> _Pipeline:
    database = stack.postgres_database(unique_name("pg"))
    prepare_source(database)  # the slot exists before the first write: every write is captured
    return _Pipeline(
        target=postgres_target(database.admin_dsn),
        manifest=fault_manifest(database, stack.port("DELTAFORGE_PG_PORT"), kafka_sink(bootstrap, prefix)),
        env=WORKER_ENV,
        positions=POSTGRES_POSITIONS,
        on_stopped=partial(assert_acknowledged_on_stop, database),
        before_load=lambda _: None,
        replay_limit=BATCH_EVENTS * RESTARTS,  # at most the batch in flight, each time
    )


def _mariadb(stack: IsolatedStack, bootstrap: str, prefix: str, tmp_path: Path) -> _Pipeline:
    database = stack.mariadb_database(unique_name("my"))
    create_load_tables(database, TABLES)
    return _Pipeline(
        target=mariadb_target(database),
        manifest=mysql_manifest(database, bootstrap, prefix, tables=[f"{database.name}.load_*"]),
        env={"MYSQL_PASSWORD": MYSQL_CDC_PASSWORD},
        positions=MARIADB_POSITIONS,
        on_stopped=None,
        before_load=lambda worker: wait_for_checkpoint(worker, tmp_path / "checkpoint.json"),
        replay_limit=0,
    )


@pytest.mark.parametrize(
    ("service", "pipeline_for"), [("postgres", _postgres), ("mariadb", _mariadb)], ids=["postgres", "mariadb"]
)
def test_source_restarts_lose_nothing(
    service: str,
    pipeline_for: Callable[[IsolatedStack, str, str, Path], _Pipeline],
    kafka_server: Settings,
    tmp_path: Path,
    fault_report: FaultReport,
) -> None:
    seed = fault_report.seed
    rng = random.Random(seed)
    bootstrap = kafka_server.kafka_bootstrap
    with isolated_stack() as stack, fault_topics(bootstrap, "restart", TABLES) as (prefix, topics):
        stack.up(service)
        pipeline = pipeline_for(stack, bootstrap, prefix, tmp_path)
        writer = LoadWriter(
            pipeline.target, TABLES, seed=seed, rows_per_second=300, large_every=2.0, survive_outages=True
        )
        worker = start_worker(write_manifest(tmp_path, pipeline.manifest), env=pipeline.env)
        try:
            worker.wait_ready(timeout=60)
            pipeline.before_load(worker)
            writer.start()
            notes = _restart_under_load(stack, service, worker, writer, rng)
            reconnects = int(worker.metric("deltaforge_source_reconnects_total"))
            report, _ = drain_and_verify(
                writer,
                kafka_reader(bootstrap, topics),
                worker,
                positions=pipeline.positions,
                on_stopped=pipeline.on_stopped,
            )
        finally:
            cleanup(writer, worker)
    fault_report(
        report,
        peak_rss_mib=worker.peak_rss_mib,
        notes=[f"writer {writer.stats}", *notes, f"reconnects counted: {reconnects}"],
    )
    assert_at_least_once(report, seed)
    if report.duplicate_records > pipeline.replay_limit:
        fail(
            f"{RESTARTS} restarts of {service} replayed {report.duplicate_records} records, more than "
            f"{pipeline.replay_limit} (seed {seed}):\n{report.summary()}"
        )
