"""Binlog column values (as mysql-replication decodes them) to JSON-ready Python values.

A converter is chosen once per column when a TableMapEvent arrives (`converter_for`), so a row
costs one call per column. The rules keep data lossless and time-zone safe, as the PostgreSQL
source does:

- integers stay integers (unsigned BIGINT up to 18446744073709551615); DECIMAL is a string
  (a float would round it); FLOAT is the shortest decimal that round-trips through 32 bits
  (1.1, not 1.100000023841858); DOUBLE is a float;
- CHAR/VARCHAR/TEXT/ENUM are strings; SET is its members joined by "," in declaration order
  ("" for the empty set, never a fake null); BINARY/VARBINARY/BLOB/GEOMETRY are base64, BINARY(n)
  padded back to n bytes (the binlog strips trailing zero bytes);
- DATE "2024-02-29"; DATETIME naive ISO "2024-03-01T10:00:00.500000"; TIMESTAMP ISO in UTC with
  "Z" (the binlog stores seconds since the epoch, so the session or server time zone cannot shift
  it); TIME "-838:59:59.123000" (it is a duration: hours may pass 24 or be negative); YEAR an
  integer; zero dates ("0000-00-00") are null, as the library reports them;
- BIT(1) is a boolean, BIT(n) an unsigned integer;
- JSON is parsed: MySQL's binary JSON arrives decoded; MariaDB stores JSON as LONGTEXT with a
  `json_valid()` check, so columns found to carry one (see `catalog.py`) are parsed here, and a
  value that does not parse stays the string it is.

mysql-replication decodes two things wrongly, corrected here: a negative TIME with a fraction
(-00:00:01.25 arrives as -00:00:01.75) and YEAR 0000 (arrives as 1900).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson
from pymysqlreplication.constants import FIELD_TYPE

Converter = Callable[[Any], Any]

_EPOCH: Final = datetime(1970, 1, 1)
_MICROS: Final = 1_000_000
_INTEGERS: Final = frozenset(
    {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG}
)
_STRINGS: Final = frozenset(
    {
        FIELD_TYPE.VARCHAR, FIELD_TYPE.VAR_STRING, FIELD_TYPE.STRING, FIELD_TYPE.BLOB,
        FIELD_TYPE.TINY_BLOB, FIELD_TYPE.MEDIUM_BLOB, FIELD_TYPE.LONG_BLOB,
    }
)  # fmt: skip
EMPTY_SET_SOURCE: Final = "empty set"  # mysql-replication's NONE_SOURCE.EMPTY_SET


def _same(value: Any) -> Any:
    return value


def float32(value: float) -> float:
    """The shortest decimal that is the same 32-bit float: FLOAT columns hold 32 bits, and the
    double the library widens them to prints digits nobody stored."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def decimal_text(value: Decimal) -> str:
    return format(value, "f")


def iso_date(value: date) -> str:
    return value.isoformat()


def iso_datetime(value: datetime) -> str:
    return value.isoformat()


def iso_timestamp(value: datetime) -> str | None:
    """A TIMESTAMP (a naive UTC datetime from the library) as ISO-8601 UTC with "Z"; the zero
    timestamp (stored as epoch 0, which no real TIMESTAMP can hold) is null."""
    if value == _EPOCH:
        return None
    return value.isoformat() + "Z"


def time_text(value: timedelta) -> str:
    """TIME as [-]HH:MM:SS[.ffffff], correcting the library's negative fractions."""
    negative = value < timedelta(0)
    magnitude = -value if negative else value
    seconds = magnitude.days * 86_400 + magnitude.seconds
    micros = magnitude.microseconds
    if negative and micros:
        # The library adds the stored (complemented) fraction to the whole seconds: -1.25 s
        # arrives as -(1 s + 0.75 s). The real magnitude is 1 s + (1 s - 0.75 s).
        micros = _MICROS - micros
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{'-' if negative else ''}{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}.{micros:06d}" if micros else text


def year(value: int) -> int:
    return 0 if value == 1900 else value  # YEAR 0000 is decoded as 1900 + 0


def bit_bool(value: str) -> bool:
    return value.strip("0") != ""


def bit_int(value: str) -> int:
    return int(value, 2) if value else 0


def text_of(value: Any) -> Any:
    """Bytes a text column could not be decoded into (an exotic charset): UTF-8, replaced."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def base64_of(value: bytes | str) -> str:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def padded_base64(length: int) -> Converter:
    def convert(value: bytes | str) -> str:
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        return base64.b64encode(raw.ljust(length, b"\x00")).decode("ascii")

    return convert


def json_text(value: Any) -> Any:
    """MariaDB JSON (LONGTEXT): the parsed document, or the text itself when it is not JSON."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def json_document(value: Any) -> Any:
    """MySQL binary JSON as the library decodes it (bytes for strings and keys) made plain."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {json_document(key): json_document(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_document(item) for item in value]
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return time_text(value)
    return value


def set_text(members: list[str] | None) -> Converter:
    order = {member: position for position, member in enumerate(members or [])}

    def convert(value: set[str] | frozenset[str]) -> str:
        return ",".join(sorted(value, key=lambda member: order.get(member, len(order))))

    return convert


def is_binary(column: Any) -> bool:
    return getattr(column, "character_set_name", None) in (None, "binary") or (
        getattr(column, "collation_name", None) == "binary"
    )


def converter_for(column: Any, *, json: bool = False) -> Converter:
    """The converter of one binlog column (a mysql-replication Column); `json` marks a MariaDB
    LONGTEXT column declared JSON."""
    kind = column.type
    if kind in _INTEGERS:
        return _same
    if kind == FIELD_TYPE.YEAR:
        return year
    if kind == FIELD_TYPE.FLOAT:
        return float32
    if kind in (FIELD_TYPE.DOUBLE, FIELD_TYPE.ENUM):
        return _same
    if kind in (FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DECIMAL):
        return decimal_text
    if kind in _STRINGS:
        if json:
            return json_text
        if not is_binary(column):
            return text_of
        if kind == FIELD_TYPE.STRING and getattr(column, "max_length", 0):
            return padded_base64(column.max_length)
        return base64_of
    if kind in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return iso_date
    if kind in (FIELD_TYPE.DATETIME, FIELD_TYPE.DATETIME2):
        return iso_datetime
    if kind in (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2):
        return iso_timestamp
    if kind in (FIELD_TYPE.TIME, FIELD_TYPE.TIME2):
        return time_text
    if kind == FIELD_TYPE.SET:
        return set_text(column.set_values)
    if kind == FIELD_TYPE.BIT:
        return bit_bool if getattr(column, "bits", 0) == 1 else bit_int
    if kind == FIELD_TYPE.JSON:
        return json_document
    if kind == FIELD_TYPE.GEOMETRY:
        return base64_of
    return _same


def convert_row(
    names: list[str], converters: list[Converter], empty_sets: frozenset[str], values: dict[str, Any],
    none_sources: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """One decoded row (`values` by column name) as a JSON-ready row in column order."""
    row: dict[str, Any] = {}
    for name, convert in zip(names, converters, strict=True):
        value = values.get(name)
        if value is None:
            row[name] = "" if name in empty_sets and none_sources.get(name) == EMPTY_SET_SOURCE else None
        else:
            row[name] = convert(value)
    return row
