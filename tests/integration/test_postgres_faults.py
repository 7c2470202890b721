"""Faults under a steady write load: the worker is SIGKILLed again and again, and its Kafka goes
away for 20 s. Either way no committed change may be lost, a duplicate must be an exact replay
(same bytes, same event_id), and the slot must never be confirmed past what Kafka holds.

The kill schedule is random; its seed is printed, and DELTAFORGE_FAULT_SEED replays a run.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.support.isolated_stack import IsolatedStack, isolated_stack
from tests.support.load import LoadWriter, committed_rows, create_load_table
from tests.support.verify import (
    Coverage,
    Delivered,
    DeliveryReport,
    create_topics,
    delete_topics,
    lsn_order,
    read_topics,
    verify_delivery,
)
from tests.support.worker import Worker, start_worker, write_manifest

TABLES = ("load_a", "load_b")
WORKER_ENV = {"PG_PASSWORD": PG_CDC_PASSWORD}
KILLS = 12
OUTAGE_SECONDS = float(os.environ.get("DELTAFORGE_OUTAGE_SECONDS") or 20)


def _seed() -> int:
    configured = os.environ.get("DELTAFORGE_FAULT_SEED")
    seed = int(configured) if configured else random.SystemRandom().randrange(2**32)
    print(f"fault seed: {seed} (DELTAFORGE_FAULT_SEED={seed} replays this schedule)")
    return seed


def _prepare_source(database: PgDatabase) -> None:
    """Tables, publication and slot exist before the first write, so every row is captured even
    if the first worker dies before its own preflight would have created the slot."""
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        for table in TABLES:
            create_load_table(admin, table)
        admin.execute(f"CREATE PUBLICATION {database.name} FOR TABLE {', '.join(TABLES)}")
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [database.name])


def _manifest(
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


def _confirmed_flush(admin_dsn: str, slot: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", [slot]
        ).fetchone()
    if row is None or row[0] is None:
        raise AssertionError(f"replication slot {slot} is gone or has no confirmed position")
    return lsn_order(str(row[0]))


def _fail(message: str, worker: Worker | None = None) -> None:
    log = f"\nworker log (tail):\n{worker.log()[-6000:]}" if worker is not None else ""
    pytest.fail(f"{message}{log}", pytrace=False)


def _drain_and_verify(
    database: PgDatabase, bootstrap: str, topics: list[str], worker: Worker, writer: LoadWriter
) -> tuple[DeliveryReport, list[Delivered]]:
    """Stop the writer, wait until every committed row version is in Kafka, SIGTERM the worker
    (it must exit 0), then verify everything the topics hold."""
    stats = writer.stop()
    print(f"writer: {stats}")
    committed = committed_rows(database.admin_dsn, TABLES)
    coverage = Coverage(committed)
    started = time.monotonic()
    _, drained = read_topics(bootstrap, topics, until=coverage.add, within=60)
    if worker.process.poll() is not None:
        _fail(f"the worker exited with {worker.process.returncode} while draining", worker)
    if not drained:
        records, _ = read_topics(bootstrap, topics, within=60)
        report = verify_delivery(committed, records)
        _fail(f"committed rows did not all reach Kafka within 60 s:\n{report.summary()}", worker)
    print(f"drained in {time.monotonic() - started:.1f} s")
    code = worker.stop(timeout=30)
    if code != 0:
        _fail(f"the worker exited with {code} on SIGTERM, not 0", worker)
    _assert_acknowledged_on_stop(database, worker)
    records, complete = read_topics(bootstrap, topics, within=60)
    if not complete:
        _fail(f"could not read the topics to their end within 60 s ({len(records)} records read)")
    report = verify_delivery(committed, records)
    print(report.summary())
    return report, records


def _assert_acknowledged_on_stop(database: PgDatabase, worker: Worker) -> None:
    """A graceful stop confirms the slot up to the checkpoint it wrote, so a rolling restart
    replays nothing that was delivered."""
    checkpoint = json.loads((worker.log_path.parent / "checkpoint.json").read_text())
    confirmed = _confirmed_flush(database.admin_dsn, database.name)
    print(
        f"after SIGTERM: checkpoint {checkpoint['position']}#{checkpoint['index']} "
        f"(commit end {checkpoint['lsn']:X}), slot confirmed {confirmed:X}"
    )
    if checkpoint["index"] < 0 and confirmed != checkpoint["lsn"]:
        _fail(
            f"after SIGTERM the slot is confirmed up to {confirmed:X}, but the checkpoint says everything "
            f"up to {checkpoint['lsn']:X} was delivered: a restart would replay the difference",
            worker,
        )


@pytest.fixture
def shared_kafka_topics(kafka_server: Settings) -> Iterator[tuple[str, list[str]]]:
    """Fresh topics on the shared broker, three partitions each, removed afterwards."""
    prefix = unique_name("fault")
    topics = [f"{prefix}.{table}" for table in TABLES]
    create_topics(kafka_server.kafka_bootstrap, topics, partitions=3)
    yield prefix, topics
    delete_topics(kafka_server.kafka_bootstrap, topics)


def test_sigkill_storm_loses_nothing_and_replays_exactly(
    pg_database: PgDatabase,
    kafka_server: Settings,
    shared_kafka_topics: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    seed = _seed()
    rng = random.Random(seed)
    prefix, topics = shared_kafka_topics
    _prepare_source(pg_database)
    # Batches wait up to 200 ms: most kills and stops then find read, undelivered transactions.
    manifest = write_manifest(
        tmp_path,
        _manifest(pg_database, kafka_server.postgres_port, kafka_server.kafka_bootstrap, prefix, "200ms"),
    )
    writer = LoadWriter(pg_database.admin_dsn, TABLES, seed=seed, rows_per_second=300, large_every=2.0)
    writer.start()
    worker: Worker | None = None
    try:
        for kill in range(1, KILLS + 1):
            worker = start_worker(manifest, env=WORKER_ENV)
            _kill_at_random(worker, writer, rng, f"{kill:2}/{KILLS}")
        # A rolling restart under load: SIGTERM delivers the complete transactions read so far
        # and confirms them, so the next worker replays none of them.
        worker = start_worker(manifest, env=WORKER_ENV)
        worker.wait_ready(timeout=30)
        time.sleep(rng.uniform(0.5, 2.0))
        if (code := worker.stop(timeout=30)) != 0:
            _fail(f"the worker exited with {code} on SIGTERM under load, not 0", worker)
        _assert_acknowledged_on_stop(pg_database, worker)
        worker = start_worker(manifest, env=WORKER_ENV)
        worker.wait_ready(timeout=30)
        time.sleep(1.0)  # the survivor also streams live rows, not only the backlog
        report, _ = _drain_and_verify(pg_database, kafka_server.kafka_bootstrap, topics, worker, writer)
    finally:
        _cleanup(writer, worker)
    print(f"kills: {KILLS}, test time {time.monotonic() - began:.1f} s")
    assert report.ok, f"delivery contract broken (seed {seed}):\n{report.summary()}"
    assert report.unique_events == report.expected_changes


def _kill_at_random(worker: Worker, writer: LoadWriter, rng: random.Random, label: str) -> None:
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
        _fail(f"before kill {label} the worker exited by itself with {worker.process.returncode}", worker)
    if not writer.alive:
        writer.stop()  # raises the writer's error
    worker.kill()
    print(
        f"kill {label}: SIGKILL {delay:.2f} s {'after spawn' if during_startup else 'after ready'} "
        f"(worker lived {time.monotonic() - spawned:.2f} s, {writer.rows_so_far()} rows written so far)"
    )


def _cleanup(writer: LoadWriter, worker: Worker | None) -> None:
    try:
        if writer.alive:
            writer.stop()
    finally:
        if worker is not None and worker.process.poll() is None:
            worker.kill()


# --- Kafka outage ------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Outage:
    """What the test saw while Kafka was down."""

    stopped_at_ms: int  # wall clock, comparable with the broker's LogAppendTime
    first_flush: int
    confirmed_flush: int
    samples: int = 0
    unready_after: float | None = None
    unready_reason: str = ""
    rows_written: int = 0
    cpu_share: float = 0.0  # of one core, for the worker during the outage

    def __str__(self) -> str:
        return (
            f"{OUTAGE_SECONDS:.0f} s, {self.rows_written} rows written, confirmed_flush_lsn "
            f"{self.first_flush:X} at the stop, {self.confirmed_flush:X} after 0.5 s and unchanged in "
            f"{self.samples} samples; /readyz 503 after {self.unready_after} s ({self.unready_reason}); "
            f"worker CPU {self.cpu_share:.0%} of a core"
        )


def _stop_kafka_and_watch(
    stack: IsolatedStack, database: PgDatabase, worker: Worker, writer: LoadWriter
) -> Outage:
    """Stop the isolated Kafka for OUTAGE_SECONDS while the writer goes on; the worker must stay
    up, turn unready, and never confirm the slot further."""
    stack.down("kafka")
    began, cpu_before = time.monotonic(), _cpu_seconds(worker.process.pid)
    outage = Outage(int(time.time() * 1000), _confirmed_flush(database.admin_dsn, database.name), 0)
    time.sleep(0.5)  # a status update for an acknowledgement received before the stop may be on its way
    outage.confirmed_flush = _confirmed_flush(database.admin_dsn, database.name)
    rows_at_stop = writer.rows_so_far()
    while (elapsed := time.monotonic() - began) < OUTAGE_SECONDS:
        if worker.process.poll() is not None:
            _fail(f"the worker exited with {worker.process.returncode} while Kafka was down", worker)
        if not writer.alive:
            writer.stop()  # raises the writer's error
        flushed = _confirmed_flush(database.admin_dsn, database.name)
        outage.samples += 1
        if flushed != outage.confirmed_flush:
            _fail(
                f"confirmed_flush_lsn moved from {outage.confirmed_flush:X} to {flushed:X} while Kafka was "
                f"down ({elapsed:.1f} s into the outage)",
                worker,
            )
        status, body = worker.get("/readyz")
        if status == 503 and outage.unready_after is None:
            outage.unready_after, outage.unready_reason = round(elapsed, 1), json.loads(body)["reason"]
        time.sleep(0.25)
    outage.rows_written = writer.rows_so_far() - rows_at_stop
    outage.cpu_share = (_cpu_seconds(worker.process.pid) - cpu_before) / (time.monotonic() - began)
    return outage


def _wait_ready_again(stack: IsolatedStack, worker: Worker) -> None:
    restarting = time.monotonic()
    stack.up("kafka")
    kafka_up = time.monotonic()
    deadline = kafka_up + 60
    while (answer := worker.get("/readyz"))[0] != 200:
        if worker.process.poll() is not None:
            _fail(f"the worker exited with {worker.process.returncode} after Kafka came back", worker)
        if time.monotonic() > deadline:
            _fail(f"/readyz did not return to 200 within 60 s of Kafka's restart: {answer}", worker)
        time.sleep(0.25)
    print(
        f"Kafka restarted in {kafka_up - restarting:.1f} s; worker ready "
        f"{time.monotonic() - kafka_up:.1f} s after that"
    )


def test_kafka_outage_holds_the_slot_and_loses_nothing(
    pg_database: PgDatabase, postgres_server: Settings, tmp_path: Path
) -> None:
    began = time.monotonic()
    seed = _seed()
    with isolated_stack() as stack:
        stack.up("kafka")
        prefix = unique_name("outage")
        topics = [f"{prefix}.{table}" for table in TABLES]
        # LogAppendTime: the broker stamps each record, so the test knows what Kafka held when it stopped.
        create_topics(
            stack.kafka_bootstrap, topics, partitions=3, config={"message.timestamp.type": "LogAppendTime"}
        )
        _prepare_source(pg_database)
        manifest = write_manifest(
            tmp_path, _manifest(pg_database, postgres_server.postgres_port, stack.kafka_bootstrap, prefix)
        )
        writer = LoadWriter(pg_database.admin_dsn, TABLES, seed=seed, rows_per_second=200)
        worker = start_worker(manifest, env=WORKER_ENV)
        try:
            worker.wait_ready(timeout=30)
            writer.start()
            time.sleep(3.0)
            print(f"streaming: {writer.rows_so_far()} rows written before the outage")
            outage = _stop_kafka_and_watch(stack, pg_database, worker, writer)
            print(f"outage: {outage}")
            _wait_ready_again(stack, worker)
            time.sleep(2.0)  # streaming live rows again, after the backlog
            report, records = _drain_and_verify(pg_database, stack.kafka_bootstrap, topics, worker, writer)
        finally:
            _cleanup(writer, worker)
    print(f"test time {time.monotonic() - began:.1f} s")
    assert outage.rows_written > 0, "the writer committed nothing during the outage"
    assert outage.unready_after is not None, (
        f"/readyz stayed 200 during a {OUTAGE_SECONDS:.0f} s Kafka outage"
    )
    assert "sink events" in outage.unready_reason, f"the reason must name the sink: {outage.unready_reason}"
    assert outage.cpu_share < 0.5, f"the worker used {outage.cpu_share:.0%} of a core waiting for Kafka"
    assert report.ok, f"delivery contract broken (seed {seed}):\n{report.summary()}"
    _assert_slot_held_back(records, outage)


def _assert_slot_held_back(records: list[Delivered], outage: Outage) -> None:
    """Every transaction committed before the confirmed position was in Kafka before it stopped.

    The slot is confirmed up to the end of the last acknowledged commit, so a change whose commit
    position is below the confirmed LSN must have a copy the broker appended before the stop.
    """
    first_append: dict[str, tuple[int, str]] = {}
    for record in records:
        document = json.loads(record.value or b"{}")
        position = str(document["source"]["position"])
        if lsn_order(position) < outage.confirmed_flush:
            seen = first_append.get(document["id"])
            if seen is None or record.timestamp_ms < seen[0]:
                first_append[document["id"]] = (record.timestamp_ms, f"{record.where} at {position}")
    assert first_append, "no change was confirmed before the outage: the test did not stream"
    late = [where for appended, where in first_append.values() if appended > outage.stopped_at_ms]
    assert not late, (
        f"the slot was confirmed up to {outage.confirmed_flush:X}, but {len(late)} changes committed before "
        f"it reached Kafka only after the outage began, e.g. {late[:5]}"
    )
