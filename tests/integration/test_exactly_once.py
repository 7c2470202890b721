"""Exactly-once into Kafka: a batch and the position it reaches commit in one Kafka transaction.

SIGKILLed again and again under a steady write load, the worker must leave a `read_committed`
consumer with every committed change exactly once: no loss, no duplicate. A second producer with
the same transactional id fences the first, which then stops instead of retrying.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltaforge.checkpoints.kafka import KafkaCheckpointStore
from deltaforge.envelopes import encode_key, encoder_for
from deltaforge.events import ChangeEvent, Checkpoint, Op, SourceInfo, event_ids
from deltaforge.sinks.base import SinkFencedError
from deltaforge.sinks.kafka import KafkaSink, KafkaTransaction
from hack.stack.config import Settings
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import (
    assert_exactly_once,
    exactly_once,
    exactly_once_storm,
    fail,
    kafka_sink,
)
from tests.support.load import LoadWriter, postgres_target
from tests.support.pg_faults import TABLES, WORKER_ENV, fault_manifest, prepare_source
from tests.support.verify import create_topics, delete_topics, read_topics
from tests.support.worker import write_manifest

KILLS = 20


class _NoFailures:
    def sink_failure(self, sink: str, kind: object) -> None:
        raise AssertionError(f"sink {sink} failed ({kind}) in a test that expects none")


@pytest.fixture
def eo_topics(kafka_server: Settings) -> Iterator[tuple[str, list[str], str]]:
    """Fresh data topics (three partitions each) and a checkpoint topic of this test's own."""
    prefix = unique_name("exactly")
    topics = [f"{prefix}.{table}" for table in TABLES]
    checkpoint_topic = f"{prefix}.checkpoints"
    create_topics(kafka_server.kafka_bootstrap, topics, partitions=3)
    yield prefix, topics, checkpoint_topic
    delete_topics(kafka_server.kafka_bootstrap, [*topics, checkpoint_topic])


def test_sigkill_storm_leaves_read_committed_consumers_exactly_once(
    pg_database: PgDatabase,
    kafka_server: Settings,
    eo_topics: tuple[str, list[str], str],
    tmp_path: Path,
    fault_report: FaultReport,
) -> None:
    seed = fault_report.seed
    rng = random.Random(seed)
    prefix, topics, checkpoint_topic = eo_topics
    prepare_source(pg_database)
    manifest = write_manifest(
        tmp_path,
        exactly_once(
            fault_manifest(
                pg_database,
                kafka_server.postgres_port,
                kafka_sink(kafka_server.kafka_bootstrap, prefix),
                "200ms",
            ),
            checkpoint_topic,
        ),
    )
    writer = LoadWriter(
        postgres_target(pg_database.admin_dsn), TABLES, seed=seed, rows_per_second=300, large_every=2.0
    )
    report, peak, notes = exactly_once_storm(
        manifest, writer, rng, KILLS, env=WORKER_ENV, bootstrap=kafka_server.kafka_bootstrap, topics=topics
    )
    fault_report(report, peak_rss_mib=peak, notes=notes)
    assert_exactly_once(report, seed)


def _events(count: int) -> list[ChangeEvent]:
    info = SourceInfo("postgres", "pg:fence:slot", "fence", "public", "t", "0/10", 0, "1")
    ids = event_ids(info.name, info.position)
    return [
        ChangeEvent(Op.CREATE, info, None, {"id": n}, {"id": n}, n, n == count - 1, ids(n), 0x11, 10)
        for n in range(count)
    ]


def _sink(bootstrap: str, topic: str, checkpoint_topic: str, transactional_id: str) -> KafkaSink:
    return KafkaSink(
        "events",
        required=True,
        bootstrap_servers=[bootstrap],
        topic_for=lambda _: topic,
        key_for=lambda event: encode_key(event.key),
        encode=encoder_for("native", "fence"),
        failures=_NoFailures(),
        transaction=KafkaTransaction(transactional_id, checkpoint_topic),
    )


def test_a_second_producer_fences_the_first_and_the_checkpoint_reads_back(
    kafka_server: Settings, eo_topics: tuple[str, list[str], str]
) -> None:
    _, topics, checkpoint_topic = eo_topics
    bootstrap = kafka_server.kafka_bootstrap
    transactional_id = unique_name("fence")

    async def scenario() -> None:
        first = _sink(bootstrap, topics[0], checkpoint_topic, transactional_id)
        store = KafkaCheckpointStore(first, [bootstrap])
        assert await store.load() is None, "a new transactional id has no checkpoint"
        await first.start()
        await first.write(_events(3), Checkpoint("0/10", -1, 0x11))
        assert await store.load() == Checkpoint("0/10", -1, 0x11)
        second = _sink(bootstrap, topics[0], checkpoint_topic, transactional_id)
        await second.start()  # takes over the transactional id: the first is now a zombie
        try:
            with pytest.raises(SinkFencedError, match=transactional_id):
                await asyncio.wait_for(first.write(_events(3), Checkpoint("0/20", -1, 0x21)), 60)
            await second.write([], Checkpoint("0/30", 1, 0))  # a checkpoint-only transaction
            assert await KafkaCheckpointStore(second, [bootstrap]).load() == Checkpoint("0/30", 1, 0)
        finally:
            await second.close()
            await first.close()

    asyncio.run(scenario())
    committed, _ = read_topics(bootstrap, [topics[0]], within=30, read_committed=True)
    if len(committed) != 3:
        fail(f"expected the 3 records of the one committed transaction, read {len(committed)}")
