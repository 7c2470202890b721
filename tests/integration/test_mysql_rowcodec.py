"""The fast rows decoder against mysql-replication on real MariaDB binlog events: every column
type with its edge values, INSERT, UPDATE and DELETE, full and minimal row images, and the
library's path for a table the decoder does not cover.

Each rows event goes through the source's Translator (the fast path, when it takes the event),
then through the library (`event.rows` plus `values.convert_row`, the path it replaces): both
must give the same rows, and the library must not have decoded the event before that.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import QueryEvent
from pymysqlreplication.row_event import RowsEvent, TableMapEvent

from deltaforge.sources.mysql.catalog import JsonColumns, shape_of
from deltaforge.sources.mysql.config import MysqlSettings, MysqlSourceConfig
from deltaforge.sources.mysql.position import ResumePoint
from deltaforge.sources.mysql.preflight import preflight
from deltaforge.sources.mysql.reader import stream_options
from deltaforge.sources.mysql.records import Row, Rows
from deltaforge.sources.mysql.rowcodec import PACKET_HEADER, compile_plan
from deltaforge.sources.mysql.translate import Translator, library_rows
from deltaforge.sources.patterns import TablePatterns
from tests.fixtures.data_stack import MysqlDatabase

FSPS = range(7)
ENUM = ("new", "paid", "shipped", "ünï")
SET = ("gift", "rush", "fragile", "a", "b", "c", "d", "e", "f")  # nine members: a 2-byte mask
DECIMALS = {
    "d0": (10, 0),
    "d1": (12, 2),
    "d2": (65, 30),
    "d3": (5, 5),
    "d4": (30, 0),
    "d5": (19, 9),
    "d6": (1, 0),
}
COLUMNS = [
    "id int PRIMARY KEY",
    "ti tinyint", "tiu tinyint unsigned", "si smallint", "siu smallint unsigned", "mi mediumint",
    "miu mediumint unsigned", "i int", "iu int unsigned", "bi bigint", "biu bigint unsigned",
    *(f"{name} decimal({p},{s})" for name, (p, s) in DECIMALS.items()),
    "f float", "db double",
    "c char(5)", "cl char(10) CHARACTER SET latin1", "vc varchar(300)", "vs varchar(20)", "tt tinytext",
    "tx text", "mt mediumtext", "lt longtext",
    "bn binary(4)", "vb varbinary(10)", "tb tinyblob", "bl blob", "mb mediumblob", "lb longblob",
    "dt date", "y year",
    *(f"t{fsp} time({fsp})" for fsp in FSPS),
    *(f"dt{fsp} datetime({fsp})" for fsp in FSPS),
    *(f"ts{fsp} timestamp({fsp}) NULL" for fsp in FSPS),
    f"e enum({', '.join(repr(m) for m in ENUM)})", f"s set({', '.join(repr(m) for m in SET)})",
    "j json", "b1 bit(1)", "b8 bit(8)", "b10 bit(10)", "b64 bit(64)",
]  # fmt: skip
NAMES = [column.split()[0] for column in COLUMNS]


def fraction(digits: str, fsp: int) -> str:
    return f".{digits[:fsp]}" if fsp else ""


MAX_ROW: dict[str, Any] = {
    "ti": 127, "tiu": 255, "si": 32767, "siu": 65535, "mi": 8388607, "miu": 16777215, "i": 2147483647,
    "iu": 4294967295, "bi": 9223372036854775807, "biu": 18446744073709551615,
    **{name: "9" * (p - s) + ("." + "9" * s if s else "") for name, (p, s) in DECIMALS.items()},
    "f": 3.4028234e38, "db": 1.7976931348623157e308,
    "c": "ééééé", "cl": "Café £ àÿ", "vc": "𝄞" * 300, "vs": "ü" * 20, "tt": "a" * 255, "tx": "x" * 65535,
    "mt": "é" * 40000, "lt": "🙂" * 20000,
    "bn": b"\xff" * 4, "vb": b"\x00" * 10, "tb": b"\xff" * 255, "bl": bytes(range(256)) * 256,
    "mb": bytes(range(256)) * 300, "lb": b"long",
    "dt": "9999-12-31", "y": 2155,
    **{f"t{fsp}": "838:59:59" + fraction("999999", fsp) for fsp in FSPS},
    **{f"dt{fsp}": "9999-12-31 23:59:59" + fraction("999999", fsp) for fsp in FSPS},
    **{f"ts{fsp}": "2038-01-19 03:14:07" + fraction("999999", fsp) for fsp in FSPS},
    "e": "ünï", "s": ",".join(SET), "j": '{"a": [1, 2.5, "x", true], "b": null, "ü": {"n": -1}}',
    "b1": 1, "b8": 255, "b10": 1023, "b64": 18446744073709551615,
}  # fmt: skip
MIN_ROW: dict[str, Any] = {
    "ti": -128, "tiu": 0, "si": -32768, "siu": 0, "mi": -8388608, "miu": 0, "i": -2147483648, "iu": 0,
    "bi": -9223372036854775808, "biu": 0,
    **{name: "-" + "9" * (p - s) + ("." + "9" * s if s else "") for name, (p, s) in DECIMALS.items()},
    "f": -3.4028234e38, "db": -1.7976931348623157e308,
    "c": "", "cl": "", "vc": "", "vs": "", "tt": "", "tx": "", "mt": "", "lt": "",
    "bn": b"", "vb": b"", "tb": b"", "bl": b"", "mb": b"", "lb": b"",
    "dt": "1000-01-01", "y": 1901,
    **{f"t{fsp}": "-838:59:59" + fraction("999999", fsp) for fsp in FSPS},
    **{f"dt{fsp}": "1000-01-01 00:00:00" + fraction("000000", fsp) for fsp in FSPS},
    **{f"ts{fsp}": "1970-01-01 00:00:01" + fraction("000001", fsp) for fsp in FSPS},
    "e": "new", "s": "", "j": "[]", "b1": 0, "b8": 0, "b10": 0, "b64": 0,
}  # fmt: skip
# Written with sql_mode '': zero dates, zero parts, the enum's error value.
ZERO_ROW: dict[str, Any] = {
    **{name: 0 for name in ("ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "f", "db")},
    **{name: "0" for name in DECIMALS}, "d5": "-0.000000001", "d3": "-0.00001",
    "c": " ", "vc": " ", "bn": b"\x01", "dt": "0000-00-00", "y": 0, "t0": "00:00:00", "t1": "-00:00:00.1",
    "t2": "-00:00:00.01", "t3": "-00:00:01.001", "t4": "-00:59:59.0001", "t5": "-01:00:00.00001",
    "t6": "-00:00:00.000001", "dt0": "0000-00-00 00:00:00", "dt3": "2024-00-00 10:00:00.5",
    "dt6": "2024-02-00 00:00:00", "ts0": "0000-00-00 00:00:00", "ts6": "0000-00-00 00:00:00",
    "e": "bogus", "s": "", "j": '""', "lb": b"\x00",
}  # fmt: skip


def random_row(rng: random.Random) -> dict[str, Any]:
    """Values of every column, some null, drawn from each type's whole range."""

    def integer(bits: int, unsigned: bool) -> int:
        return rng.randrange(0, 2**bits) if unsigned else rng.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1))

    def decimal(precision: int, scale: int) -> str:
        whole = str(rng.randrange(10 ** rng.randint(0, precision - scale))) if precision > scale else "0"
        digits = "".join(rng.choice("0123456789") for _ in range(scale))
        return f"{rng.choice(['', '-'])}{whole}{'.' + digits if scale else ''}"

    def text(limit: int) -> str:
        alphabet = "abcXYZ019 ,.éüñçÀÿ€中文字🙂𝄞"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, limit)))

    def micros(fsp: int) -> str:
        return fraction(f"{rng.randrange(10**6):06d}", fsp)

    row: dict[str, Any] = {
        "ti": integer(8, False), "tiu": integer(8, True), "si": integer(16, False), "siu": integer(16, True),
        "mi": integer(24, False), "miu": integer(24, True), "i": integer(32, False), "iu": integer(32, True),
        "bi": integer(64, False), "biu": integer(64, True),
        **{name: decimal(p, s) for name, (p, s) in DECIMALS.items()},
        "f": rng.uniform(-1e6, 1e6), "db": rng.uniform(-1e300, 1e300),
        "c": text(5), "cl": "".join(rng.choice("aZ09 éüÿ£") for _ in range(rng.randint(0, 10))),
        "vc": text(300), "vs": text(20), "tt": text(60), "tx": text(400), "mt": text(300), "lt": text(300),
        "bn": rng.randbytes(rng.randint(0, 4)), "vb": rng.randbytes(rng.randint(0, 10)),
        "tb": rng.randbytes(rng.randint(0, 255)), "bl": rng.randbytes(rng.randint(0, 3000)),
        "mb": rng.randbytes(rng.randint(0, 300)), "lb": rng.randbytes(rng.randint(0, 300)),
        "dt": f"{rng.randint(1, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "y": rng.choice([0, rng.randint(1901, 2155)]),
        "e": rng.choice(ENUM), "s": ",".join(m for m in SET if rng.random() < 0.4),
        "j": rng.choice(['{"k": 1}', "[1, 2, 3]", '"text"', "12.5", "null", '{"n": {"m": [true, false]}}']),
        "b1": rng.randint(0, 1), "b8": rng.randrange(256), "b10": rng.randrange(1024), "b64": rng.randrange(2**64),
    }  # fmt: skip
    for fsp in FSPS:
        sign = rng.choice(["", "-"])
        row[f"t{fsp}"] = (
            f"{sign}{rng.randint(0, 838)}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{micros(fsp)}"
        )
        day = f"{rng.randint(1000, 9999)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        row[f"dt{fsp}"] = (
            f"{day} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{micros(fsp)}"
        )
        stamp = f"{rng.randint(1971, 2037)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 12:{rng.randint(0, 59):02d}:00"
        row[f"ts{fsp}"] = stamp + micros(fsp)
    return {name: (None if rng.random() < 0.1 else value) for name, value in row.items()}


