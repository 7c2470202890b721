"""A row a sink cannot write becomes a dead letter; the pipeline goes on.

Against the real stack: a row larger than the Kafka sink's maxRequestSize and a jsonb document
with an integer beyond 64 bits (JSON that orjson cannot write) sit between ordinary rows. Every
ordinary row must arrive, the two bad ones must be in the dead-letter topic and stream with their
reason and key, the failures counted by kind, and a warning logged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families

from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import PgDatabase, RedisNamespace, unique_name
from tests.support.pipelines import postgres_pipeline
from tests.support.worker import Worker, consume, running_worker, values, write_manifest

HUGE_NOTE_BYTES = 100_000  # beyond the sink's maxRequestSize of 64 KiB
BIG_INTEGER = "123456789012345678901234567890"


def _prepare(database: PgDatabase) -> None:
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE docs (id bigint PRIMARY KEY, doc jsonb, note text)")
        admin.execute(f"CREATE PUBLICATION {database.name} FOR TABLE docs")


def _write_rows(database: PgDatabase) -> None:
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        for row in range(1, 4):
            admin.execute("INSERT INTO docs VALUES (%s, '{\"n\": 1}', 'ok')", [row])
        admin.execute("INSERT INTO docs VALUES (4, '{\"n\": 1}', %s)", ["x" * HUGE_NOTE_BYTES])
        admin.execute(f"INSERT INTO docs VALUES (5, '{{\"n\": {BIG_INTEGER}}}', 'big number')")
        for row in range(6, 9):
            admin.execute("INSERT INTO docs VALUES (%s, '{\"n\": 2}', 'after')", [row])


def _failures(worker: Worker) -> dict[tuple[str, str], float]:
    code, exposition = worker.get("/metrics")
    assert code == 200, exposition
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "deltaforge_sink_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["sink"], sample.labels["kind"])] = sample.value
    return counts


def test_rows_a_sink_cannot_write_become_dead_letters_and_the_stream_goes_on(
    pg_database: PgDatabase,
    kafka_server: Settings,
    redis_namespace: RedisNamespace,
    tmp_path: Path,
) -> None:
    _prepare(pg_database)
    topic = unique_name("dlq-data")
    dead_topic = f"{topic}.deadletter"
    stream = redis_namespace.key("docs")
    dead_stream = redis_namespace.key("deadletter")
    sinks: list[dict[str, Any]] = [
        {
            "name": "events",
            "kafka": {
                "bootstrapServers": kafka_server.kafka_bootstrap,
                "topic": topic,
                "maxRequestSize": "64Ki",
                "deadLetterTopic": dead_topic,
            },
        },
        {
            "name": "cache",
            "redis": {"url": redis_namespace.url, "stream": stream, "deadLetterStream": dead_stream},
        },
    ]
    manifest = postgres_pipeline(
        pg_database.name, port=kafka_server.postgres_port, database=pg_database.name, user=PG_CDC_USER,
        tables=["public.docs"], slot=pg_database.name, publication=pg_database.name, sinks=sinks,
    )  # fmt: skip
    with running_worker(write_manifest(tmp_path, manifest), env={"PG_PASSWORD": PG_CDC_PASSWORD}) as worker:
        _write_rows(pg_database)
        delivered = values(consume(kafka_server.kafka_bootstrap, [topic], expected=6, timeout=60))
        dead = values(consume(kafka_server.kafka_bootstrap, [dead_topic], expected=2, timeout=60))
        deadline = time.monotonic() + 30
        while _failures(worker).get(("cache", "serialization"), 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        failures = _failures(worker)
        log = worker.log()
    client = redis.Redis.from_url(redis_namespace.url, decode_responses=True)
    with client:
        cached: Any = client.xrange(stream)
        cache_dead: Any = client.xrange(dead_stream)

    assert sorted(event["after"]["id"] for event in delivered) == [1, 2, 3, 6, 7, 8], (
        f"Kafka must hold every writable row, in spite of rows 4 and 5: {[e['after']['id'] for e in delivered]}"
    )
    by_id = {letter["key"]["id"]: letter for letter in dead if isinstance(letter["key"], dict)}
    assert sorted(by_id) == [4, 5], f"dead letters: {dead}"
    assert by_id[4]["failure"] == "message_too_large"
    assert "maxRequestSize" in by_id[4]["reason"]
    assert by_id[5]["failure"] == "serialization"
    assert (by_id[4]["source"]["table"], by_id[4]["sink"]) == ("docs", "events")
    assert failures.get(("events", "message_too_large")) == 1, failures
    assert failures.get(("events", "serialization")) == 1, failures
    # Redis takes the large row; only the big integer cannot be written there.
    assert sorted(int(json.loads(entry["data"])["after"]["id"]) for _, entry in cached) == [
        1,
        2,
        3,
        4,
        6,
        7,
        8,
    ]
    assert [json.loads(entry["data"])["failure"] for _, entry in cache_dead] == ["serialization"]
    assert failures.get(("cache", "serialization")) == 1, failures
    assert '"events_dead_lettered"' in log
    assert '"level":"warning"' in log
