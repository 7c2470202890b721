"""Exactly-once from MariaDB into Kafka: SIGKILLed again and again under a steady write load, the
worker must leave a `read_committed` consumer with every committed change exactly once.

A binlog has no slot: the position is only in Kafka, committed in the transaction of each batch
(docs/guarantees.md), so a restarted worker resumes exactly after the last committed batch. A
first worker pins the start position (without a checkpoint a worker starts at the server's
current position) and stops; the writes begin after that, so every one of them is captured.

The kill schedule is random; its seed is printed, and DELTAFORGE_FAULT_SEED replays a run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from hack.stack.config import MYSQL_CDC_PASSWORD, Settings
from tests.fixtures.data_stack import MysqlDatabase
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import (
    assert_exactly_once,
    exactly_once,
    exactly_once_storm,
    fail,
    fault_topics,
)
from tests.support.load import LoadWriter
from tests.support.mysql_load import (
    MARIADB_POSITIONS,
    create_load_tables,
    mariadb_target,
    mysql_manifest,
    pin_start_position,
)
from tests.support.verify import read_topics
from tests.support.worker import Worker, write_manifest

KILLS = 20
TABLES = ("load_a", "load_b")
ENV = {"MYSQL_PASSWORD": MYSQL_CDC_PASSWORD}


def _checkpoint_committed(bootstrap: str, checkpoint_topic: str) -> Callable[[Worker], None]:
    """Waits for a worker's first checkpoint: an exactly-once pipeline commits it to Kafka."""

    def wait(worker: Worker) -> None:
        _, pinned = read_topics(bootstrap, [checkpoint_topic], until=bool, within=30, read_committed=True)
        if not pinned:
            fail(f"no checkpoint was committed to {checkpoint_topic} within 30 s", worker)

    return wait


def test_sigkill_storm_leaves_read_committed_consumers_exactly_once(
    mariadb_database: MysqlDatabase, kafka_server: Settings, tmp_path: Path, fault_report: FaultReport
) -> None:
    seed = fault_report.seed
    rng = random.Random(seed)
    bootstrap = kafka_server.kafka_bootstrap
    create_load_tables(mariadb_database, TABLES)
    with fault_topics(bootstrap, "myeo", TABLES) as (prefix, topics):
        checkpoint_topic = f"{prefix}.checkpoints"
        spec = mysql_manifest(mariadb_database, bootstrap, prefix, tables=[f"{mariadb_database.name}.load_*"])
        # Batches wait up to 200 ms: most kills then find read, uncommitted transactions.
        spec["spec"]["batch"]["maxDelay"] = "200ms"
        manifest = write_manifest(tmp_path, exactly_once(spec, checkpoint_topic))
        pin_start_position(manifest, ENV, _checkpoint_committed(bootstrap, checkpoint_topic))
        writer = LoadWriter(
            mariadb_target(mariadb_database), TABLES, seed=seed, rows_per_second=300, large_every=2.0
        )
        report, peak, notes = exactly_once_storm(
            manifest,
            writer,
            rng,
            KILLS,
            env=ENV,
            bootstrap=bootstrap,
            topics=topics,
            positions=MARIADB_POSITIONS,
        )
    fault_report(report, peak_rss_mib=peak, notes=notes)
    assert_exactly_once(report, seed)
