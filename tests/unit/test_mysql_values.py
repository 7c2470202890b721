"""Binlog value conversion, JSON column detection, statement parsing and the preflight rules."""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pymysqlreplication.constants import FIELD_TYPE

from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.mysql.catalog import json_columns_of
from deltaforge.sources.mysql.preflight import check_variables, missing_grants
from deltaforge.sources.mysql.translate import is_ddl, truncated_table
from deltaforge.sources.mysql.values import convert_row, converter_for, float32, time_text


def column(kind: int, **extra: Any) -> Any:
    fields: dict[str, Any] = {"type": kind, "name": "c", "character_set_name": None, "collation_name": None}
    return SimpleNamespace(**{**fields, **extra})


def convert(kind: int, value: Any, **extra: Any) -> Any:
    return converter_for(column(kind, **extra))(value)


def test_integers_decimals_and_floats() -> None:
    assert convert(FIELD_TYPE.LONGLONG, 18446744073709551615) == 18446744073709551615
    assert convert(FIELD_TYPE.TINY, -128) == -128
    assert convert(FIELD_TYPE.NEWDECIMAL, Decimal("-12345678901234567890.0123456789")) == (
        "-12345678901234567890.0123456789"
    )
    assert convert(FIELD_TYPE.NEWDECIMAL, Decimal("0E-5")) == "0.00000", "never an exponent"
    assert convert(FIELD_TYPE.FLOAT, 1.100000023841858) == 1.1
    assert float32(3.4028234663852886e38) == 3.4028235e38
    assert convert(FIELD_TYPE.DOUBLE, 2.2) == 2.2


def test_strings_binaries_enum_and_set() -> None:
    utf8 = {"character_set_name": "utf8", "collation_name": "utf8mb4_general_ci"}
    binary = {"character_set_name": "binary", "collation_name": "binary"}
    assert convert(FIELD_TYPE.VARCHAR, "héllo", **utf8) == "héllo"
    assert convert(FIELD_TYPE.BLOB, b"\xde\xad", **binary) == base64.b64encode(b"\xde\xad").decode()
    assert (
        convert(FIELD_TYPE.STRING, b"\x01\x02", max_length=4, **binary)
        == base64.b64encode(b"\x01\x02\x00\x00").decode()
    ), "BINARY(4) is padded back to 4 bytes"
    assert convert(FIELD_TYPE.ENUM, "b") == "b"
    assert convert(FIELD_TYPE.SET, {"z", "x"}, set_values=["x", "y", "z"]) == "x,z"


def test_temporal_values() -> None:
    assert convert(FIELD_TYPE.DATE, date(2024, 2, 29)) == "2024-02-29"
    assert (
        convert(FIELD_TYPE.DATETIME2, datetime(2024, 3, 1, 10, 0, 0, 500000)) == "2024-03-01T10:00:00.500000"
    )
    assert convert(FIELD_TYPE.DATETIME2, datetime(2024, 3, 1, 10)) == "2024-03-01T10:00:00"
    assert (
        convert(FIELD_TYPE.TIMESTAMP2, datetime(2024, 3, 1, 8, 0, 0, 250000)) == "2024-03-01T08:00:00.250000Z"
    )
    assert convert(FIELD_TYPE.TIMESTAMP2, datetime(1970, 1, 1)) is None, "the zero TIMESTAMP"
    assert convert(FIELD_TYPE.YEAR, 1900) == 0, "YEAR 0000 arrives as 1900"
    assert convert(FIELD_TYPE.YEAR, 2155) == 2155


@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        # What mysql-replication 1.0.17 returns for these TIME values (measured on MariaDB 10.11).
        (timedelta(hours=12, minutes=34, seconds=56, microseconds=789012), "12:34:56.789012"),
        (-timedelta(hours=838, minutes=59, seconds=59), "-838:59:59"),
        (-timedelta(seconds=0, microseconds=500000), "-00:00:00.500000"),
        (-timedelta(seconds=1, microseconds=750000), "-00:00:01.250000"),
        (-timedelta(hours=12, minutes=34, seconds=56, microseconds=210988), "-12:34:56.789012"),
        (-timedelta(seconds=0, microseconds=999999), "-00:00:00.000001"),
        (-timedelta(hours=838, minutes=59, seconds=59, microseconds=1), "-838:59:59.999999"),
        (timedelta(hours=838, minutes=59, seconds=59, microseconds=999999), "838:59:59.999999"),
    ],
)
def test_time_is_a_duration_and_negative_fractions_are_corrected(decoded: timedelta, expected: str) -> None:
    assert time_text(decoded) == expected


