"""Faults under a steady write load: the worker is SIGKILLed again and again, and its Kafka goes
away for 20 s and is later restarted while streaming. Either way no committed change may be lost,
a duplicate must be an exact replay (same bytes, same event_id), and the slot must never be
confirmed past what Kafka holds.

The kill schedule is random; its seed is printed, and DELTAFORGE_FAULT_SEED replays a run.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from hack.stack.config import Settings
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import (
    Unready,
    assert_at_least_once,
    cleanup,
    fail,
    kafka_reader,
    kafka_sink,
    storm_and_drain,
    watch_outage,
)
from tests.support.isolated_stack import IsolatedStack, isolated_stack
from tests.support.load import LoadWriter, postgres_target
from tests.support.pg_faults import (
    TABLES,
    WORKER_ENV,
    assert_acknowledged_on_stop,
    confirmed_flush,
    drain_to_kafka,
    fault_manifest,
    prepare_source,
)
from tests.support.verify import (
    Delivered,
    create_topics,
    delete_topics,
    lsn_order,
)
from tests.support.worker import Worker, start_worker, write_manifest

KILLS = 20
OUTAGE_SECONDS = float(os.environ.get("DELTAFORGE_OUTAGE_SECONDS") or 20)


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
    fault_report: FaultReport,
) -> None:
    seed = fault_report.seed
    rng = random.Random(seed)
    prefix, topics = shared_kafka_topics
    prepare_source(pg_database)
    # Batches wait up to 200 ms: most kills and stops then find read, undelivered transactions.
    manifest = write_manifest(
        tmp_path,
        fault_manifest(
            pg_database, kafka_server.postgres_port, kafka_sink(kafka_server.kafka_bootstrap, prefix), "200ms"
        ),
    )
    writer = LoadWriter(
        postgres_target(pg_database.admin_dsn), TABLES, seed=seed, rows_per_second=300, large_every=2.0
    )
    # The rolling restart under load: SIGTERM delivers the complete transactions read so far and
    # confirms them, so the next worker replays none of them.
    report, peak = storm_and_drain(
        manifest,
        writer,
        rng,
        KILLS,
        env=WORKER_ENV,
        read=kafka_reader(kafka_server.kafka_bootstrap, topics),
        rolling_restart=True,
        on_stopped=partial(assert_acknowledged_on_stop, pg_database),
    )
    fault_report(
        report, peak_rss_mib=peak, notes=[f"{KILLS} SIGKILLs, a SIGTERM under load; writer {writer.stats}"]
    )
    assert_at_least_once(report, seed)


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
    unready: Unready = field(default_factory=Unready)
    rows_written: int = 0
    cpu_share: float = 0.0  # of one core, for the worker during the outage

    def __str__(self) -> str:
        return (
            f"{OUTAGE_SECONDS:.0f} s, {self.rows_written} rows written, confirmed_flush_lsn "
            f"{self.first_flush:X} at the stop, {self.confirmed_flush:X} after 0.5 s and unchanged in "
            f"{self.samples} samples; /readyz 503 after {self.unready.after} s ({self.unready.reason}); "
            f"worker CPU {self.cpu_share:.0%} of a core"
        )


def _stop_kafka_and_watch(
    stack: IsolatedStack, database: PgDatabase, worker: Worker, writer: LoadWriter
) -> Outage:
    """Stop the isolated Kafka for OUTAGE_SECONDS while the writer goes on; the worker must stay
    up, turn unready, and never confirm the slot further."""
    stack.down("kafka")
    began, cpu_before = time.monotonic(), _cpu_seconds(worker.process.pid)
    outage = Outage(int(time.time() * 1000), confirmed_flush(database.admin_dsn, database.name), 0)
    time.sleep(0.5)  # a status update for an acknowledgement received before the stop may be on its way
    outage.confirmed_flush = confirmed_flush(database.admin_dsn, database.name)
    rows_at_stop = writer.rows_so_far()

    def slot_held(elapsed: float) -> None:
        flushed = confirmed_flush(database.admin_dsn, database.name)
        outage.samples += 1
        if flushed != outage.confirmed_flush:
            fail(
                f"confirmed_flush_lsn moved from {outage.confirmed_flush:X} to {flushed:X} while Kafka was "
                f"down ({elapsed:.1f} s into the outage)",
                worker,
            )

    outage.unready = watch_outage(worker, writer, OUTAGE_SECONDS, "Kafka", slot_held, began=began)
    outage.rows_written = writer.rows_so_far() - rows_at_stop
    outage.cpu_share = (_cpu_seconds(worker.process.pid) - cpu_before) / (time.monotonic() - began)
    return outage


def _wait_ready_again(stack: IsolatedStack, worker: Worker) -> str:
    """Start the isolated Kafka; the worker must become ready again by itself."""
    restarting = time.monotonic()
    stack.up("kafka")
    kafka_up = time.monotonic()
    worker.wait_ready(timeout=60)
    return f"Kafka started in {kafka_up - restarting:.1f} s; worker ready {time.monotonic() - kafka_up:.1f} s after that"


def test_kafka_outage_and_restart_hold_the_slot_and_lose_nothing(
    pg_database: PgDatabase, postgres_server: Settings, tmp_path: Path, fault_report: FaultReport
) -> None:
    seed = fault_report.seed
    with isolated_stack() as stack:
        stack.up("kafka")
        prefix = unique_name("outage")
        topics = [f"{prefix}.{table}" for table in TABLES]
        # LogAppendTime: the broker stamps each record, so the test knows what Kafka held when it stopped.
        create_topics(
            stack.kafka_bootstrap, topics, partitions=3, config={"message.timestamp.type": "LogAppendTime"}
        )
        prepare_source(pg_database)
        manifest = write_manifest(
            tmp_path,
            fault_manifest(
                pg_database, postgres_server.postgres_port, kafka_sink(stack.kafka_bootstrap, prefix)
            ),
        )
        writer = LoadWriter(postgres_target(pg_database.admin_dsn), TABLES, seed=seed, rows_per_second=200)
        worker = start_worker(manifest, env=WORKER_ENV)
        try:
            worker.wait_ready(timeout=30)
            writer.start()
            time.sleep(3.0)
            print(f"streaming: {writer.rows_so_far()} rows written before the outage")
            outage = _stop_kafka_and_watch(stack, pg_database, worker, writer)
            print(f"outage: {outage}")
            after_outage = _wait_ready_again(stack, worker)
            time.sleep(2.0)  # streaming live rows again, after the backlog
            # A broker restart while streaming: stopped and started again at once, with batches
            # in flight rather than a backlog waiting for a broker long gone.
            stopping = time.monotonic()
            stack.down("kafka")
            after_restart = (
                f"stopped in {time.monotonic() - stopping:.1f} s; {_wait_ready_again(stack, worker)}"
            )
            time.sleep(2.0)
            report, records = drain_to_kafka(pg_database, stack.kafka_bootstrap, topics, worker, writer)
        finally:
            cleanup(writer, worker)
    fault_report(
        report,
        peak_rss_mib=worker.peak_rss_mib,
        notes=[
            f"writer {writer.stats}",
            f"Kafka stopped {outage}; {after_outage}",
            f"Kafka restarted while streaming: {after_restart}",
        ],
    )
    assert outage.rows_written > 0, "the writer committed nothing during the outage"
    assert outage.unready.after is not None, (
        f"/readyz stayed 200 during a {OUTAGE_SECONDS:.0f} s Kafka outage"
    )
    assert "sink events" in outage.unready.reason, f"the reason must name the sink: {outage.unready.reason}"
    assert outage.cpu_share < 0.5, f"the worker used {outage.cpu_share:.0%} of a core waiting for Kafka"
    assert_at_least_once(report, seed)
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
