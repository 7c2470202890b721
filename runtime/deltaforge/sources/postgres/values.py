"""PostgreSQL text-format column values to JSON-ready Python values, chosen by type OID.

pgoutput sends every value in the type's text output format (we never ask for `binary`). A
converter is picked once per column when a Relation message arrives (`converter_for`), so a row
costs one call per column and no lookups. The rules keep data lossless and time-zone safe:

- numeric stays a string (a float would round it); float NaN/Infinity become the strings
  "NaN"/"Infinity"/"-Infinity", which JSON cannot carry as numbers;
- timestamptz becomes ISO-8601 in UTC with "Z" whatever offset the server used; timestamp stays
  naive; years before 1 AD use astronomical numbering ("0044-03-15 BC" is "-0043-03-15");
  "infinity"/"-infinity" are kept as they are;
- bytea becomes base64; json/jsonb are parsed; arrays become (nested) lists of converted elements;
- any type without a rule (money, inet, enums, extension types, unknown OIDs) stays the string
  the server sent, so nothing is lost even when we do not know the type.

The server's DateStyle must be ISO (the default); the source sets it on its connection.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias

import orjson

from deltaforge.events import UNCHANGED
from deltaforge.sources.postgres.arrays import TextConverter, array_converter
from deltaforge.sources.postgres.pgoutput import TupleValues

Converter: TypeAlias = Callable[[bytes], Any]

# Built-in type OIDs (fixed in every PostgreSQL since they come from the catalog's bootstrap data).
BOOL: Final = 16
BYTEA: Final = 17
CHAR: Final = 18
NAME: Final = 19
INT8: Final = 20
INT2: Final = 21
INT4: Final = 23
TEXT: Final = 25
OID: Final = 26
XID: Final = 28
CID: Final = 29
JSON: Final = 114
XML: Final = 142
POINT: Final = 600
CIDR: Final = 650
FLOAT4: Final = 700
FLOAT8: Final = 701
UNKNOWN: Final = 705
MACADDR8: Final = 774
MONEY: Final = 790
MACADDR: Final = 829
INET: Final = 869
BPCHAR: Final = 1042
VARCHAR: Final = 1043
DATE: Final = 1082
TIME: Final = 1083
TIMESTAMP: Final = 1114
TIMESTAMPTZ: Final = 1184
INTERVAL: Final = 1186
TIMETZ: Final = 1266
BIT: Final = 1560
VARBIT: Final = 1562
NUMERIC: Final = 1700
UUID: Final = 2950
PG_LSN: Final = 3220
JSONB: Final = 3802
JSONPATH: Final = 4072

# Array type OID -> element type OID, for the built-in arrays whose elements are separated by
# commas (all but _box, whose ';' delimiter makes it a plain string here).
ARRAY_ELEMENT_OIDS: Final[dict[int, int]] = {
    1000: BOOL,
    1001: BYTEA,
    1002: CHAR,
    1003: NAME,
    1005: INT2,
    1007: INT4,
    1009: TEXT,
    1011: XID,
    1012: CID,
    1014: BPCHAR,
    1015: VARCHAR,
    1016: INT8,
    1017: POINT,
    1021: FLOAT4,
    1022: FLOAT8,
    1028: OID,
    1040: MACADDR,
    1041: INET,
    1115: TIMESTAMP,
    1182: DATE,
    1183: TIME,
    1185: TIMESTAMPTZ,
    1187: INTERVAL,
    1231: NUMERIC,
    1270: TIMETZ,
    1561: BIT,
    1563: VARBIT,
    143: XML,
    199: JSON,
    2951: UUID,
    3221: PG_LSN,
    3807: JSONB,
    4073: JSONPATH,
    651: CIDR,
    775: MACADDR8,
    791: MONEY,
}

_FLOAT_WORDS: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_INFINITIES: Final = frozenset(("infinity", "-infinity"))
_TIMESTAMP: Final = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?"
)
_DATE: Final = re.compile(r"(\d{4,})-(\d\d)-(\d\d)( BC)?")
_BYTEA_ESCAPE: Final = re.compile(rb"\\(\\|[0-7]{3})")
# orjson reads integers beyond 64 bits as floats, silently rounding them: such documents go to
# Python's parser, which keeps them exact.
_LONG_INTEGER: Final = re.compile(rb"\d{20}")


# The unbound method itself: a converter that is a C function costs no Python frame per value.
_text: Final[Converter] = bytes.decode


def _identity(text: str) -> str:
    return text


def _float(raw: bytes | str) -> float | str:
    value = float(raw)
    if value - value == 0.0:  # neither NaN nor an infinity
        return value
    return _FLOAT_WORDS[repr(value)]


def _bool(raw: bytes) -> bool:
    return raw == b"t"


def _bool_text(text: str) -> bool:
    return text == "t"


def _json_float(literal: str) -> float | str:
    value = float(literal)
    return value if value - value == 0.0 else literal


def _json(raw: bytes) -> Any:
    if _LONG_INTEGER.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # e.g. 1e400, valid JSON beyond a double: keep its literal below
    return json.loads(raw, parse_float=_json_float)


def _json_text(text: str) -> Any:
    return _json(text.encode())


def _bytea_text(text: str) -> str:
    if text.startswith("\\x"):
        data = binascii.a2b_hex(text[2:])
    else:  # bytea_output = 'escape': octal escapes for non-printable bytes, "\\\\" for a backslash
        data = _BYTEA_ESCAPE.sub(
            lambda m: b"\\" if m[1] == b"\\" else bytes((int(m[1], 8),)), text.encode("latin-1")
        )
    return binascii.b2a_base64(data, newline=False).decode()


def _year(year: int) -> str:
    return f"{year:04d}" if year >= 0 else f"-{-year:04d}"


def _with_micros(date: str, time: str) -> str:
    """ISO date and time, the fraction padded to microseconds as `datetime.isoformat` writes it."""
    if len(time) > 8:
        return f"{date}T{time:0<15}"
    return f"{date}T{time}"


def _timestamp_general(text: str, utc: bool) -> str:
    """Any ISO timestamp output: BC years, years past 9999, and UTC offsets down to seconds."""
    if text in _INFINITIES:
        return text
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO timestamp: {text!r} (the session's DateStyle must be ISO)")
    year = int(match[1])
    if match[12]:
        year = 1 - year
    # datetime only spans years 1-9999; the Gregorian calendar repeats every 400 years, so the
    # offset arithmetic runs on an equivalent year and the difference is added back.
    base = year % 400 + 2000
    moment = datetime(
        base,
        int(match[2]),
        int(match[3]),
        int(match[4]),
        int(match[5]),
        int(match[6]),
        int((match[7] or "0").ljust(6, "0")),
    )
    if match[8]:
        offset = timedelta(hours=int(match[9]), minutes=int(match[10] or 0), seconds=int(match[11] or 0))
        moment = moment - offset if match[8] == "+" else moment + offset
    date = f"{_year(moment.year - base + year)}-{moment.month:02d}-{moment.day:02d}"
    time = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if moment.microsecond:
        time = f"{time}.{moment.microsecond:06d}"
    return f"{date}T{time}Z" if utc else f"{date}T{time}"


def _timestamptz(raw: bytes) -> str:
    """`_timestamptz_text` without the intermediate frames: the commonest timestamp of a row."""
    text = raw.decode()
    if text[-3:] == "+00" and text[4:5] == "-" and text[10:11] == " ":
        time = text[11:-3]
        return f"{text[:10]}T{time:0<15}Z" if len(time) > 8 else f"{text[:10]}T{time}Z"
    return _timestamp_general(text, utc=True)


def _timestamptz_text(text: str) -> str:
    # The replication session runs in UTC: "2024-01-02 03:04:05.12+00" needs no arithmetic.
    if text[-3:] == "+00" and text[4:5] == "-" and text[10:11] == " ":
        return f"{_with_micros(text[:10], text[11:-3])}Z"
    return _timestamp_general(text, utc=True)


def _timestamp_text(text: str) -> str:
    if text[4:5] == "-" and text[10:11] == " " and text[-1].isdigit():
        return _with_micros(text[:10], text[11:])
    return _timestamp_general(text, utc=False)


def _date_text(text: str) -> str:
    if (len(text) == 10 and text[4] == "-") or text in _INFINITIES:
        return text
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO date: {text!r} (the session's DateStyle must be ISO)")
    year = int(match[1])
    return f"{_year(1 - year if match[4] else year)}-{match[2]}-{match[3]}"


def _from_text(convert: TextConverter) -> Converter:
    def converter(raw: bytes) -> Any:
        return convert(raw.decode())

    return converter


_TEXT_CONVERTERS: Final[dict[int, TextConverter]] = {
    INT2: int,
    INT4: int,
    INT8: int,
    OID: int,
    XID: int,
    CID: int,
    FLOAT4: _float,
    FLOAT8: _float,
    BOOL: _bool_text,
    JSON: _json_text,
    JSONB: _json_text,
    BYTEA: _bytea_text,
    TIMESTAMPTZ: _timestamptz_text,
    TIMESTAMP: _timestamp_text,
    DATE: _date_text,
}

# int() and _float() read ASCII bytes as well as str: no intermediate str on the hottest types.
_READS_BYTES: Final[dict[int, Converter]] = {oid: int for oid in (INT2, INT4, INT8, OID, XID, CID)} | {
    FLOAT4: _float,
    FLOAT8: _float,
}

_CONVERTERS: Final[dict[int, Converter]] = {
    **{oid: _from_text(convert) for oid, convert in _TEXT_CONVERTERS.items()},
    **_READS_BYTES,
    BOOL: _bool,
    TIMESTAMPTZ: _timestamptz,
    JSON: _json,
    JSONB: _json,
    **{
        array_oid: array_converter(_TEXT_CONVERTERS.get(element_oid, _identity))
        for array_oid, element_oid in ARRAY_ELEMENT_OIDS.items()
    },
}


def converter_for(type_oid: int) -> Converter:
    """The converter of a column's text values: strings for types without a rule of their own."""
    return _CONVERTERS.get(type_oid, _text)


