"""What a running worker shows operators: heartbeats that free WAL, metrics, probes, status, and
never a password.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from deltaforge.observability.metrics import METRIC_FAMILIES
from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import PgDatabase, RedisNamespace, unique_name
from tests.support.cli_runs import assert_config_error, run_worker_to_exit
from tests.support.pipelines import postgres_pipeline
from tests.support.worker import Worker, running_worker, write_manifest

TABLES = """
CREATE TABLE orders (id bigint PRIMARY KEY, note text);
CREATE TABLE audit (id bigint PRIMARY KEY, what text);
"""
TENANT = "acme"
WAL_WRITING_SECONDS = 4.0
SLOT_ADVANCE_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 60.0
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)


def _prepare(database: PgDatabase) -> None:
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        admin.execute(TABLES)
        admin.execute(f"CREATE PUBLICATION {database.name} FOR TABLE orders, audit")


def _pipeline(database: PgDatabase, settings: Settings, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "port": settings.postgres_port,
        "database": database.name,
        "user": PG_CDC_USER,
        "tables": ["public.orders", "public.audit"],
        "slot": database.name,
        "publication": database.name,
        "heartbeat": "1s",
        **overrides,
    }
    return postgres_pipeline(database.name, **options)


def _status(worker: Worker) -> dict[str, Any]:
    code, body = worker.get("/status")
    assert code == 200, f"/status answered {code}: {body}\n{worker.log()[-3000:]}"
    document: dict[str, Any] = json.loads(body)
    return document


def _wait_delivered(worker: Worker, expected: int, timeout: float = DELIVERY_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status = _status(worker)
    while status.get("deliveredEvents") != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        status = _status(worker)
    assert status.get("deliveredEvents") == expected, (
        f"expected {expected} delivered events within {timeout:.0f} s; /status: {status}\n{worker.log()[-3000:]}"
    )
    return status


# --- heartbeats -----------------------------------------------------------------------------


def _slot_position(admin_dsn: str, slot: str, beyond: str) -> tuple[str, bool]:
    """The slot's confirmed_flush_lsn, and whether it is at or past `beyond`."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= %s::pg_lsn "
            "FROM pg_replication_slots WHERE slot_name = %s",
            [beyond, slot],
        ).fetchone()
    assert row is not None, f"replication slot {slot} does not exist"
    return str(row[0]), bool(row[1])


def test_idle_pipeline_confirms_its_slot_while_another_database_writes(
    pg_database: PgDatabase, postgres_server: Settings, tmp_path: Path
) -> None:
    _prepare(pg_database)
    manifest = write_manifest(tmp_path, _pipeline(pg_database, postgres_server))
    busy_database = unique_name("busy")
    server_dsn = postgres_server.postgres_dsn()
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(busy_database)))
    try:
        with running_worker(manifest, env={"PG_PASSWORD": PG_CDC_PASSWORD}) as worker:
            started_at, _ = _slot_position(pg_database.admin_dsn, pg_database.name, "0/0")
            with psycopg.connect(postgres_server.postgres_dsn(busy_database), autocommit=True) as busy:
                busy.execute("CREATE TABLE noise (id bigserial PRIMARY KEY, payload text)")
                until = time.monotonic() + WAL_WRITING_SECONDS
                while time.monotonic() < until:
                    busy.execute(
                        "INSERT INTO noise (payload) SELECT repeat('x', 200) FROM generate_series(1, 50)"
                    )
                    time.sleep(0.05)
                written_row = busy.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert written_row is not None
            written = str(written_row[0])

            deadline = time.monotonic() + SLOT_ADVANCE_TIMEOUT
            position, caught_up = _slot_position(pg_database.admin_dsn, pg_database.name, written)
            while not caught_up and time.monotonic() < deadline:
                time.sleep(0.5)
                position, caught_up = _slot_position(pg_database.admin_dsn, pg_database.name, written)
            assert caught_up, (
                f"the idle pipeline's slot stayed at {position} (it started at {started_at}) although "
                f"another database wrote WAL up to {written}: heartbeats do not confirm the slot forward, "
                f"so it would pin WAL\n{worker.log()[-3000:]}"
            )
            _, moved = _slot_position(pg_database.admin_dsn, pg_database.name, started_at)
            assert moved, f"confirmed_flush_lsn went back from {started_at} to {position}"
            assert position != started_at, f"confirmed_flush_lsn did not increase from {started_at}"
            assert _status(worker)["deliveredEvents"] == 0, "the pipeline's own tables stayed idle"
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(busy_database))
            )


# --- metrics, probes and status --------------------------------------------------------------


