"""A fast decoder of binlog rows events: one plan per table shape, reading the rows straight from
the event's bytes into JSON-ready rows.

mysql-replication decodes rows in pure Python through several calls per value (packet reads, bit
tests, per-type branches) and builds Decimals and datetimes that `values.py` then converts again:
about 35 µs a row of five columns, most of a worker's CPU. A plan is compiled once per table map
(`compile_plan`, cached by the translator with the TableShape): a reader per column
(`rowreaders.py`) that yields the final value directly, about seven times faster. Its rows are
exactly the library's rows after `values.convert_row`; whatever it does not cover goes to the
library instead, so correctness never depends on it:

- a table with a column it has no reader for (MySQL's binary JSON, GEOMETRY, old temporal types,
  an unknown type), or without column names, has no plan;
- an event it cannot take (PARTIAL_UPDATE_ROWS_EVENT, a column count other than the table map's,
  a value a reader refuses, bytes that do not add up to the event's end, no bytes at all: the
  library has decoded the event already) returns None from `TablePlan.rows`, and the caller
  decodes that event with the library.

Where the rows are: mysql-replication parses a rows event's header when it creates the event
(RowsEvent.__init__: table id, flags, the v2 extra data, the column count, the columns-present
bitmaps) and decodes the rows only when `event.rows` is first read. The event keeps the whole
packet (`event.packet.packet`, PyMySQL's MysqlPacket: the OK byte, the 19-byte event header,
the body, then the 4-byte checksum when the server writes one). The wrapper counts the body bytes
consumed so far (`read_bytes`), and `event.event_size` is the body's length without the checksum,
so the rows are the bytes from 20 + read_bytes up to 20 + event_size. Reading them here never
touches `event.rows`, so the library decodes nothing. (mysql-replication 1.0.17; the tests pin it.)

Row images, as the server writes them (`Rows_log_event::write_data_body`, MySQL
`libbinlogevents/include/rows_event.h`): for each row, a null bitmap of one bit per column present
in the image (`(present + 7) / 8` bytes, least significant bit first), then the values of the
present columns that are not null. An UPDATE row is a before image, with the first
columns-present bitmap, then an after image with the second. Columns absent from an image
(`binlog_row_image=MINIMAL` or `NOBLOB`) are null in its row, as the library makes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

from pymysqlreplication.constants import BINLOG

from deltaforge.sources.mysql.catalog import TableShape
from deltaforge.sources.mysql.records import Row
from deltaforge.sources.mysql.rowreaders import Reader, reader_for

PACKET_HEADER: Final = 20  # PyMySQL's OK byte and the binlog v4 event header
# The rows events a plan decodes: WRITE/UPDATE/DELETE, v1 (MariaDB) and v2 (MySQL 8).
_WRITES: Final = frozenset({BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2})
_UPDATES: Final = frozenset({BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2})
_DELETES: Final = frozenset({BINLOG.DELETE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V2})
_KINDS: Final = _WRITES | _UPDATES | _DELETES  # not PARTIAL_UPDATE_ROWS_EVENT (MySQL's JSON diffs)
_LAYOUT_CACHE: Final = 64  # column subsets remembered per table (one with binlog_row_image=FULL)
_REFUSED: Final = (ValueError, IndexError, struct.error)  # what a reader raises on a value it refuses


def event_body(event: Any) -> bytes:
    """The body of a mysql-replication event as the server sent it, without header and checksum."""
    data: bytes = event.packet.packet.get_all_data()
    return data[PACKET_HEADER : PACKET_HEADER + event.event_size]


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one row image of one column subset is read: the null bitmap's length, bits that mark
    the absent columns null, and (name, null bit, reader) in column order."""

    null_bytes: int
    absent: int
    fields: tuple[tuple[str, int, Reader], ...]


