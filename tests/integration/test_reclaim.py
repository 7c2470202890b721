"""`python -m deltaforge.reclaim`: the cleanup Job's program, against the shared PostgreSQL.

It drops the slot, and the publication only when the Pipeline manages it; it is idempotent; it
refuses a slot in use; an unreachable server is an error that names it.
"""

from __future__ import annotations

import psycopg
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge.assembly import Secrets
from deltaforge.reclaim import ReclaimError, main, reclaim
from deltaforge.sources.errors import SourceUnavailable
from deltaforge.sources.postgres.connection import PostgresSettings, connect
from deltaforge.sources.postgres.stream import ReplicationStream
from deltaforge.spec import Pipeline, parse_pipeline
from hack.stack.config import HOST, PG_CDC_PASSWORD, PG_CDC_USER, Settings
from hack.stack.process import free_ports
from tests.fixtures.data_stack import PgDatabase
from tests.support.pipelines import postgres_pipeline

SECRETS = Secrets(environ={"PG_PASSWORD": PG_CDC_PASSWORD})


def _pipeline(database: PgDatabase, port: int, *, managed: bool) -> Pipeline:
    manifest = postgres_pipeline(
        "reclaimed", port=port, database=database.name, user=PG_CDC_USER, tables=["public.orders"],
        slot=database.name, publication=database.name, create_publication=managed,
    )  # fmt: skip
    manifest["spec"]["source"]["postgres"]["slot"]["reclaimPolicy"] = "Delete"
    return parse_pipeline(manifest)


def _names(database: PgDatabase) -> tuple[list[str], list[str]]:
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        slots = [row[0] for row in admin.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                                 [database.name])]  # fmt: skip
        publications = [row[0] for row in admin.execute("SELECT pubname FROM pg_publication")]
    return slots, publications


@pytest.fixture
def source(pg_database: PgDatabase) -> PgDatabase:
    """A slot and a publication as a worker with `publication.create: true` leaves them: its own."""
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id bigint PRIMARY KEY)")
        admin.execute(f"CREATE PUBLICATION {pg_database.name} FOR TABLE orders")
        admin.execute(f"ALTER PUBLICATION {pg_database.name} OWNER TO {PG_CDC_USER}")
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [pg_database.name])
    return pg_database


def _give_the_publication_to_the_admin(database: PgDatabase) -> None:
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        admin.execute(f"ALTER PUBLICATION {database.name} OWNER TO CURRENT_USER")


async def test_drops_the_slot_and_a_managed_publication_once(
    source: PgDatabase, postgres_server: Settings
) -> None:
    pipeline = _pipeline(source, postgres_server.postgres_port, managed=True)
    done = await reclaim(pipeline, SECRETS)
    assert done.startswith(f"dropped the replication slot '{source.name}'; dropped the publication")
    assert _names(source) == ([], [])
    again = await reclaim(pipeline, SECRETS)
    assert again.startswith(f"the replication slot '{source.name}' was gone already")


async def test_keeps_a_publication_the_user_made(source: PgDatabase, postgres_server: Settings) -> None:
    await reclaim(_pipeline(source, postgres_server.postgres_port, managed=False), SECRETS)
    assert _names(source) == ([], [source.name])
    _give_the_publication_to_the_admin(source)  # adopted with create: true, but not the role's own
    done = await reclaim(_pipeline(source, postgres_server.postgres_port, managed=True), SECRETS)
    assert done.endswith(f"kept the publication '{source.name}': another role owns it at {HOST}:"
                         f"{postgres_server.postgres_port}/{source.name} as {PG_CDC_USER}")  # fmt: skip
    assert _names(source) == ([], [source.name])


async def test_refuses_a_slot_in_use(source: PgDatabase, postgres_server: Settings) -> None:
    settings = PostgresSettings(
        HOST, postgres_server.postgres_port, source.name, PG_CDC_USER, PG_CDC_PASSWORD
    )
    reader = await connect(settings, replication=True)
    try:
        await ReplicationStream(reader).start(source.name, source.name)
        with pytest.raises(ReclaimError, match=rf"slot '{source.name}' at .* is in use by process \d+"):
            await reclaim(_pipeline(source, postgres_server.postgres_port, managed=True), SECRETS)
    finally:
        await reader.close()
    assert _names(source) == ([source.name], [source.name])


async def test_an_unreachable_server_is_named(source: PgDatabase) -> None:
    closed = free_ports(1)[0]
    with pytest.raises(SourceUnavailable, match=rf"PostgreSQL at {HOST}:{closed}/"):
        await reclaim(_pipeline(source, closed, managed=True), SECRETS)


def test_the_program_exits_1_with_the_reason(
    source: PgDatabase, tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_ports(1)[0]
    manifest = postgres_pipeline(
        "reclaimed", port=closed, database=source.name, user=PG_CDC_USER, tables=["public.orders"],
        slot=source.name, publication=source.name,
    )  # fmt: skip
    path = f"{tmp_path}/pipeline.yaml"
    with open(path, "w") as file:
        yaml.safe_dump(manifest, file)
    monkeypatch.setenv("PG_PASSWORD", PG_CDC_PASSWORD)
    assert main([path]) == 1
    assert capsys.readouterr().err.startswith(f"cleanup failed: PostgreSQL at {HOST}:{closed}/")