def convert_row(
    columns: Sequence[str], converters: Sequence[Converter], values: TupleValues
) -> dict[str, Any]:
    """A decoded tuple as a row dict, in one pass: the per-row hot path of the source.

    NULL stays None and UNCHANGED stays; anything else that is not text is refused by the
    fallback, which also reports a column-count mismatch (a missed Relation message).
    """
    if len(values) == len(converters):
        try:
            return {
                name: convert(raw) if type(raw) is bytes else _passthrough(raw)
                for name, convert, raw in zip(columns, converters, values)  # noqa: B905 - length checked
            }
        except _NotText:
            pass
    return dict(zip(columns, convert_tuple(converters, values), strict=True))


class _NotText(Exception):
    """A binary value inside convert_row: convert_tuple raises the descriptive error."""


def _passthrough(raw: object) -> object:
    if raw is None or raw is UNCHANGED:
        return raw
    raise _NotText


def convert_tuple(converters: Sequence[Converter], values: TupleValues) -> list[Any]:
    """A decoded tuple's values converted column by column; NULL stays None and UNCHANGED stays."""
    if len(converters) != len(values):
        raise ValueError(
            f"the tuple has {len(values)} columns but its relation {len(converters)}: "
            "a Relation message was missed"
        )
    row: list[Any] = []
    for convert, raw in zip(converters, values, strict=True):
        if type(raw) is bytes:
            row.append(convert(raw))
        elif raw is None or raw is UNCHANGED:
            row.append(raw)
        else:
            raise ValueError("binary column values cannot be converted: do not request binary 'true'")
    return row