@dataclass(slots=True)
class TablePlan:
    """The compiled decoder of one table map's rows."""

    names: list[str]
    readers: list[Reader]
    _layouts: dict[bytes, _Layout] = field(default_factory=dict)

    def rows(self, event: Any) -> list[tuple[Row | None, Row | None]] | None:
        """(before, after) of every row of a mysql-replication rows event, or None when this
        plan does not take the event (then the library must decode it)."""
        kind = event.event_type
        if kind not in _KINDS or event.number_of_columns != len(self.names):
            return None
        data: bytes = event.packet.packet.get_all_data()
        start, end = PACKET_HEADER + event.packet.read_bytes, PACKET_HEADER + event.event_size
        if end > len(data):
            return None
        try:
            first = self._layout(event.columns_present_bitmap)
            if kind in _UPDATES:
                return _pairs(data, start, end, first, self._layout(event.columns_present_bitmap2))
            images = _images(data, start, end, first)
        except _REFUSED:
            return None
        if images is None:
            return None
        if kind in _WRITES:
            return [(None, row) for row in images]
        return [(row, None) for row in images]

    def _layout(self, bitmap: bytes) -> _Layout:
        layout = self._layouts.get(bitmap)
        if layout is not None:
            return layout
        width = len(self.names)
        present = [i for i in range(width) if bitmap[i >> 3] >> (i & 7) & 1]
        if sum(bin(byte).count("1") for byte in bitmap) != len(present):
            # Bits set past the last column: the library sizes the null bitmap by them.
            raise ValueError("columns-present bitmap with padding bits set")
        null_bytes = (len(present) + 7) // 8
        bits: dict[int, int] = {column: 1 << index for index, column in enumerate(present)}
        absent = 0
        for offset, column in enumerate(i for i in range(width) if i not in bits):
            bits[column] = 1 << (8 * null_bytes + offset)  # above every bit the image's bitmap holds
            absent |= bits[column]
        layout = _Layout(
            null_bytes,
            absent,
            tuple(zip(self.names, [bits[i] for i in range(width)], self.readers, strict=True)),
        )
        if len(self._layouts) >= _LAYOUT_CACHE:
            self._layouts.clear()
        self._layouts[bytes(bitmap)] = layout
        return layout


def compile_plan(columns: list[Any], shape: TableShape) -> TablePlan | None:
    """The plan of a table map's columns (mysql-replication Columns) and their TableShape, or
    None when one column has no reader, or the columns have no distinct names (without
    `binlog_row_metadata=FULL` the library names them itself)."""
    names = [column.name for column in columns]
    if None in names or len(set(names)) != len(names):
        return None
    readers = []
    for column, convert in zip(columns, shape.converters, strict=True):
        reader = reader_for(column, convert)
        if reader is None:
            return None
        readers.append(reader)
    return TablePlan(shape.names, readers)


def _images(data: bytes, pos: int, end: int, layout: _Layout) -> list[Row] | None:
    """The rows of a WRITE or DELETE event; None unless there are some and they end exactly at
    `end`. (The image loop is written out here and in `_pairs`: a call per row costs a tenth of
    decoding one.)"""
    rows: list[Row] = []
    null_bytes, absent, fields = layout.null_bytes, layout.absent, layout.fields
    while pos < end:
        after_nulls = pos + null_bytes
        nulls = int.from_bytes(data[pos:after_nulls], "little") | absent
        pos = after_nulls
        row: Row = {}
        for name, bit, read in fields:
            if nulls & bit:
                row[name] = None
            else:
                row[name], pos = read(data, pos)
        rows.append(row)
    return rows if pos == end and rows else None


def _pairs(
    data: bytes, pos: int, end: int, before: _Layout, after: _Layout
) -> list[tuple[Row | None, Row | None]] | None:
    """The (before, after) rows of an UPDATE event; None unless there are some and they end
    exactly at `end`."""
    pairs: list[tuple[Row | None, Row | None]] = []
    while pos < end:
        images: list[Row] = []
        for layout in (before, after):
            after_nulls = pos + layout.null_bytes
            nulls = int.from_bytes(data[pos:after_nulls], "little") | layout.absent
            pos = after_nulls
            row: Row = {}
            for name, bit, read in layout.fields:
                if nulls & bit:
                    row[name] = None
                else:
                    row[name], pos = read(data, pos)
            images.append(row)
        pairs.append((images[0], images[1]))
    return pairs if pos == end and pairs else None
