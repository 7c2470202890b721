"""Table metadata for decoding rows: what each TableMapEvent says, plus what only the catalog knows.

With `binlog_row_metadata=FULL` every TableMapEvent carries the column names, types, signedness,
charsets, ENUM/SET members and primary key of the table *as it was when the row was written*, so
rows before and after an ALTER TABLE decode with their own columns. The one fact the binlog lacks
is MariaDB's JSON: a JSON column is LONGTEXT plus a `CHECK (json_valid(col))` constraint, found
in information_schema.CHECK_CONSTRAINTS. That lookup reflects the table *now*; it is cached per
table and dropped on every DDL statement the binlog shows, so a column turned JSON is parsed from
the next row on (and a value that does not parse stays a string).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from deltaforge.sources.mysql.values import Converter, converter_for

_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)
_JSON_COLUMNS_SQL = (
    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s"
)

JsonColumnsLookup = Callable[[str, str], frozenset[str]]


def json_columns_of(check_clauses: list[str]) -> frozenset[str]:
    """The columns that a table's CHECK constraints declare JSON (`json_valid(`col`)` exactly)."""
    found = set()
    for clause in check_clauses:
        match = _JSON_CHECK.fullmatch(clause.strip())
        if match is not None:
            found.add(match.group(1).replace("``", "`"))
    return frozenset(found)


class JsonColumns:
    """Which columns of a MariaDB table are JSON, cached until the next DDL statement.

    `query` runs one SQL statement on a control connection and returns its rows; on MySQL (whose
    JSON type is native and visible in the binlog) nothing is ever looked up.
    """

    def __init__(
        self, query: Callable[[str, tuple[str, ...]], list[tuple[Any, ...]]], *, mariadb: bool
    ) -> None:
        self._query, self._mariadb = query, mariadb
        self._cache: dict[tuple[str, str], frozenset[str]] = {}

    def __call__(self, schema: str, table: str) -> frozenset[str]:
        if not self._mariadb:
            return frozenset()
        key = (schema, table)
        found = self._cache.get(key)
        if found is None:
            rows = self._query(_JSON_COLUMNS_SQL, (schema, table))
            found = self._cache[key] = json_columns_of([str(row[0]) for row in rows])
        return found

    def forget(self) -> None:
        """Called for every DDL statement: any table may have changed."""
        self._cache.clear()


@dataclass(frozen=True, slots=True)
class TableShape:
    """How to turn the rows of one TableMapEvent into events."""

    schema: str
    table: str
    names: list[str]
    converters: list[Converter]
    key: list[str]  # primary key columns, in key order; empty when the table has none
    empty_sets: frozenset[str]  # SET columns, whose None may mean the empty set

    def key_of(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """The primary key columns of `row`: the default Kafka key."""
        if row is None or not self.key:
            return None
        if len(self.key) == 1:  # the common case, without a comprehension's frame
            name = self.key[0]
            return {name: row.get(name)}
        return {name: row.get(name) for name in self.key}


def shape_of(event: Any, json_columns: JsonColumnsLookup) -> TableShape:
    """The TableShape of a mysql-replication TableMapEvent."""
    columns = list(event.columns)
    names = [str(column.name) for column in columns]
    json = json_columns(event.schema, event.table) if any(_may_be_json(c) for c in columns) else frozenset()
    metadata = getattr(event, "optional_metadata", None)
    simple = list(getattr(metadata, "simple_primary_key_list", None) or [])
    prefixed = list((getattr(metadata, "primary_keys_with_prefix", None) or {}).keys())
    positions = simple or prefixed or [i for i, column in enumerate(columns) if column.is_primary]
    return TableShape(
        schema=event.schema,
        table=event.table,
        names=names,
        converters=[converter_for(column, json=column.name in json) for column in columns],
        key=[names[position] for position in positions if position < len(names)],
        empty_sets=frozenset(c.name for c in columns if c.type == FIELD_TYPE.SET),
    )


def _may_be_json(column: Any) -> bool:
    return column.type in (FIELD_TYPE.BLOB, FIELD_TYPE.LONG_BLOB) and column.character_set_name not in (
        None,
        "binary",
    )
