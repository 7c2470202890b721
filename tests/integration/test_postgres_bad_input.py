"""Bad input reaches the user as one clear message that names the problem and the fix.

Every case runs the real `deltaforge` CLI as a process and checks what a user would see: a
non-zero exit (1 for a configuration error), no traceback anywhere, exactly one error naming the
setting, no retry loop, and a /readyz that never said 200.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.support.cli_runs import CONFIG_ERROR_EXIT, Run, assert_config_error, run_cli, run_worker_to_exit
from tests.support.pg_instance import PgInstance, throwaway_postgres
from tests.support.pipelines import postgres_pipeline
from tests.support.worker import running_worker, write_manifest

TABLES = "CREATE TABLE orders (id bigint PRIMARY KEY, note text)"
SLOT_IN_USE_EXIT_WITHIN = 30.0

MALFORMED_YAML = """\
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata:
  name: broken
spec:
  source:
    postgres:
      host: 127.0.0.1: 5432
      database: shop
"""
MALFORMED_LINE = 8

UNKNOWN_FIELD_AND_BAD_DURATIONS = """\
apiVersion: deltaforge.io/v1alpha1
kind: Pipeline
metadata:
  name: misspelt
spec:
  source:
    postgres:
      host: 127.0.0.1
      database: shop
      user: deltaforge
      tables: [public.orders]
      colour: blue
      heartbeat: {interval: 5 parsecs}
  sinks:
    - name: out
      stdout: {}
  batch: {maxDelay: soon}
"""


@pytest.fixture
def orders_database(pg_database: PgDatabase) -> PgDatabase:
    """The test's database with an `orders` table and a publication named like the database."""
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute(TABLES)
        admin.execute(f"CREATE PUBLICATION {pg_database.name} FOR TABLE orders")
    return pg_database


def _pipeline(database: PgDatabase, settings: Settings, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "port": settings.postgres_port,
        "database": database.name,
        "user": PG_CDC_USER,
        "tables": ["public.orders"],
        "slot": database.name,
        "publication": database.name,
        **overrides,
    }
    return postgres_pipeline(database.name, **options)


def _assert_plain_failure(run: Run, *fragments: str) -> None:
    assert "Traceback" not in run.output, f"a traceback reached the user: {run.describe()}"
    assert run.returncode == CONFIG_ERROR_EXIT, f"expected exit {CONFIG_ERROR_EXIT}: {run.describe()}"
    missing = [fragment for fragment in fragments if fragment not in run.output]
    assert not missing, f"the output does not mention {missing}: {run.describe()}"


# --- manifests ------------------------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(MALFORMED_YAML)
    where = f"line {MALFORMED_LINE}"
    for args in (["validate", str(manifest)], ["run", str(manifest), "--http-port", "0"]):
        run = run_cli(args, cwd=tmp_path)
        _assert_plain_failure(run, str(manifest), where, "invalid YAML")
        assert run.output.count("invalid YAML") == 1, f"one message per problem: {run.describe()}"
        assert "http_listening" not in run.output, "a bad manifest must fail before anything starts"


def test_unknown_field_and_bad_durations_are_all_listed_with_their_paths(tmp_path: Path) -> None:
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(UNKNOWN_FIELD_AND_BAD_DURATIONS)
    expected = [
        "spec.source.postgres.colour: unknown field 'colour'",
        "spec.source.postgres.heartbeat.interval: '5 parsecs' is not a duration",
        "spec.batch.maxDelay: 'soon' is not a duration",
    ]
    for args in (["validate", str(manifest)], ["run", str(manifest), "--http-port", "0"]):
        run = run_cli(args, cwd=tmp_path)
        _assert_plain_failure(run, *expected)
        problem_lines = [line for line in run.output.splitlines() if re.search(r"(^|: )spec\.", line)]
        assert len(problem_lines) == len(expected), f"one line per problem: {run.describe()}"


def test_http_port_already_taken_names_the_option(tmp_path: Path) -> None:
    # The database is never contacted: the worker must stop before it reads anything.
    manifest = write_manifest(
        tmp_path,
        postgres_pipeline(
            "port-taken", port=1, database="unused", user=PG_CDC_USER, tables=["public.orders"],
            slot="unused", publication="unused", password="unused",
        ),
    )  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        run = run_cli(
            ["run", str(manifest), "--http-host", "127.0.0.1", "--http-port", str(port)],
            cwd=tmp_path,
            timeout=30,
        )
    assert_config_error(run, f"127.0.0.1:{port}", "address already in use", "--http-port")


# --- the database refuses ------------------------------------------------------------------


def test_wrong_password_names_the_password_field(
    orders_database: PgDatabase, postgres_server: Settings, tmp_path: Path
) -> None:
    wrong = f"Wrong-{unique_name('pw')}"
    manifest = write_manifest(tmp_path, _pipeline(orders_database, postgres_server))
    run = run_worker_to_exit(manifest, env={"PG_PASSWORD": wrong})
    assert_config_error(run, "rejected the password", f"'{PG_CDC_USER}'", "spec.source.postgres.password")
    assert wrong not in run.output, "the rejected password itself must not be printed"