@dataclass
class Compared:
    """What reading the binlog of a test's writes found."""

    events: int = 0  # rows events of the test's tables
    fast: int = 0  # ...that the fast decoder took
    rows: list[tuple[Row | None, Row | None]] = field(default_factory=list)
    planned: dict[str, bool] = field(default_factory=dict)  # table -> a plan was compiled


def source_config(database: MysqlDatabase) -> MysqlSourceConfig:
    return MysqlSourceConfig(
        settings=MysqlSettings(
            database.host, database.port, database.cdc_user, database.cdc_password, ssl_mode="disable"
        ),
        patterns=TablePatterns([f"{database.name}.*"]),
        server_id=3_999_100_000 + random.randrange(1_000_000),
        heartbeat_interval=1.0,
        pipeline=f"tests/{database.name}",
    )


def current_position(database: MysqlDatabase) -> ResumePoint:
    """Where a pipeline started now would read from (the source's own preflight)."""
    return preflight(source_config(database), None).current.before()


class NoReconnect(pymysql.connections.Connection):  # type: ignore[misc]
    """A binlog connection whose loss fails the test: mysql-replication would reconnect from the
    start position and replay every event (the source's own connections refuse that too)."""

    def _read_packet(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._read_packet(*args, **kwargs)
        except pymysql.err.OperationalError as error:
            raise AssertionError(f"binlog connection lost: {error}") from error


def read_and_compare(database: MysqlDatabase, start: ResumePoint) -> Compared:
    """Reads the binlog from `start` up to a marker written now, as the source does, and checks
    that every rows event gives the same rows on the fast path as through the library."""
    with database.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("CREATE TABLE end_of_test (id int)")
    options = stream_options(source_config(database), start, mariadb=True)
    found = Compared()
    with database.admin_connection() as control:

        def query(sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
            with control.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())

        json_columns = JsonColumns(query, mariadb=True)
        translator = Translator(
            lambda schema, _: schema == database.name, json_columns, mariadb=True, file=start.file
        )
        stream = BinLogStreamReader(**options, pymysql_wrapper=NoReconnect)
        try:
            while not isinstance(event := stream.fetchone(), QueryEvent) or "end_of_test" not in event.query:
                if isinstance(event, TableMapEvent) and event.schema == database.name:
                    body = event.packet.packet.get_all_data()
                    assert len(body) == PACKET_HEADER + event.event_size + 4, "header, body, CRC32"
                    plan = compile_plan(event.columns, shape_of(event, json_columns))
                    found.planned[event.table] = plan is not None
                records = translator.translate(event)
                if isinstance(event, RowsEvent) and event.schema == database.name:
                    found.events += 1
                    found.fast += event._RowsEvent__rows is None  # the library decoded nothing
                    (rows,) = [record for record in records if isinstance(record, Rows)]
                    assert rows.rows == library_rows(event, rows.shape), f"{event.table}: fast rows differ"
                    assert [list(row) for pair in rows.rows for row in pair if row is not None] == [
                        rows.shape.names for pair in rows.rows for row in pair if row is not None
                    ], "columns in table order"
                    found.rows.extend(rows.rows)
        finally:
            stream.close()
    return found


@pytest.fixture
def types_table(mariadb_database: MysqlDatabase) -> Iterator[pymysql.cursors.Cursor]:
    """A cursor on the test's database, which holds the table `types` of every column type."""
    with mariadb_database.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE TABLE types ({', '.join(COLUMNS)})")
        cursor.execute("SET time_zone = '+00:00'")
        yield cursor


def insert(cursor: pymysql.cursors.Cursor, ident: int, values: dict[str, Any]) -> None:
    names = ["id", *values]
    cursor.execute(
        f"INSERT INTO types ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})",
        [ident, *values.values()],
    )


def update(cursor: pymysql.cursors.Cursor, ident: int, values: dict[str, Any]) -> None:
    assignments = ", ".join(f"{name} = %s" for name in values)
    cursor.execute(f"UPDATE types SET {assignments} WHERE id = %s", [*values.values(), ident])


def test_every_type_decodes_as_the_library_decodes_it(
    mariadb_database: MysqlDatabase, types_table: pymysql.cursors.Cursor
) -> None:
    cursor = types_table
    rng = random.Random(20261127)
    start = current_position(mariadb_database)
    cursor.execute("SET sql_mode = ''")
    insert(cursor, 1, MAX_ROW)
    insert(cursor, 2, MIN_ROW)
    insert(cursor, 3, {})  # every column null
    insert(cursor, 4, ZERO_ROW)
    insert(cursor, 5, {"dt": "2024-00-15", "dt0": "2024-05-00 10:00:00", "t0": "-00:00:01"})
    insert(cursor, 6, {"dt": "2024-05-00", "dt1": "0000-01-01 00:00:00.5"})
    cursor.execute("BEGIN")
    for ident in range(10, 130):
        insert(cursor, ident, random_row(rng))
    cursor.execute("COMMIT")
    update(cursor, 1, MIN_ROW)
    update(cursor, 2, {name: None for name in NAMES[1:]})
    update(cursor, 3, MAX_ROW)
    cursor.execute(
        "UPDATE types SET ti = -ti, e = 'paid', s = 'rush,c' WHERE id >= 10"
    )  # one event, many rows
    for ident in range(10, 40):
        update(cursor, ident, random_row(rng))
    cursor.execute("DELETE FROM types WHERE id < 100")
    cursor.execute("SET SESSION binlog_row_image = 'MINIMAL'")  # images of some columns only
    cursor.execute("UPDATE types SET vc = 'minimal', t3 = NULL, b64 = 1 WHERE id >= 100")
    cursor.execute("DELETE FROM types")

    found = read_and_compare(mariadb_database, start)

    assert found.planned == {"types": True}
    assert found.events >= 10
    assert found.fast == found.events, "the fast path took every event, and the library decoded none"
    first = found.rows[0][1]
    assert first is not None
    assert (first["biu"], first["d2"], first["t6"], first["ts6"], first["b64"], first["b1"]) == (
        18446744073709551615, "9" * 35 + "." + "9" * 30, "838:59:59.999999", "2038-01-19T03:14:07.999999Z",
        18446744073709551615, True,
    )  # fmt: skip
    zero = found.rows[3][1]
    assert zero is not None
    assert (zero["dt"], zero["dt3"], zero["ts0"], zero["y"], zero["e"], zero["t3"], zero["d5"]) == (
        None, None, None, 0, "", "-00:00:01.001000", "-0.000000001",
    )  # fmt: skip
    parts = found.rows[4][1]
    assert parts is not None
    assert (parts["dt"], parts["dt0"], parts["t0"]) == (None, None, "-00:00:01"), (
        "a zero part makes a date null"
    )
    minimal = found.rows[-1][0]
    assert minimal is not None
    assert minimal["vc"] is None, "absent from a minimal image: null"


def test_a_table_the_decoder_does_not_cover_is_decoded_by_the_library(
    mariadb_database: MysqlDatabase,
) -> None:
    with mariadb_database.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute("CREATE TABLE places (id int PRIMARY KEY, name varchar(20), spot point)")
        start = current_position(mariadb_database)
        cursor.execute(
            "INSERT INTO places VALUES (1, 'home', ST_GeomFromText('POINT(1 2)')), (2, 'none', NULL)"
        )
        cursor.execute("UPDATE places SET name = 'work' WHERE id = 1")
        cursor.execute("SELECT ST_AsBinary(spot) FROM places WHERE id = 1")
        (wkb,) = cursor.fetchone() or (b"",)

    found = read_and_compare(mariadb_database, start)

    assert found.planned == {"places": False}, "GEOMETRY has no reader: the table has no plan"
    assert (found.events, found.fast) == (2, 0)
    home = found.rows[0][1]
    assert home is not None
    assert (home["id"], home["name"]) == (1, "home")
    assert base64.b64decode(home["spot"]).endswith(wkb), "MariaDB stores an SRID, then the WKB"
    assert found.rows[1] == (None, {"id": 2, "name": "none", "spot": None})
    assert found.rows[2][1] == {"id": 1, "name": "work", "spot": home["spot"]}
