"""pgoutput decoding and value conversion on hand-built messages, byte for byte as the docs define.

Reference: PostgreSQL 15 "Logical Replication Message Formats". The real server is exercised by
tests/integration/test_pgoutput_real.py; here every branch is pinned down without one.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from deltaforge.events import UNCHANGED
from deltaforge.sources.postgres import values
from deltaforge.sources.postgres.arrays import parse_array
from deltaforge.sources.postgres.pgoutput import (
    PG_EPOCH_OFFSET_US,
    Begin,
    BinaryValue,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputDecoder,
    PgOutputError,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TupleValue,
    Type,
    Update,
    decode,
)
from deltaforge.sources.postgres.values import convert_tuple, converter_for

XID = 0x01020304
TS_PG = 757_382_400_123_456  # 2024-01-01 00:00:00.123456 UTC in microseconds since 2000-01-01
TS_UNIX = 1_704_067_200_123_456


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(*columns: TupleValue) -> bytes:
    out = struct.pack(">H", len(columns))
    for column in columns:
        if column is None:
            out += b"n"
        elif column is UNCHANGED:
            out += b"u"
        elif isinstance(column, BinaryValue):
            out += b"b" + struct.pack(">i", len(column.data)) + column.data
        else:
            assert isinstance(column, bytes)
            out += b"t" + struct.pack(">i", len(column)) + column
    return out


def streamed(kind: bytes, body: bytes, in_stream: bool) -> bytes:
    """A message as sent outside a stream, or inside one with the transaction id after the type."""
    return kind + (struct.pack(">I", XID) if in_stream else b"") + body


def test_the_epoch_offset_is_2000_01_01() -> None:
    assert TS_UNIX - TS_PG == PG_EPOCH_OFFSET_US == 946_684_800 * 1_000_000


def test_begin() -> None:
    message = b"B" + struct.pack(">QqI", 0x16B6C50, TS_PG, 745)
    assert decode(message) == Begin(final_lsn=0x16B6C50, commit_ts_us=TS_UNIX, xid=745)


def test_commit() -> None:
    message = b"C" + struct.pack(">BQQq", 0, 0x100, 0x130, TS_PG)
    assert decode(message) == Commit(flags=0, commit_lsn=0x100, end_lsn=0x130, commit_ts_us=TS_UNIX)


def test_commit_timestamp_before_2000_is_negative_on_the_wire() -> None:
    message = b"C" + struct.pack(">BQQq", 0, 1, 2, -PG_EPOCH_OFFSET_US)
    decoded = decode(message)
    assert isinstance(decoded, Commit)
    assert decoded.commit_ts_us == 0


def test_origin_has_no_transaction_id_even_inside_a_stream() -> None:
    message = b"O" + struct.pack(">Q", 0xABC) + cstring("pg_16390")
    assert decode(message, in_stream=True) == Origin(commit_lsn=0xABC, name="pg_16390")


RELATION_BODY = (
    struct.pack(">I", 16385)
    + cstring("")  # pg_catalog is sent as an empty namespace
    + cstring("zażółć")
    + b"f"
    + struct.pack(">H", 2)
    + b"\x01"
    + cstring("id")
    + struct.pack(">Ii", 23, -1)
    + b"\x00"
    + cstring("price")
    + struct.pack(">Ii", 1700, (20 << 16 | 5) + 4)
)


@pytest.mark.parametrize("in_stream", [False, True])
def test_relation(in_stream: bool) -> None:
    decoded = decode(streamed(b"R", RELATION_BODY, in_stream), in_stream=in_stream)
    assert decoded == Relation(
        xid=XID if in_stream else None,
        relation_id=16385,
        namespace="",
        name="zażółć",
        replica_identity="f",
        columns=(Column(1, "id", 23, -1), Column(0, "price", 1700, 1310729)),
    )
    assert isinstance(decoded, Relation)
    assert [column.is_key for column in decoded.columns] == [True, False]


@pytest.mark.parametrize("in_stream", [False, True])
def test_type(in_stream: bool) -> None:
    body = struct.pack(">I", 16400) + cstring("public") + cstring("mood")
    decoded = decode(streamed(b"Y", body, in_stream), in_stream=in_stream)
    assert decoded == Type(xid=XID if in_stream else None, type_oid=16400, namespace="public", name="mood")


@pytest.mark.parametrize("in_stream", [False, True])
def test_insert_with_every_tuple_column_kind(in_stream: bool) -> None:
    new = tuple_data(b"42", None, UNCHANGED, BinaryValue(b"\x00\x01"), b"", "ü".encode())
    decoded = decode(streamed(b"I", struct.pack(">I", 16385) + b"N" + new, in_stream), in_stream=in_stream)
    assert decoded == Insert(
        xid=XID if in_stream else None,
        relation_id=16385,
        new=(b"42", None, UNCHANGED, BinaryValue(b"\x00\x01"), b"", "ü".encode()),
    )
    assert isinstance(decoded, Insert)
    assert decoded.new[2] is UNCHANGED


def test_insert_with_no_columns() -> None:
    assert decode(b"I" + struct.pack(">I", 7) + b"N" + tuple_data()) == Insert(None, 7, ())


@pytest.mark.parametrize("in_stream", [False, True])
def test_update_without_old_tuple(in_stream: bool) -> None:
    body = struct.pack(">I", 9) + b"N" + tuple_data(b"1", UNCHANGED)
    assert decode(streamed(b"U", body, in_stream), in_stream=in_stream) == Update(
        xid=XID if in_stream else None, relation_id=9, old=None, old_is_key=False, new=(b"1", UNCHANGED)
    )


@pytest.mark.parametrize("in_stream", [False, True])
def test_update_with_changed_key(in_stream: bool) -> None:
    body = struct.pack(">I", 9) + b"K" + tuple_data(b"1", None) + b"N" + tuple_data(b"2", b"x")
    assert decode(streamed(b"U", body, in_stream), in_stream=in_stream) == Update(
        xid=XID if in_stream else None, relation_id=9, old=(b"1", None), old_is_key=True, new=(b"2", b"x")
    )


def test_update_with_full_old_row() -> None:
    body = struct.pack(">I", 9) + b"O" + tuple_data(b"1", b"a") + b"N" + tuple_data(b"1", b"b")
    assert decode(b"U" + body) == Update(None, 9, (b"1", b"a"), False, (b"1", b"b"))


@pytest.mark.parametrize(("kind", "is_key"), [(b"K", True), (b"O", False)])
@pytest.mark.parametrize("in_stream", [False, True])
def test_delete(kind: bytes, is_key: bool, in_stream: bool) -> None:
    body = struct.pack(">I", 9) + kind + tuple_data(b"1", None)
    assert decode(streamed(b"D", body, in_stream), in_stream=in_stream) == Delete(
        xid=XID if in_stream else None, relation_id=9, old=(b"1", None), old_is_key=is_key
    )


@pytest.mark.parametrize(
    ("options", "cascade", "restart_identity"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
@pytest.mark.parametrize("in_stream", [False, True])
def test_truncate(options: int, cascade: bool, restart_identity: bool, in_stream: bool) -> None:
    body = struct.pack(">IB", 3, options) + struct.pack(">III", 10, 11, 4_000_000_000)
    assert decode(streamed(b"T", body, in_stream), in_stream=in_stream) == Truncate(
        xid=XID if in_stream else None,
        relation_ids=(10, 11, 4_000_000_000),
        cascade=cascade,
        restart_identity=restart_identity,
    )


@pytest.mark.parametrize("in_stream", [False, True])
@pytest.mark.parametrize("transactional", [False, True])
def test_logical_message(in_stream: bool, transactional: bool) -> None:
    content = b"\x00binary\xff"
    body = (
        struct.pack(">BQ", int(transactional), 0x5000)
        + cstring("deltaforge.heartbeat")
        + struct.pack(">I", len(content))
        + content
    )
    assert decode(streamed(b"M", body, in_stream), in_stream=in_stream) == LogicalMessage(
        xid=XID if in_stream else None,
        transactional=transactional,
        lsn=0x5000,
        prefix="deltaforge.heartbeat",
        content=content,
    )


@pytest.mark.parametrize(("flag", "first"), [(1, True), (0, False)])
def test_stream_start(flag: int, first: bool) -> None:
    assert decode(b"S" + struct.pack(">IB", XID, flag)) == StreamStart(xid=XID, first_segment=first)


def test_stream_stop() -> None:
    assert decode(b"E", in_stream=True) == StreamStop()


def test_stream_commit() -> None:
    message = b"c" + struct.pack(">IBQQq", XID, 0, 0x200, 0x230, TS_PG)
    assert decode(message) == StreamCommit(
        xid=XID, flags=0, commit_lsn=0x200, end_lsn=0x230, commit_ts_us=TS_UNIX
    )


def test_stream_abort() -> None:
    assert decode(b"A" + struct.pack(">II", XID, XID + 1)) == StreamAbort(xid=XID, subxid=XID + 1)


def test_memoryview_input_gives_independent_bytes() -> None:
    frame = bytearray(b"w" + bytes(24) + b"I" + struct.pack(">I", 5) + b"N" + tuple_data(b"abc"))
    decoded = decode(memoryview(frame)[25:])
    frame[-1] = ord("z")
    assert decoded == Insert(None, 5, (b"abc",))
    assert isinstance(decoded, Insert)
    assert type(decoded.new[0]) is bytes


def test_decoder_tracks_the_stream_state() -> None:
    decoder = PgOutputDecoder()
    insert_body = struct.pack(">I", 5) + b"N" + tuple_data(b"1")
    messages = [
        b"I" + insert_body,
        b"S" + struct.pack(">IB", XID, 1),
        streamed(b"I", insert_body, True),
        b"E",
        b"I" + insert_body,
    ]
    decoded = [decoder.decode(message) for message in messages]
    assert decoded == [
        Insert(None, 5, (b"1",)),
        StreamStart(XID, True),
        Insert(XID, 5, (b"1",)),
        StreamStop(),
        Insert(None, 5, (b"1",)),
    ]
    assert not decoder.in_stream


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "empty"),
        (b"P" + bytes(40), "unknown pgoutput message type 'P'"),
        (b"B" + bytes(10), "malformed pgoutput message 'B'"),
        (b"I" + struct.pack(">I", 5) + b"X", "expected a new tuple 'N'"),
        (b"I" + struct.pack(">I", 5) + b"N" + struct.pack(">H", 1) + b"x", "unknown TupleData column kind"),
        (b"I" + struct.pack(">I", 5) + b"N" + struct.pack(">H", 1) + b"t\x00\x00\x00\x09ab", "past the end"),
        (b"U" + struct.pack(">I", 5) + b"K" + tuple_data(b"1") + b"K", "expected a new tuple 'N'"),
        (b"U" + struct.pack(">I", 5) + b"Z", "expected a tuple 'K', 'O' or 'N'"),
        (b"D" + struct.pack(">I", 5) + b"N" + tuple_data(b"1"), "expected an old tuple"),
        (b"Y" + struct.pack(">I", 5) + b"public", "malformed"),
        (b"M" + struct.pack(">BQ", 1, 0) + cstring("p") + struct.pack(">I", 9) + b"ab", "past the end"),
    ],
)
def test_malformed_messages_raise(message: bytes, reason: str) -> None:
    with pytest.raises(PgOutputError, match=reason):
        decode(message)


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_oid", "raw", "expected"),
    [
        (values.INT2, b"-32768", -32768),
        (values.INT4, b"2147483647", 2147483647),
        (values.INT8, b"-9223372036854775808", -9223372036854775808),
        (values.OID, b"4294967295", 4294967295),
        (values.NUMERIC, b"123456789012345.12345", "123456789012345.12345"),
        (values.NUMERIC, b"NaN", "NaN"),
        (values.NUMERIC, b"-Infinity", "-Infinity"),
        (values.FLOAT4, b"1.1", 1.1),
        (values.FLOAT8, b"-1.5e+300", -1.5e300),
        (values.FLOAT8, b"NaN", "NaN"),
        (values.FLOAT8, b"Infinity", "Infinity"),
        (values.FLOAT8, b"-Infinity", "-Infinity"),
        (values.BOOL, b"t", True),
        (values.BOOL, b"f", False),
        (values.TEXT, "żółw ✓".encode(), "żółw ✓"),
        (values.VARCHAR, b"", ""),
        (values.BPCHAR, b"ab   ", "ab   "),
        (values.NAME, b"pg_class", "pg_class"),
        (values.CHAR, b"r", "r"),
        (values.UNKNOWN, b"x", "x"),
        (values.TIMESTAMPTZ, b"2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456Z"),
        (values.TIMESTAMPTZ, b"2024-01-02 03:04:05+00", "2024-01-02T03:04:05Z"),
        (values.TIMESTAMPTZ, b"2024-01-02 03:04:05.12+00", "2024-01-02T03:04:05.120000Z"),
        (values.TIMESTAMPTZ, b"2024-01-02 03:04:05.123456+02", "2024-01-02T01:04:05.123456Z"),
        (values.TIMESTAMPTZ, b"2024-01-02 03:04:05+05:30", "2024-01-01T21:34:05Z"),
        (values.TIMESTAMPTZ, b"2024-01-01 23:00:00-03", "2024-01-02T02:00:00Z"),
        (values.TIMESTAMPTZ, b"1900-01-01 00:19:32+00:19:32", "1900-01-01T00:00:00Z"),
        (values.TIMESTAMPTZ, b"2024-02-29 23:30:00-01", "2024-03-01T00:30:00Z"),
        (values.TIMESTAMPTZ, b"0044-03-15 12:00:00+00 BC", "-0043-03-15T12:00:00Z"),
        (values.TIMESTAMPTZ, b"0001-01-01 00:30:00+01", "0000-12-31T23:30:00Z"),
        (values.TIMESTAMPTZ, b"10000-01-01 00:00:00+00", "10000-01-01T00:00:00Z"),
        (values.TIMESTAMPTZ, b"9999-12-31 23:00:00-02", "10000-01-01T01:00:00Z"),
        (values.TIMESTAMPTZ, b"infinity", "infinity"),
        (values.TIMESTAMPTZ, b"-infinity", "-infinity"),
        (values.TIMESTAMP, b"2024-01-02 03:04:05.123456", "2024-01-02T03:04:05.123456"),
        (values.TIMESTAMP, b"2024-01-02 03:04:05.5", "2024-01-02T03:04:05.500000"),
        (values.TIMESTAMP, b"2024-01-02 03:04:05", "2024-01-02T03:04:05"),
        (values.TIMESTAMP, b"0044-03-15 12:00:00 BC", "-0043-03-15T12:00:00"),
        (values.TIMESTAMP, b"10000-01-01 12:00:00.5", "10000-01-01T12:00:00.500000"),
        (values.TIMESTAMP, b"infinity", "infinity"),
        (values.TIMESTAMP, b"-infinity", "-infinity"),
        (values.DATE, b"2024-01-02", "2024-01-02"),
        (values.DATE, b"0044-03-15 BC", "-0043-03-15"),
        (values.DATE, b"0001-01-01 BC", "0000-01-01"),
        (values.DATE, b"infinity", "infinity"),
        (values.DATE, b"-infinity", "-infinity"),
        (values.TIME, b"03:04:05", "03:04:05"),
        (values.TIME, b"03:04:05.25", "03:04:05.25"),
        (values.TIMETZ, b"12:00:00.5+05:30", "12:00:00.5+05:30"),
        (values.INTERVAL, b"1 year 2 mons 3 days 04:05:06.7", "1 year 2 mons 3 days 04:05:06.7"),
        (values.UUID, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (
            values.JSONB,
            b'{"a": [1, 2.5, null, true], "b": {"c": "d"}}',
            {"a": [1, 2.5, None, True], "b": {"c": "d"}},
        ),
        (values.JSON, b'  [1, "x"] ', [1, "x"]),
        (values.JSONB, b'"scalar"', "scalar"),
        (values.JSONB, b'{"big": 123456789012345678901234567890}', {"big": 123456789012345678901234567890}),
        (values.JSONB, b"[1e400, 1.5]", ["1e400", 1.5]),
        (values.BYTEA, b"\\x0a0b", "Cgs="),
        (values.BYTEA, b"\\x", ""),
        (values.BYTEA, b"ab\\000\\\\\\377", "YWIAXP8="),
        (values.MONEY, b"$1,000.00", "$1,000.00"),
        (values.INET, b"192.168.0.1/24", "192.168.0.1/24"),
        (values.CIDR, b"10.0.0.0/8", "10.0.0.0/8"),
        (values.MACADDR, b"08:00:2b:01:02:03", "08:00:2b:01:02:03"),
        (values.XML, b"<a>b</a>", "<a>b</a>"),
        (values.POINT, b"(1,2)", "(1,2)"),
        (16_999, b"happy", "happy"),  # an enum or any OID we do not know
    ],
)
def test_scalar_conversion(type_oid: int, raw: bytes, expected: Any) -> None:
    converted = converter_for(type_oid)(raw)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{1,2,NULL}", ["1", "2", None]),
        ('{"a b","c\\"d",NULL,"NULL","","\\\\"}', ["a b", 'c"d', None, "NULL", "", "\\"]),
        ("{{1,2},{3,4}}", [["1", "2"], ["3", "4"]]),
        ('{{"{",NULL},{"}",","}}', [["{", None], ["}", ","]]),
        ("{{{1}},{{2}}}", [[["1"]], [["2"]]]),
        ("[0:1]={7,8}", ["7", "8"]),
        ("[1:1][-2:-1]={{a,b}}", [["a", "b"]]),
        ('{" x ","y\\nz"}', [" x ", "ynz"]),
        ('{"multi\nline"}', ["multi\nline"]),
        ("{ 1 , 2 }", ["1", "2"]),
        ('{a,"b"}', ["a", "b"]),
    ],
)
def test_array_parsing(text: str, expected: list[Any]) -> None:
    assert parse_array(text, str) == expected


@pytest.mark.parametrize("text", ["{1,2", "{1}}", "{1}x", "1,2", "{{1},2", '{"a}'])
def test_malformed_arrays_raise(text: str) -> None:
    with pytest.raises(ValueError, match="malformed array"):
        parse_array(text, str)


@pytest.mark.parametrize(
    ("type_oid", "raw", "expected"),
    [
        (1007, b"{1,2,NULL}", [1, 2, None]),
        (1007, b"{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        (1016, b"{9223372036854775807}", [9223372036854775807]),
        (1009, b'{"a b","c\\"d",NULL,"NULL"}', ["a b", 'c"d', None, "NULL"]),
        (1015, b"{x,y}", ["x", "y"]),
        (1000, b"{t,f,NULL}", [True, False, None]),
        (1231, b"{1.50,NaN,Infinity}", ["1.50", "NaN", "Infinity"]),
        (1022, b"{1.5,NaN,-Infinity}", [1.5, "NaN", "-Infinity"]),
        (2951, b"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        (
            1185,
            b'{"2024-01-02 03:04:05+00","2024-01-02 03:04:05.5+01",infinity}',
            ["2024-01-02T03:04:05Z", "2024-01-02T02:04:05.500000Z", "infinity"],
        ),
        (1182, b"{2024-01-02,NULL}", ["2024-01-02", None]),
        (3807, b'{"{\\"a\\": [1, 2]}",NULL,"\\"NULL\\""}', [{"a": [1, 2]}, None, "NULL"]),
        (1001, b'{"\\\\x0a0b"}', ["Cgs="]),
        (791, b'{"$1.00"}', ["$1.00"]),
        (1020, b"{(1,1),(0,0);(2,2),(1,1)}", "{(1,1),(0,0);(2,2),(1,1)}"),  # _box: ';'-delimited
    ],
)
def test_array_conversion(type_oid: int, raw: bytes, expected: Any) -> None:
    assert converter_for(type_oid)(raw) == expected


def test_every_array_element_has_a_rule_or_stays_text() -> None:
    for array_oid, element_oid in values.ARRAY_ELEMENT_OIDS.items():
        assert array_oid != element_oid
        assert converter_for(array_oid)(b"{}") == []


def test_convert_tuple_keeps_null_and_unchanged() -> None:
    converters = [converter_for(oid) for oid in (values.INT4, values.TEXT, values.TEXT, values.JSONB)]
    row = convert_tuple(converters, (b"7", None, UNCHANGED, b"{}"))
    assert row == [7, None, UNCHANGED, {}]
    assert row[2] is UNCHANGED


def test_convert_tuple_refuses_a_shape_mismatch_and_binary_values() -> None:
    with pytest.raises(ValueError, match="Relation message was missed"):
        convert_tuple([converter_for(values.INT4)], (b"1", b"2"))
    with pytest.raises(ValueError, match="binary"):
        convert_tuple([converter_for(values.INT4)], (BinaryValue(b"\x00"),))


@pytest.mark.parametrize(
    ("type_oid", "raw"),
    [(values.TIMESTAMPTZ, b"01/02/2024 03:04:05 UTC"), (values.DATE, b"02.01.2024 BC")],
)
def test_non_iso_datestyle_is_refused(type_oid: int, raw: bytes) -> None:
    with pytest.raises(ValueError, match="DateStyle must be ISO"):
        converter_for(type_oid)(raw)
