"""mysql-replication's binlog events to records: transaction boundaries, decoded rows, TRUNCATE.

Boundaries, as the two servers write them:

- MariaDB: a GTID event opens every transaction (it stands for BEGIN); flag FL_STANDALONE marks
  a single statement with no COMMIT (DDL, TRUNCATE). InnoDB transactions end with an XID event,
  non-transactional ones (MyISAM, Aria) with a `COMMIT` query event.
- MySQL: a GTID event (or an anonymous one without GTIDs), then `BEGIN` ... XID / `COMMIT`, or
  the GTID event then the DDL statement alone.

So a transaction ends at an XID, at a COMMIT/ROLLBACK query, or right after a statement that
was not preceded by BEGIN. ROLLBACK ends it too: rows of non-transactional tables in the binlog
did change even though the transaction rolled back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pymysqlreplication.event import (
    FormatDescriptionEvent,
    GtidEvent,
    HeartbeatLogEvent,
    MariadbBinLogCheckPointEvent,
    MariadbGtidEvent,
    MariadbGtidListEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent

from deltaforge.events import Op
from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.mysql.catalog import JsonColumns, TableShape, shape_of
from deltaforge.sources.mysql.config import SYSTEM_SCHEMAS
from deltaforge.sources.mysql.records import Begin, Commit, Heartbeat, Record, Row, Rows, Truncate
from deltaforge.sources.mysql.rowcodec import TablePlan, compile_plan, event_body
from deltaforge.sources.mysql.values import convert_row

MARIADB_FL_STANDALONE: Final = 0x01
# Events whose payload mysql-replication cannot read: their transactions would vanish silently.
COMPRESSED_EVENT_TYPES: Final = {
    40: "MySQL TRANSACTION_PAYLOAD_EVENT (binlog_transaction_compression=ON)",
    165: "MariaDB QUERY_COMPRESSED_EVENT (log_bin_compress=ON)",
    166: "MariaDB WRITE_ROWS_COMPRESSED_EVENT_V1 (log_bin_compress=ON)",
    167: "MariaDB UPDATE_ROWS_COMPRESSED_EVENT_V1 (log_bin_compress=ON)",
    168: "MariaDB DELETE_ROWS_COMPRESSED_EVENT_V1 (log_bin_compress=ON)",
    169: "MariaDB WRITE_ROWS_COMPRESSED_EVENT (log_bin_compress=ON)",
    170: "MariaDB UPDATE_ROWS_COMPRESSED_EVENT (log_bin_compress=ON)",
    171: "MariaDB DELETE_ROWS_COMPRESSED_EVENT (log_bin_compress=ON)",
}
# The events we read; the last three only move our notion of the current binlog offset.
EVENT_TYPES: Final = [
    GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent, TableMapEvent, WriteRowsEvent, UpdateRowsEvent,
    DeleteRowsEvent, RotateEvent, HeartbeatLogEvent, NotImplementedEvent, FormatDescriptionEvent,
    MariadbGtidListEvent, MariadbBinLogCheckPointEvent,
]  # fmt: skip

_OPS: Final = {WriteRowsEvent: Op.CREATE, DeleteRowsEvent: Op.DELETE}  # the other rows events update

_COMMENTS = re.compile(r"^(?:\s|/\*.*?\*/|#[^\n]*\n|--[^\n]*\n)*", re.DOTALL)
_IDENT = r"(?:`((?:[^`]|``)+)`|([A-Za-z0-9_$]+))"
_TRUNCATE = re.compile(rf"TRUNCATE\s+(?:TABLE\s+)?{_IDENT}(?:\s*\.\s*{_IDENT})?\s*;?\s*$", re.IGNORECASE)
_DDL = re.compile(r"(?:ALTER|CREATE|DROP|RENAME|TRUNCATE)\s", re.IGNORECASE)


def statement_body(query: str) -> str:
    """The statement without leading comments and blanks."""
    return query[_COMMENTS.match(query).end() :]  # type: ignore[union-attr]


def truncated_table(query: str, default_schema: str) -> tuple[str, str] | None:
    """(schema, table) of a `TRUNCATE [TABLE] [schema.]table` statement, else None."""
    found = _TRUNCATE.match(statement_body(query))
    if found is None:
        return None
    first = (found.group(1) or "").replace("``", "`") or found.group(2)
    second = (found.group(3) or "").replace("``", "`") or found.group(4)
    if second:
        return first, second
    return default_schema, first


def is_ddl(query: str) -> bool:
    return _DDL.match(statement_body(query)) is not None


def library_rows(event: Any, shape: TableShape) -> list[tuple[Row | None, Row | None]]:
    """(before, after) of every row of a rows event, decoded by mysql-replication (`event.rows`)
    and converted by `values.convert_row`: the path for what the fast decoder does not take, and
    the reference it must equal."""
    names, converters, sets = shape.names, shape.converters, shape.empty_sets
    if isinstance(event, WriteRowsEvent):
        return [
            (None, convert_row(names, converters, sets, r["values"], r["none_sources"])) for r in event.rows
        ]
    if isinstance(event, DeleteRowsEvent):
        return [
            (convert_row(names, converters, sets, r["values"], r["none_sources"]), None) for r in event.rows
        ]
    return [
        (
            convert_row(names, converters, sets, r["before_values"], r["before_none_sources"]),
            convert_row(names, converters, sets, r["after_values"], r["after_none_sources"]),
        )
        for r in event.rows
    ]


@dataclass(frozen=True, slots=True)
class _Table:
    """A captured table as one table map describes it: its shape, and the fast decoder's plan
    (None: the library decodes its rows)."""

    shape: TableShape
    plan: TablePlan | None


class Translator:
    """Turns the binlog events of one connection into records, in order.

    `wanted(schema, table)` selects tables; rows of other tables are never decoded (the library
    decodes rows lazily), which is most of the cost of reading a busy server's binlog. Rows of
    captured tables are decoded by the fast decoder (`rowcodec.py`) where it takes the event, else
    by the library (`library_rows`).
    """

    def __init__(
        self, wanted: Callable[[str, str], bool], json_columns: JsonColumns, *, mariadb: bool, file: str
    ) -> None:
        self._wanted, self._json_columns, self._mariadb = wanted, json_columns, mariadb
        self._tables: dict[int, _Table | None] = {}
        self._known: dict[bytes, _Table] = {}
        self.file, self.offset = file, 4
        self._open = False  # inside a transaction
        self._began = False  # ...opened by BEGIN (or a non-standalone MariaDB GTID): it ends with a commit

    def translate(self, event: Any) -> list[Record]:
        records = self._records(event)
        log_pos = getattr(getattr(event, "packet", None), "log_pos", 0)
        if log_pos and not isinstance(event, RotateEvent | HeartbeatLogEvent):
            self.offset = log_pos
        return records

    def _records(self, event: Any) -> list[Record]:
        if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
            return self._rows(event)
        if isinstance(event, TableMapEvent):
            self._tables[event.table_id] = self._table(event)
            return []
        if isinstance(event, XidEvent):
            return self._commit(event, getattr(event, "xid", None))
        if isinstance(event, MariadbGtidEvent | GtidEvent):
            self._open = True
            standalone = bool(getattr(event, "flags", 0) & MARIADB_FL_STANDALONE)
            self._began = isinstance(event, MariadbGtidEvent) and not standalone
            return [Begin(str(event.gtid), self.file, self.offset, event.timestamp)]
        if isinstance(event, QueryEvent):
            return self._query(event)
        if isinstance(event, RotateEvent):
            self.file, self.offset = event.next_binlog, event.position
            return []
        if isinstance(event, HeartbeatLogEvent):
            return [Heartbeat()]
        if isinstance(event, NotImplementedEvent) and event.event_type in COMPRESSED_EVENT_TYPES:
            raise SourceConfigError(
                f"the binlog holds a {COMPRESSED_EVENT_TYPES[event.event_type]}, which cannot be decoded: "
                "turn binlog compression off on the server (MySQL: SET PERSIST binlog_transaction_compression=OFF; "
                "MariaDB: SET GLOBAL log_bin_compress=OFF and remove it from my.cnf)"
            )
        return []

    def _begin_if_needed(self, event: Any) -> list[Record]:
        if self._open:
            return []
        self._open, self._began = True, True
        return [Begin(None, self.file, self.offset, event.timestamp)]

    def _commit(self, event: Any, xid: int | None) -> list[Record]:
        if not self._open:
            return []
        self._open = self._began = False
        log_pos = getattr(event.packet, "log_pos", 0) or self.offset
        return [Commit(xid, self.file, log_pos, event.timestamp)]

    def _query(self, event: QueryEvent) -> list[Record]:
        query = event.query.strip()
        keyword = query.upper()
        if keyword == "BEGIN":
            records = self._begin_if_needed(event)
            self._began = True
            return records
        if keyword in ("COMMIT", "ROLLBACK"):
            return self._commit(event, None)
        # A statement with neither GTID nor BEGIN before it (MySQL without GTIDs) opens and ends
        # its own transaction, as does one right after a standalone GTID event.
        records = self._begin_if_needed(event)
        standalone = bool(records) or not self._began
        if is_ddl(query):
            self._json_columns.forget()
            self._known.clear()
            schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema)
            target = truncated_table(query, schema)
            if target is not None and self._captured(*target):
                records.append(Truncate(*target))
        if standalone:
            records.extend(self._commit(event, None))
        return records

    def _table(self, event: Any) -> _Table | None:
        """The shape and plan of a TableMapEvent, reused while the table map stays the same byte
        for byte (every transaction repeats its table maps; compiling each time would be waste).
        The bytes hold the table id, names, types, metadata and charsets, all a plan depends on;
        what they lack (MariaDB's JSON columns) changes only by DDL, which clears the cache."""
        if not self._captured(event.schema, event.table):
            return None
        signature = event_body(event)
        table = self._known.get(signature)
        if table is None:
            if len(self._known) > 4096:
                self._known.clear()
            shape = shape_of(event, self._json_columns)
            table = self._known[signature] = _Table(shape, compile_plan(event.columns, shape))
        return table

    def _captured(self, schema: str, table: str) -> bool:
        return schema not in SYSTEM_SCHEMAS and self._wanted(schema, table)

    def _rows(self, event: Any) -> list[Record]:
        table = self._tables.get(event.table_id)
        if table is None:
            return []
        records = self._begin_if_needed(event)
        pairs = table.plan.rows(event) if table.plan is not None else None
        if pairs is None:
            pairs = library_rows(event, table.shape)
        if pairs:
            size = max(event.event_size // len(pairs), 1)
            records.append(Rows(table.shape, _OPS.get(type(event), Op.UPDATE), pairs, size))
        return records