def test_metrics_probes_and_status_after_a_short_run(
    pg_database: PgDatabase, kafka_server: Settings, redis_namespace: RedisNamespace, tmp_path: Path
) -> None:
    _prepare(pg_database)
    topic_prefix = unique_name("obs")
    sinks = [
        {"name": "events", "kafka": {"bootstrapServers": kafka_server.kafka_bootstrap, "topic": f"{topic_prefix}.${{source.table}}"}},
        {"name": "cache", "required": False, "redis": {"url": kafka_server.redis_url(), "stream": f"{redis_namespace.prefix}:${{source.table}}"}},
    ]  # fmt: skip
    # The filter drops the audit rows, so the processor families get samples too.
    processors = [{"filter": {"tables": ["public.orders"]}}]
    manifest = write_manifest(
        tmp_path,
        _pipeline(pg_database, kafka_server, sinks=sinks, processors=processors, tenant=TENANT),
    )
    pipeline = pg_database.name.replace("_", "-")
    with running_worker(manifest, env={"PG_PASSWORD": PG_CDC_PASSWORD}) as worker:
        with psycopg.connect(pg_database.admin_dsn, autocommit=True) as writer:
            writer.execute("INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
            writer.execute("INSERT INTO audit VALUES (1, 'x'), (2, 'y')")
            writer.execute("INSERT INTO orders VALUES (3, 'c')")
        inserted = {"public.orders": 3, "public.audit": 2}
        status = _wait_delivered(worker, expected=inserted["public.orders"])
        healthz, readyz = worker.get("/healthz"), worker.get("/readyz")
        code, exposition = worker.get("/metrics")

    assert healthz[0] == 200, f"/healthz: {healthz}"
    assert readyz[0] == 200, f"/readyz: {readyz}"
    assert (status["pipeline"], status["tenant"]) == (pipeline, TENANT), status
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", str(status["position"])), (
        f"/status must carry the position as an LSN: {status}"
    )
    assert status["ready"] is True, status

    assert code == 200, f"/metrics answered {code}: {exposition}"
    declared = dict(_TYPE_LINE.findall(exposition))
    missing = [name for name in METRIC_FAMILIES if name not in declared]
    assert not missing, f"/metrics lacks the families {missing}"
    unlabelled: dict[str, set[str]] = {}
    source_events: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.startswith("deltaforge_"):
                continue
            labels = sample.labels
            if labels.get("pipeline") != pipeline or labels.get("tenant") != TENANT:
                unlabelled.setdefault(sample.name, set()).add(
                    f"pipeline={labels.get('pipeline')!r} tenant={labels.get('tenant')!r}"
                )
            if sample.name == "deltaforge_source_events_total":
                source_events[labels["table"]] = sample.value
    assert source_events == {table: float(count) for table, count in inserted.items()}, (
        f"deltaforge_source_events_total must count every inserted row once: {source_events}"
    )
    assert not unlabelled, (
        f"every deltaforge_* series must carry pipeline={pipeline!r} and tenant={TENANT!r}; these do not: "
        + "; ".join(f"{name} ({', '.join(sorted(found))})" for name, found in sorted(unlabelled.items()))
    )


# --- secrets ---------------------------------------------------------------------------------


@pytest.fixture
def planted_role(pg_database: PgDatabase, postgres_server: Settings) -> Iterator[tuple[str, str]]:
    """A fresh REPLICATION role with a distinctive password, dropped afterwards."""
    role = unique_name("role")
    password = f"Pw{uuid.uuid4().hex}Zq"
    server_dsn = postgres_server.postgres_dsn()
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        yield role, password
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_password_never_reaches_logs_status_or_metrics(
    pg_database: PgDatabase, postgres_server: Settings, planted_role: tuple[str, str], tmp_path: Path
) -> None:
    role, password = planted_role
    _prepare(pg_database)
    env = {"PG_PASSWORD": password, "DELTAFORGE_LOG": "debug"}
    manifest = write_manifest(tmp_path, _pipeline(pg_database, postgres_server, user=role))
    with running_worker(manifest, env=env) as worker:
        with psycopg.connect(pg_database.admin_dsn, autocommit=True) as writer:
            writer.execute("INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
        _wait_delivered(worker, expected=2)
        answers = {path: worker.get(path) for path in ("/status", "/metrics", "/healthz", "/readyz")}
    for path, (code, body) in answers.items():
        assert code == 200, f"{path} answered {code}: {body}"
        assert password not in body, f"{path} shows the password"
    log = worker.log()
    assert '"level":"debug"' in log, "DELTAFORGE_LOG=debug: the most verbose log is the one checked"
    assert password not in log, "the worker's log shows the password"
    assert password not in (tmp_path / "checkpoint.json").read_text(), "the checkpoint holds the password"

    # An error path, at debug level too: the message names the problem and not the password.
    failing_dir = tmp_path / "failing"
    failing_dir.mkdir()
    failing = write_manifest(
        failing_dir, _pipeline(pg_database, postgres_server, user=role, tables=["public.gone"])
    )
    run = run_worker_to_exit(failing, env=env)
    assert_config_error(run, "'public.gone'")
    assert password not in run.output, "the failing worker's log shows the password"
