"""Redis, the pipeline's only (required) sink, is down for 30 s while PostgreSQL keeps committing.

Redis runs privately (tests/support/isolated_stack.py): other tests use the shared one. It stops
with `SHUTDOWN SAVE`, as a Redis with persistence stops, so what it acknowledged before the stop
is there after the start (the stack's Redis keeps nothing otherwise). The worker must stay up and
report itself not ready naming the sink, become ready again by itself once Redis is back, and in
the end every committed change must be in the Redis streams: nothing lost, a duplicate only an
exact replay (same event id, same bytes) of a write cut off by the stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis

from hack.stack.config import HOST, Settings
from hack.stack.process import port_open
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import Unready, assert_at_least_once, cleanup, drain_and_verify, fail, watch_outage
from tests.support.isolated_stack import IsolatedStack, isolated_stack
from tests.support.load import LoadWriter, postgres_target
from tests.support.pg_faults import (
    TABLES,
    WORKER_ENV,
    assert_acknowledged_on_stop,
    fault_manifest,
    prepare_source,
)
from tests.support.redis_streams import redis_reader
from tests.support.worker import Worker, start_worker, write_manifest

OUTAGE_SECONDS = 30.0


@dataclass
class Outage:
    """What the test saw while Redis was down."""

    unready: Unready
    rows_written: int
    ready_again_after: float  # seconds after Redis was started again

    def __str__(self) -> str:
        return (
            f"Redis down {OUTAGE_SECONDS:.0f} s, {self.rows_written} rows written meanwhile; /readyz 503 after "
            f"{self.unready.after} s ({self.unready.reason}); ready again {self.ready_again_after:.1f} s "
            "after Redis started"
        )


def _shutdown_saving(url: str, port: int) -> None:
    """Stop Redis as one with persistence stops: it writes its data set, then exits."""
    with redis.Redis.from_url(url) as client:
        client.shutdown(save=True)
    deadline = time.monotonic() + 15
    while port_open(HOST, port):
        if time.monotonic() > deadline:
            fail(f"Redis still listens on {HOST}:{port} 15 s after SHUTDOWN SAVE")
        time.sleep(0.1)


def _outage(stack: IsolatedStack, url: str, worker: Worker, writer: LoadWriter) -> Outage:
    rows_at_stop = writer.rows_so_far()
    _shutdown_saving(url, stack.port("DELTAFORGE_REDIS_PORT"))
    unready = watch_outage(worker, writer, OUTAGE_SECONDS, "Redis")
    rows_written = writer.rows_so_far() - rows_at_stop
    stack.up("redis")
    started = time.monotonic()
    worker.wait_ready(timeout=60)
    return Outage(unready, rows_written, time.monotonic() - started)


def test_redis_outage_loses_nothing_and_the_worker_says_why_it_waits(
    pg_database: PgDatabase, postgres_server: Settings, tmp_path: Path, fault_report: FaultReport
) -> None:
    seed = fault_report.seed
    with isolated_stack() as stack:
        stack.up("redis")
        url = f"redis://{HOST}:{stack.port('DELTAFORGE_REDIS_PORT')}/0"
        prefix = unique_name("redis")
        prepare_source(pg_database)
        sink = {"required": True, "redis": {"url": url, "stream": f"{prefix}:${{source.table}}"}}
        manifest = fault_manifest(pg_database, postgres_server.postgres_port, sink)
        writer = LoadWriter(postgres_target(pg_database.admin_dsn), TABLES, seed=seed, rows_per_second=200)
        worker = start_worker(write_manifest(tmp_path, manifest), env=WORKER_ENV)
        try:
            worker.wait_ready(timeout=60)
            writer.start()
            time.sleep(3.0)
            outage = _outage(stack, url, worker, writer)
            print(f"outage: {outage}")
            time.sleep(2.0)  # streaming live rows again, after the backlog
            report, _ = drain_and_verify(
                writer,
                redis_reader(url, [f"{prefix}:{table}" for table in TABLES]),
                worker,
                on_stopped=partial(assert_acknowledged_on_stop, pg_database),
            )
        finally:
            cleanup(writer, worker)
    fault_report(
        report,
        peak_rss_mib=worker.peak_rss_mib,
        notes=[f"writer {writer.stats}", str(outage)],
    )
    assert outage.rows_written > 0, "the writer committed nothing during the outage"
    assert outage.unready.after is not None, f"/readyz stayed 200 while Redis was down {OUTAGE_SECONDS:.0f} s"
    assert "sink events" in outage.unready.reason, f"the reason must name the sink: {outage.unready.reason}"
    assert_at_least_once(report, seed)
