"""Scenario `pg-latency`: the PostgreSQL half of `bench.latency` (its slot, its writer, its clock).

A change's moment is its transaction's commit time (`source.commitTime`), which PostgreSQL
records in the commit record with microseconds: exactly "from commit to Kafka".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from bench.latency import Backend, Insert
from bench.workload import PgTarget
from hack.stack.config import Settings

INSERT = (
    "INSERT INTO steady (id, qty, note, amount) "
    "SELECT n, n %% 100, 'note ' || n, n * 0.01 FROM generate_series(%s::bigint, %s::bigint) AS n"
)


class PgLatency(Backend):
    name = "pg-latency"
    database = "PostgreSQL"
    written = "commit time"

    def prepare(self, settings: Settings, name: str) -> None:
        target = PgTarget(port=settings.postgres_port)
        with psycopg.connect(target.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(target.dsn(name), autocommit=True) as admin:
            admin.execute(
                "CREATE TABLE steady (id bigint PRIMARY KEY, qty int, note text, amount numeric(12,2), "
                "created_at timestamptz DEFAULT clock_timestamp())"
            )
            admin.execute(sql.SQL("GRANT SELECT ON steady TO {}").format(sql.Identifier(target.cdc_user)))
            admin.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE steady").format(sql.Identifier(name)))
            admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [name])

    def drop(self, settings: Settings, name: str) -> None:
        with psycopg.connect(PgTarget(port=settings.postgres_port).dsn(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                [name],
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def source(self, settings: Settings, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        target = PgTarget(port=settings.postgres_port)
        return target.worker_source(name, "public.steady", name, name), target.secrets

    @contextmanager
    def writer(self, settings: Settings, name: str) -> Iterator[Insert]:
        with psycopg.connect(PgTarget(port=settings.postgres_port).dsn(name), autocommit=True) as connection:
            # The local stack turns synchronous_commit off for test speed; then a commit waits for
            # the WAL writer (wal_writer_delay, 200 ms) before the walsender may send it. The
            # writer uses PostgreSQL's default, as an application would.
            connection.execute("SET synchronous_commit = on")

            def insert(first: int, last: int) -> None:
                connection.execute(INSERT, [first, last])

            yield insert

    def written_ms(self, event: dict[str, Any]) -> float:
        return datetime.fromisoformat(event["source"]["commitTime"]).timestamp() * 1000