def test_missing_table_names_the_pattern_and_the_database(
    orders_database: PgDatabase, postgres_server: Settings, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path, _pipeline(orders_database, postgres_server, tables=["public.no_such_table"])
    )
    run = run_worker_to_exit(manifest, env={"PG_PASSWORD": PG_CDC_PASSWORD})
    assert_config_error(
        run, "'public.no_such_table'", f"database '{orders_database.name}'", "spec.source.postgres.tables"
    )


def test_missing_publication_names_it_and_the_fix(
    pg_database: PgDatabase, postgres_server: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute(TABLES)
    publication = unique_name("pub")
    manifest = write_manifest(
        tmp_path, _pipeline(pg_database, postgres_server, publication=publication, create_publication=False)
    )
    run = run_worker_to_exit(manifest, env={"PG_PASSWORD": PG_CDC_PASSWORD})
    assert_config_error(
        run,
        f"publication '{publication}' does not exist",
        f'CREATE PUBLICATION "{publication}"',
        "spec.source.postgres.publication.create: true",
    )


@pytest.fixture
def replica_wal_server() -> Iterator[PgInstance]:
    """A server of our own with wal_level=replica; stopped and deleted even when the test fails."""
    with throwaway_postgres(
        {"wal_level": "replica"}, user="cdc", password=unique_name("pw"), database="shop"
    ) as instance:
        with instance.superuser_connection(instance.database) as admin:
            admin.execute(TABLES)
        yield instance


def test_wal_level_replica_names_the_setting_and_the_fix(
    replica_wal_server: PgInstance, tmp_path: Path
) -> None:
    server = replica_wal_server
    manifest = write_manifest(
        tmp_path,
        postgres_pipeline(
            "replica-wal", port=server.port, database=server.database, user=server.user,
            tables=["public.orders"], slot="df_replica_wal", publication="df_replica_wal",
            create_publication=True,
        ),
    )  # fmt: skip
    run = run_worker_to_exit(manifest, env={"PG_PASSWORD": server.password})
    assert_config_error(run, "wal_level is 'replica'", "wal_level = logical", "restart PostgreSQL")
    with server.superuser_connection(server.database) as admin:
        slots = admin.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
        publications = admin.execute("SELECT pubname FROM pg_publication").fetchall()
    assert slots == [], "preflight must refuse before it creates a slot"
    assert publications == [], "preflight must refuse before it creates a publication"


def test_slot_read_by_another_worker_fails_fast_and_leaves_the_first_alone(
    orders_database: PgDatabase, postgres_server: Settings, tmp_path: Path
) -> None:
    manifest = _pipeline(orders_database, postgres_server)
    env = {"PG_PASSWORD": PG_CDC_PASSWORD}
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with running_worker(write_manifest(first_dir, manifest), env=env) as first:
        started = time.monotonic()
        second = run_worker_to_exit(
            write_manifest(second_dir, manifest), env=env, timeout=SLOT_IN_USE_EXIT_WITHIN
        )
        elapsed = time.monotonic() - started
        assert_config_error(
            second,
            f"another process reads slot '{orders_database.name}'",
            "spec.source.postgres.slot.name",
        )
        status, body = first.get("/readyz")
        assert status == 200, f"the first worker must keep streaming: {status} {body}\n{first.log()[-3000:]}"
    assert elapsed < SLOT_IN_USE_EXIT_WITHIN


def test_an_invalidated_slot_is_a_clear_error_never_a_silent_restart(tmp_path: Path) -> None:
    """A slot the server invalidated (max_slot_wal_keep_size) lost changes: refuse, do not resume."""
    settings = {"wal_level": "logical", "max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB"}
    with throwaway_postgres(settings, user="cdc", password=unique_name("pw"), database="shop") as server:
        with server.superuser_connection(server.database) as admin:
            admin.autocommit = True
            admin.execute(TABLES)
            admin.execute("CREATE PUBLICATION df_lost FOR TABLE orders")
            admin.execute("SELECT pg_create_logical_replication_slot('df_lost', 'pgoutput')")
            # Nobody reads the slot while far more WAL than it may keep is written and recycled.
            for _ in range(4):
                admin.execute(
                    "CREATE TABLE filler AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, 20000)"
                )
                admin.execute("DROP TABLE filler")
                admin.execute("SELECT pg_switch_wal()")
                admin.execute("CHECKPOINT")
            status = admin.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'df_lost'"
            ).fetchone()
        assert status == ("lost",), f"the test could not invalidate the slot: {status}"
        manifest = write_manifest(
            tmp_path,
            postgres_pipeline(
                "lost-slot", port=server.port, database=server.database, user=server.user,
                tables=["public.orders"], slot="df_lost", publication="df_lost",
            ),
        )  # fmt: skip
        run = run_worker_to_exit(manifest, env={"PG_PASSWORD": server.password})
    assert_config_error(
        run, "replication slot 'df_lost' was invalidated", "max_slot_wal_keep_size", "re-snapshot"
    )
