"""The network between the worker and PostgreSQL breaks, under a steady write load.

Through a TCP proxy of ours: every connection is reset, then the network drops everything for
longer than the source's silence limit. The worker must notice both (a reset at once, a silent
connection within `SILENCE_LIMIT`), reconnect, count the reconnects, and lose nothing; duplicates
are replays with the same event ids, bounded as usual.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaforge.sources.postgres.source import STATUS_INTERVAL
from hack.stack.config import HOST, Settings
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import assert_at_least_once, cleanup, kafka_sink, wait_reconnects
from tests.support.load import LoadWriter, postgres_target
from tests.support.pg_faults import TABLES, WORKER_ENV, drain_to_kafka, fault_manifest, prepare_source
from tests.support.tcp_proxy import tcp_proxy
from tests.support.verify import create_topics, delete_topics
from tests.support.worker import Worker, start_worker, write_manifest

BLACKHOLE_SECONDS = 3 * STATUS_INTERVAL + 15  # beyond the silence limit, with room to notice


@pytest.fixture
def topics(kafka_server: Settings) -> Iterator[tuple[str, list[str]]]:
    prefix = unique_name("net")
    names = [f"{prefix}.{table}" for table in TABLES]
    create_topics(kafka_server.kafka_bootstrap, names, partitions=3)
    yield prefix, names
    delete_topics(kafka_server.kafka_bootstrap, names)


def test_reset_and_silent_connections_are_noticed_and_nothing_is_lost(
    pg_database: PgDatabase,
    kafka_server: Settings,
    topics: tuple[str, list[str]],
    tmp_path: Path,
    fault_report: FaultReport,
) -> None:
    seed = fault_report.seed
    prefix, names = topics
    prepare_source(pg_database)
    writer = LoadWriter(postgres_target(pg_database.admin_dsn), TABLES, seed=seed, rows_per_second=200)
    worker: Worker | None = None
    with tcp_proxy(HOST, kafka_server.postgres_port) as proxy:
        manifest = write_manifest(
            tmp_path,
            fault_manifest(pg_database, proxy.port, kafka_sink(kafka_server.kafka_bootstrap, prefix)),
        )
        try:
            worker = start_worker(manifest, env=WORKER_ENV)
            worker.wait_ready(timeout=60)
            writer.start()
            time.sleep(3.0 + random.Random(seed).uniform(0, 2))
            proxy.reset()
            wait_reconnects(worker, 1, 60, "after every connection was reset")
            print(f"reset: reconnected after {time.monotonic() - fault_report.began:.1f} s of test")
            worker.wait_ready(timeout=60)
            time.sleep(2.0)
            proxy.blackhole()
            silent_from = time.monotonic()
            wait_reconnects(worker, 2, BLACKHOLE_SECONDS, "while the network dropped everything")
            noticed = time.monotonic() - silent_from
            print(f"blackhole: a dead connection noticed after {noticed:.1f} s")
            proxy.restore()
            worker.wait_ready(timeout=90)
            time.sleep(2.0)
            report, _ = drain_to_kafka(pg_database, kafka_server.kafka_bootstrap, names, worker, writer)
        finally:
            cleanup(writer, worker)
    fault_report(
        report,
        peak_rss_mib=worker.peak_rss_mib,
        notes=[
            f"writer {writer.stats}",
            f"every connection reset, then a blackhole noticed after {noticed:.1f} s; "
            f"proxy connections {proxy.connections}",
        ],
    )
    assert "dead or stalled" in worker.log(), "the reconnect after the blackhole must say why"
    assert_at_least_once(report, seed)
