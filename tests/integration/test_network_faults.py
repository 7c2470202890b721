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
from tests.support.load import LoadWriter
from tests.support.pg_faults import (
    TABLES,
    WORKER_ENV,
    cleanup,
    drain_and_verify,
    fail,
    fault_manifest,
    fault_seed,
    prepare_source,
)
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


def _reconnects(worker: Worker) -> int:
    code, exposition = worker.get("/metrics")
    if code != 200:
        fail(f"/metrics answered {code}", worker)
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in exposition.splitlines()
            if line.startswith("deltaforge_source_reconnects_total{")
        )
    )


def _wait_reconnects(worker: Worker, at_least: int, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while _reconnects(worker) < at_least:
        if time.monotonic() > deadline:
            fail(f"{what}: the worker counted {_reconnects(worker)} reconnects within {within:.0f} s", worker)
        time.sleep(0.5)


def test_reset_and_silent_connections_are_noticed_and_nothing_is_lost(
    pg_database: PgDatabase, kafka_server: Settings, topics: tuple[str, list[str]], tmp_path: Path
) -> None:
    began = time.monotonic()
    seed = fault_seed()
    prefix, names = topics
    prepare_source(pg_database)
    writer = LoadWriter(pg_database.admin_dsn, TABLES, seed=seed, rows_per_second=200)
    worker: Worker | None = None
    with tcp_proxy(HOST, kafka_server.postgres_port) as proxy:
        manifest = write_manifest(
            tmp_path, fault_manifest(pg_database, proxy.port, kafka_server.kafka_bootstrap, prefix)
        )
        try:
            worker = start_worker(manifest, env=WORKER_ENV)
            worker.wait_ready(timeout=60)
            writer.start()
            time.sleep(3.0 + random.Random(seed).uniform(0, 2))
            proxy.reset()
            _wait_reconnects(worker, 1, 60, "after every connection was reset")
            print(f"reset: reconnected after {time.monotonic() - began:.1f} s of test")
            worker.wait_ready(timeout=60)
            time.sleep(2.0)
            proxy.blackhole()
            silent_from = time.monotonic()
            _wait_reconnects(worker, 2, BLACKHOLE_SECONDS, "while the network dropped everything")
            noticed = time.monotonic() - silent_from
            print(f"blackhole: a dead connection noticed after {noticed:.1f} s")
            proxy.restore()
            worker.wait_ready(timeout=90)
            time.sleep(2.0)
            report, _ = drain_and_verify(pg_database, kafka_server.kafka_bootstrap, names, worker, writer)
        finally:
            cleanup(writer, worker)
    print(f"test time {time.monotonic() - began:.1f} s, proxy connections {proxy.connections}")
    assert "dead or stalled" in worker.log(), "the reconnect after the blackhole must say why"
    assert report.ok, f"delivery contract broken (seed {seed}):\n{report.summary()}"