def test_bits_and_json() -> None:
    assert convert(FIELD_TYPE.BIT, "1", bits=1) is True
    assert convert(FIELD_TYPE.BIT, "0", bits=1) is False
    assert convert(FIELD_TYPE.BIT, "1010101010", bits=10) == 682
    text = {"character_set_name": "utf8", "collation_name": "utf8mb4_bin"}
    assert converter_for(column(FIELD_TYPE.BLOB, **text), json=True)('{"a": [1, 2]}') == {"a": [1, 2]}
    assert converter_for(column(FIELD_TYPE.BLOB, **text), json=True)("not json") == "not json"
    assert convert(FIELD_TYPE.BLOB, '{"a": 1}', **text) == '{"a": 1}', "LONGTEXT without the check stays text"
    assert convert(FIELD_TYPE.JSON, {b"k": [b"v", 1, Decimal("1.50")]}) == {"k": ["v", 1, "1.50"]}


def test_rows_keep_nulls_and_tell_the_empty_set_from_null() -> None:
    converters = [
        converter_for(column(FIELD_TYPE.LONG)),
        converter_for(column(FIELD_TYPE.SET, set_values=["a"])),
    ]
    names = ["id", "tags"]
    sets = frozenset({"tags"})
    assert convert_row(names, converters, sets, {"id": 1, "tags": None}, {"tags": "empty set"}) == {
        "id": 1,
        "tags": "",
    }
    assert convert_row(
        names, converters, sets, {"id": None, "tags": None}, {"id": "null", "tags": "null"}
    ) == {
        "id": None,
        "tags": None,
    }


def test_mariadb_json_columns_come_from_their_check_constraints() -> None:
    clauses = ["json_valid(`doc`)", "json_valid(`we``ird`)", "`qty` > 0", "json_valid(`a`) and `b` > 1"]
    assert json_columns_of(clauses) == frozenset({"doc", "we`ird"})


def test_truncate_and_ddl_statements_are_recognised() -> None:
    assert truncated_table("TRUNCATE TABLE orders", "shop") == ("shop", "orders")
    assert truncated_table("truncate `other db`.`order items`;", "shop") == ("other db", "order items")
    assert truncated_table("/* comment */ TRUNCATE shop.orders", "x") == ("shop", "orders")
    assert truncated_table("DELETE FROM orders", "shop") is None
    assert is_ddl("ALTER TABLE orders ADD COLUMN note text")
    assert is_ddl("  CREATE TABLE x (id int)")
    assert not is_ddl("INSERT INTO t VALUES (1)")


GOOD = {
    "version": "10.11.19-MariaDB-log",
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"log_bin": "OFF"}, "log_bin"),
        ({"binlog_format": "MIXED"}, "binlog_format"),
        ({"binlog_row_image": "MINIMAL"}, "binlog_row_image"),
        ({"binlog_row_metadata": "MINIMAL"}, "binlog_row_metadata"),
        ({"version": "8.0.36", "binlog_transaction_compression": "ON"}, "binlog_transaction_compression"),
        ({"log_bin_compress": "ON"}, "log_bin_compress"),
        ({"version": "8.0.36", "binlog_row_value_options": "PARTIAL_JSON"}, "binlog_row_value_options"),
    ],
)
def test_each_bad_server_setting_is_named_with_its_fix(changed: dict[str, str], message: str) -> None:
    check_variables(GOOD)
    with pytest.raises(SourceConfigError, match=message) as raised:
        check_variables({**GOOD, **changed})
    assert "SET " in str(raised.value) or "log_bin=" in str(raised.value)


def test_old_servers_without_row_metadata_are_refused() -> None:
    old = {key: value for key, value in GOOD.items() if key != "binlog_row_metadata"}
    with pytest.raises(SourceConfigError, match=r"MariaDB 10\.5\+ or MySQL 8\.0\.14\+"):
        check_variables(old)


def test_missing_grants_are_named() -> None:
    full = ["GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%`"]
    assert missing_grants(full) == []
    assert missing_grants(["GRANT ALL PRIVILEGES ON *.* TO `root`@`%` WITH GRANT OPTION"]) == []
    assert missing_grants(["GRANT SELECT, REPLICATION CLIENT ON *.* TO `cdc`@`%`"]) == ["REPLICATION SLAVE"]
    assert missing_grants(
        ["GRANT REPLICATION SLAVE ON *.* TO `cdc`@`%`", "GRANT SELECT ON `shop`.* TO `cdc`@`%`"]
    ) == ["REPLICATION CLIENT (MariaDB: BINLOG MONITOR)"]
    assert missing_grants(["GRANT USAGE ON *.* TO `cdc`@`%`"]) == [
        "REPLICATION SLAVE",
        "REPLICATION CLIENT (MariaDB: BINLOG MONITOR)",
        "SELECT",
    ]
    assert missing_grants(["GRANT USAGE ON *.* TO `cdc`@`%`", "GRANT `cdc_role` TO `cdc`@`%`"]) == [], (
        "privileges through a role are not listed: the server's own errors speak"
    )
