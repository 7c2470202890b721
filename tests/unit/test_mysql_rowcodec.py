"""The fast rows decoder on hand-made row images: the server's value layouts (vectors from the
MySQL sources), column subsets, and every case in which it leaves an event to the library.
The same decoder against the library on real MariaDB events: tests/integration/test_mysql_rowcodec.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pymysqlreplication.constants import BINLOG, FIELD_TYPE

from deltaforge.sources.mysql.catalog import TableShape
from deltaforge.sources.mysql.rowcodec import PACKET_HEADER, TablePlan, compile_plan
from deltaforge.sources.mysql.rowreaders import reader_for
from deltaforge.sources.mysql.values import converter_for

UTF8 = {"character_set_name": "utf8", "collation_name": "utf8mb4_general_ci"}


def column(kind: int, name: str | None = "c", **extra: Any) -> Any:
    fields = {
        "type": kind,
        "name": name,
        "unsigned": False,
        "character_set_name": None,
        "collation_name": None,
    }
    return SimpleNamespace(**{**fields, **extra})


def value(kind: int, raw: bytes, **extra: Any) -> Any:
    """One value read from `raw`, which it must use up."""
    described = column(kind, **extra)
    reader = reader_for(described, converter_for(described))
    assert reader is not None
    decoded, end = reader(raw, 0)
    assert end == len(raw)
    return decoded


def test_decimals_as_decimal2bin_stores_them() -> None:
    # strings/decimal.cc: 1234567890.1234 as DECIMAL(14,4) is 81 0D FB 38 D2 04 D2, and its
    # negation every byte inverted.
    assert value(FIELD_TYPE.NEWDECIMAL, bytes.fromhex("810DFB38D204D2"), precision=14, decimals=4) == (
        "1234567890.1234"
    )
    assert value(FIELD_TYPE.NEWDECIMAL, bytes.fromhex("7EF204C72DFB2D"), precision=14, decimals=4) == (
        "-1234567890.1234"
    )
    assert value(FIELD_TYPE.NEWDECIMAL, bytes.fromhex("803039"), precision=5, decimals=5) == "0.12345"
    assert value(FIELD_TYPE.NEWDECIMAL, bytes.fromhex("7FCFC6"), precision=5, decimals=5) == "-0.12345"
    assert value(FIELD_TYPE.NEWDECIMAL, bytes.fromhex("800000000005"), precision=12, decimals=2) == "0.05"
    assert value(FIELD_TYPE.NEWDECIMAL, bytes.fromhex("8000002A"), precision=9, decimals=0) == "42"


def test_negative_times_store_their_fraction_reversed() -> None:
    # The table in mysys/my_time.cc (my_time_packed_from_binary), TIME(2).
    cases = {
        "80000000": "00:00:00",
        "7FFFFFFF": "-00:00:00.010000",
        "7FFFFF9D": "-00:00:00.990000",
        "7FFFFF00": "-00:00:01",
        "7FFFFEFF": "-00:00:01.010000",
        "7FFFFEF6": "-00:00:01.100000",
    }
    for stored, text in cases.items():
        assert value(FIELD_TYPE.TIME2, bytes.fromhex(stored), fsp=2) == text, stored
    longest = (0x800000 + (838 << 12 | 59 << 6 | 59)).to_bytes(3, "big")
    assert value(FIELD_TYPE.TIME2, longest, fsp=0) == "838:59:59"
    assert value(FIELD_TYPE.TIME2, longest + (999999).to_bytes(3, "big"), fsp=6) == "838:59:59.999999"


def test_timestamps_and_datetimes() -> None:
    stamp = 1709287200  # 2024-03-01T10:00:00Z
    assert value(FIELD_TYPE.TIMESTAMP2, stamp.to_bytes(4, "big"), fsp=0) == "2024-03-01T10:00:00Z"
    assert value(FIELD_TYPE.TIMESTAMP2, stamp.to_bytes(4, "big") + (1230).to_bytes(2, "big"), fsp=3) == (
        "2024-03-01T10:00:00.123000Z"
    )
    assert value(FIELD_TYPE.TIMESTAMP2, bytes(4), fsp=0) is None, "the zero timestamp"
    packed = 1 << 39 | (2024 * 13 + 3) << 22 | 1 << 17 | 10 << 12
    assert value(FIELD_TYPE.DATETIME2, packed.to_bytes(5, "big") + bytes([50]), fsp=1) == (
        "2024-03-01T10:00:00.500000"
    )
    assert value(FIELD_TYPE.DATETIME2, (1 << 39).to_bytes(5, "big"), fsp=0) is None, "the zero datetime"
    assert value(FIELD_TYPE.DATE, (2024 << 9 | 2 << 5 | 29).to_bytes(3, "little")) == "2024-02-29"
    assert value(FIELD_TYPE.DATE, (2024 << 9 | 0 << 5 | 29).to_bytes(3, "little")) is None, "a zero month"


@pytest.mark.parametrize(
    ("kind", "raw", "extra"),
    [
        (FIELD_TYPE.TIMESTAMP2, (1 << 31).to_bytes(4, "big"), {"fsp": 0}),  # read signed by the library
        (FIELD_TYPE.TIMESTAMP2, bytes(4) + (1_000_000).to_bytes(3, "big"), {"fsp": 6}),  # past a second
        (FIELD_TYPE.DATE, (2024 << 9 | 2 << 5 | 31).to_bytes(3, "little"), {}),  # ALLOW_INVALID_DATES
        (FIELD_TYPE.ENUM, bytes([3]), {"size": 1, "enum_values": ["", "a", "b"]}),  # no such member
        (FIELD_TYPE.VARCHAR, b"\x02\xff\xfe", {"max_length": 20, **UTF8}),  # not UTF-8
    ],
)
def test_values_the_library_would_fail_on_or_misread_are_refused(kind: int, raw: bytes, extra: Any) -> None:
    with pytest.raises((ValueError, IndexError)):
        value(kind, raw, **extra)


def test_strings_enums_sets_bits_and_numbers() -> None:
    assert value(FIELD_TYPE.VARCHAR, b"\x03\xc3\xa9!", max_length=20, **UTF8) == "é!"
    assert value(FIELD_TYPE.VARCHAR, b"\x02\x00hi", max_length=1200, **UTF8) == "hi", "a 2-byte length"
    latin1 = {"character_set_name": "cp1252", "collation_name": "latin1_swedish_ci"}
    assert value(FIELD_TYPE.STRING, b"\x01\xe9", max_length=10, **latin1) == "é"
    binary = {"character_set_name": "binary", "collation_name": "binary"}
    assert value(FIELD_TYPE.STRING, b"\x01\x01", max_length=4, **binary) == "AQAAAA==", "BINARY(4) padded"
    assert value(FIELD_TYPE.BLOB, b"\x02\x00\x00\xde\xad", length_size=3, **binary) == "3q0="
    assert value(FIELD_TYPE.ENUM, b"\x02\x00", size=2, enum_values=["", "a", "b"]) == "b"
    assert value(FIELD_TYPE.SET, b"\x05", size=1, set_values=["x", "y", "z"]) == "x,z"
    assert value(FIELD_TYPE.SET, b"\x00", size=1, set_values=["x", "y", "z"]) == ""
    assert value(FIELD_TYPE.BIT, b"\xff\xff", bits=10, bytes=2) == 1023, "bits above BIT(10) ignored"
    assert value(FIELD_TYPE.BIT, b"\x01", bits=1, bytes=1) is True
    assert value(FIELD_TYPE.INT24, b"\xff\xff\xff") == -1
    assert value(FIELD_TYPE.INT24, b"\xff\xff\xff", unsigned=True) == 16777215
    assert value(FIELD_TYPE.LONGLONG, b"\xff" * 8, unsigned=True) == 18446744073709551615
    assert value(FIELD_TYPE.FLOAT, b"\xcd\xcc\x8c\x3f") == 1.1, "the shortest decimal of the float"
    assert value(FIELD_TYPE.YEAR, b"\x00") == 0
    assert value(FIELD_TYPE.YEAR, b"\x7c") == 2024


@pytest.mark.parametrize(
    "unsupported",
    [
        column(FIELD_TYPE.GEOMETRY, length_size=4),
        column(FIELD_TYPE.JSON, length_size=4),  # MySQL's binary JSON
        column(FIELD_TYPE.DATETIME),  # the pre-5.6 format
        column(FIELD_TYPE.SET, size=1, set_values=["", ""]),  # members the library merges
        column(FIELD_TYPE.TINY, name=None),  # no binlog_row_metadata=FULL
    ],
)
def test_a_table_with_an_unsupported_column_has_no_plan(unsupported: Any) -> None:
    columns = [column(FIELD_TYPE.LONG, name="id"), unsupported]
    assert compile_plan(columns, shape(columns)) is None


# --- plans on whole events ------------------------------------------------------------------------
COLUMNS = [column(FIELD_TYPE.LONG, name="id"), column(FIELD_TYPE.VARCHAR, name="note", max_length=40, **UTF8)]


def shape(columns: list[Any]) -> TableShape:
    names = [str(c.name) for c in columns]
    return TableShape("shop", "notes", names, [converter_for(c) for c in columns], names[:1], frozenset())


def plan() -> TablePlan:
    made = compile_plan(COLUMNS, shape(COLUMNS))
    assert made is not None
    return made


def image(ident: int | None, note: str | None, *, nulls: int = 0) -> bytes:
    """A row image of (id, note): the null bitmap (padding bits set, as MariaDB sets them), then the
    values that are not null."""
    values = b"" if ident is None else ident.to_bytes(4, "little", signed=True)
    if note is not None:
        values += bytes([len(note.encode())]) + note.encode()
    return bytes([nulls | 0xFC]) + values


def event(
    kind: int, rows: bytes, present: bytes = b"\x03", present2: bytes | None = None, width: int = 2
) -> Any:
    """A mysql-replication rows event as the library leaves it after reading its header: the
    packet (OK byte and header, a 9-byte post-header and column count, the rows, a checksum) and
    how far it read."""
    before_rows = b"\x00" * 9
    data = bytes(PACKET_HEADER) + before_rows + rows + b"CRC!"
    packet = SimpleNamespace(packet=SimpleNamespace(get_all_data=lambda: data), read_bytes=len(before_rows))
    return SimpleNamespace(
        event_type=kind, number_of_columns=width, columns_present_bitmap=present,
        columns_present_bitmap2=present2, event_size=len(before_rows) + len(rows), packet=packet,
    )  # fmt: skip


def test_writes_deletes_and_updates_of_v1_and_v2_events() -> None:
    rows = image(1, "a") + image(2, None, nulls=0b10)
    expected = [{"id": 1, "note": "a"}, {"id": 2, "note": None}]
    for kind in (BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2):
        assert plan().rows(event(kind, rows)) == [(None, row) for row in expected]
    for kind in (BINLOG.DELETE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V2):
        assert plan().rows(event(kind, rows)) == [(row, None) for row in expected]
    for kind in (BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2):
        assert plan().rows(event(kind, rows, present2=b"\x03")) == [(expected[0], expected[1])]


def test_columns_absent_from_an_image_are_null() -> None:
    # binlog_row_image=MINIMAL: the before image holds the key, the after image the changed note.
    rows = bytes([0xFE]) + (7).to_bytes(4, "little") + bytes([0xFE, 1]) + b"b"
    pairs = plan().rows(event(BINLOG.UPDATE_ROWS_EVENT_V1, rows, present=b"\x01", present2=b"\x02"))
    assert pairs == [({"id": 7, "note": None}, {"id": None, "note": "b"})]


@pytest.mark.parametrize(
    "declined",
    [
        event(BINLOG.WRITE_ROWS_EVENT_V1, image(1, "a") + b"\x00"),  # bytes left over
        event(BINLOG.WRITE_ROWS_EVENT_V1, image(1, "abc")[:-1]),  # a value runs past the rows
        event(BINLOG.WRITE_ROWS_EVENT_V1, b""),  # no rows: the library decoded them already
        event(BINLOG.WRITE_ROWS_EVENT_V1, image(1, "a"), present=b"\x83"),  # padding bits in the bitmap
        event(BINLOG.WRITE_ROWS_EVENT_V1, image(1, "a"), width=3),  # not the table map's columns
        event(BINLOG.PARTIAL_UPDATE_ROWS_EVENT, image(1, "a") * 2, present2=b"\x03"),
        event(BINLOG.WRITE_ROWS_EVENT_V1, image(1, None) + b"\x01\xff"),  # a note that is not UTF-8
    ],
)
def test_an_event_the_plan_cannot_take_is_left_to_the_library(declined: Any) -> None:
    assert plan().rows(declined) is None
