"""Checks and set-up before streaming: wal_level, privileges, tables, publication, slot.

Every failure is a SourceConfigError naming the setting and the fix, raised before the first
change is read, so a misconfigured pipeline fails fast instead of retrying forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.patterns import TablePatterns
from deltaforge.sources.postgres.connection import PostgresSettings, connect, translate
from deltaforge.sources.postgres.stream import SlotLostError

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Plan:
    """What preflight found: the tables to stream and whether the slot was created now."""

    tables: list[tuple[str, str]]
    slot_created: bool


async def preflight(
    settings: PostgresSettings,
    patterns: TablePatterns,
    *,
    slot: str,
    create_slot: bool,
    publication: str,
    create_publication: bool,
) -> Plan:
    connection = await connect(settings)
    try:
        async with connection.cursor() as cursor:
            await _check_wal_level(cursor)
            await _check_role(cursor, settings.user)
            tables = await _matching_tables(cursor, patterns, settings.database)
            await _ensure_publication(cursor, publication, create_publication, tables)
            created = await _ensure_slot(cursor, slot, create_slot, settings.database)
        return Plan(tables=tables, slot_created=created)
    except psycopg.Error as error:
        raise translate(error, settings) from error
    finally:
        await connection.close()


async def _check_wal_level(cursor: psycopg.AsyncCursor[tuple[object, ...]]) -> None:
    await cursor.execute("SHOW wal_level")
    row = await cursor.fetchone()
    level = str(row[0]) if row else "unknown"
    if level != "logical":
        raise SourceConfigError(
            f"PostgreSQL wal_level is '{level}', logical replication needs 'logical': "
            "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"
        )


async def _check_role(cursor: psycopg.AsyncCursor[tuple[object, ...]], user: str) -> None:
    await cursor.execute("SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user")
    row = await cursor.fetchone()
    if not row or not (row[0] or row[1]):
        raise SourceConfigError(
            f"role '{user}' lacks the REPLICATION attribute needed to stream changes: ALTER ROLE \"{user}\" REPLICATION"
        )


async def _matching_tables(
    cursor: psycopg.AsyncCursor[tuple[object, ...]], patterns: TablePatterns, database: str
) -> list[tuple[str, str]]:
    await cursor.execute(_TABLES)
    every = [(str(schema), str(table)) for schema, table in await cursor.fetchall()]
    missing = patterns.unmatched(every)
    if missing:
        raise SourceConfigError(
            f"no table in database '{database}' matches {', '.join(repr(p) for p in missing)} "
            "(spec.source.postgres.tables): check the schema and table names"
        )
    return [(schema, table) for schema, table in every if patterns.matches(schema, table)]


async def _ensure_publication(
    cursor: psycopg.AsyncCursor[tuple[object, ...]], name: str, create: bool, tables: list[tuple[str, str]]
) -> None:
    await cursor.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", [name])
    published = {(str(schema), str(table)) for schema, table in await cursor.fetchall()}
    await cursor.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name])
    exists = await cursor.fetchone() is not None
    if not exists and not create:
        raise SourceConfigError(
            f"publication '{name}' does not exist: create it (CREATE PUBLICATION \"{name}\" FOR TABLE ...) "
            "or set spec.source.postgres.publication.create: true"
        )
    missing = [table for table in tables if table not in published]
    if not missing:
        return
    if not create:
        listed = ", ".join(f"{schema}.{table}" for schema, table in missing)
        raise SourceConfigError(
            f"publication '{name}' does not include {listed}: ALTER PUBLICATION \"{name}\" ADD TABLE ..., "
            "or set spec.source.postgres.publication.create: true"
        )
    names = sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in missing)
    verb = "ALTER PUBLICATION {} ADD TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
    try:
        await cursor.execute(sql.SQL(verb).format(sql.Identifier(name), names))
    except psycopg.errors.InsufficientPrivilege as error:
        raise SourceConfigError(
            f"cannot {'alter' if exists else 'create'} publication '{name}': {str(error).strip()}; "
            "create it as the tables' owner, or grant the CDC role ownership/CREATE"
        ) from error


async def _ensure_slot(
    cursor: psycopg.AsyncCursor[tuple[object, ...]], name: str, create: bool, database: str
) -> bool:
    await cursor.execute(
        "SELECT plugin, database, slot_type, wal_status FROM pg_replication_slots WHERE slot_name = %s",
        [name],
    )
    row = await cursor.fetchone()
    if row is not None:
        plugin, slot_database, slot_type, wal_status = (str(value) for value in row)
        if wal_status == "lost":
            raise SlotLostError(name)
        if slot_type != "logical" or plugin != "pgoutput" or slot_database != database:
            raise SourceConfigError(
                f"replication slot '{name}' exists but is a {slot_type} slot for plugin {plugin} in database "
                f"{slot_database}; choose another spec.source.postgres.slot.name"
            )
        return False
    if not create:
        raise SourceConfigError(
            f"replication slot '{name}' does not exist and spec.source.postgres.slot.create is false: "
            f"create it (SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')) or set create: true"
        )
    await cursor.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [name])
    return True
