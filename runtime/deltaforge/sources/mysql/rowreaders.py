"""Readers of one column value in a binlog row image, for the fast rows decoder (`rowcodec.py`).

A reader takes the event's bytes and the offset of a value and returns the JSON-ready value and
the offset after it. The value is exactly what mysql-replication's decoding followed by this
source's converter (`values.py`) gives, so either path may decode any event; `reader_for` returns
None for a column it has no reader for, and the whole table then keeps the library's path.

Value layouts, as the server's `Field::pack` writes them into row images (MySQL `sql/field.cc`,
`mysys/my_time.cc`, `strings/decimal.cc`; MariaDB's are the same for these types):

- integers: little-endian, 1/2/3/4/8 bytes, two's complement when signed; FLOAT/DOUBLE: IEEE
  754 little-endian, 4/8 bytes; YEAR: one byte, the year minus 1900 (0 for 0000);
- DECIMAL(p,s): `decimal2bin`: the integer and fraction digits in groups of 9 (4 big-endian
  bytes each), the leftover leading integer digits and trailing fraction digits in 1-4 bytes
  (`dig2bytes`); the first bit is flipped for positive values and every byte inverted for
  negative ones, so the bytes sort as the numbers do;
- CHAR/VARCHAR/BINARY/VARBINARY: a 1-byte length when the column's maximum byte length is at
  most 255, else 2 bytes; BLOB/TEXT (and MariaDB's JSON, a LONGTEXT): a 1-4 byte length (the
  table map's length size); both little-endian, then the bytes in the column's charset;
- ENUM: the member's 1-based index (0 = the error value ''), 1 or 2 bytes; SET: a bitmask of
  members, 1-8 bytes; BIT(n): (n + 7) / 8 big-endian bytes;
- DATE: 3 bytes little-endian, day | month << 5 | year << 9;
- DATETIME2: 5 big-endian bytes, 1 sign bit, year * 13 + month (17), day (5), hour (5),
  minute (6), second (6), then the fraction; TIMESTAMP2: 4 big-endian bytes of seconds since
  the epoch (UTC), then the fraction; TIME2: 3 big-endian bytes, 0x800000 plus (negative: minus)
  hour << 12 | minute << 6 | second, then the fraction (`my_time_packed_from_binary`: a negative
  value's fraction is stored reversed);
- fractions: (fsp + 1) / 2 big-endian bytes holding the fraction to an even number of digits.

Where mysql-replication reads a layout differently from the server (a negative TIME with a
fraction; YEAR 0000), the converters in `values.py` correct it, and these readers give the
corrected value directly. Where it would fail, or give a value the converters do not correct
(an invalid DATE, a TIMESTAMP past 2038, a fraction out of range), a reader raises ValueError
and the event goes to the library, which then does what it always did.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import lru_cache, partial
from typing import Any, Final

from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import RowsEvent

from deltaforge.sources.mysql.values import Converter, float32, text_of

Reader = Callable[[bytes, int], tuple[Any, int]]

_EPOCH: Final = datetime(1970, 1, 1)
_TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(60))
_DIG2BYTES: Final = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)  # bytes holding 0..9 leftover decimal digits
_BILLION: Final = 1_000_000_000  # a DECIMAL group: 9 digits in 4 bytes
_GROUP: Final = 0xFFFFFFFF
# struct formats of the fixed-width numbers: (signed, unsigned)
_INTEGERS: Final = {
    FIELD_TYPE.TINY: ("<b", "<B"),
    FIELD_TYPE.SHORT: ("<h", "<H"),
    FIELD_TYPE.LONG: ("<i", "<I"),
    FIELD_TYPE.LONGLONG: ("<q", "<Q"),
}
_TIME_OFFSET: Final = 0x800000  # TIMEF_INT_OFS


def reader_for(column: Any, convert: Converter) -> Reader | None:
    """The reader of one mysql-replication Column whose library value `convert` (the column's
    converter in the TableShape) turns into the event value; None when there is none."""
    kind = column.type
    if kind in _INTEGERS:
        return _number(_INTEGERS[kind][1 if column.unsigned else 0])
    if kind == FIELD_TYPE.INT24:
        return partial(_int24, not column.unsigned)
    if kind == FIELD_TYPE.FLOAT:
        return _number("<f", float32)
    if kind == FIELD_TYPE.DOUBLE:
        return _number("<d")
    if kind == FIELD_TYPE.YEAR:
        return _year
    if kind == FIELD_TYPE.NEWDECIMAL:
        return _decimal(column.precision, column.decimals)
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return _string(2 if column.max_length > 255 else 1, column, convert)
    if kind == FIELD_TYPE.BLOB:
        return _string(column.length_size, column, convert)
    if kind == FIELD_TYPE.ENUM:
        return _enum(column.size, column.enum_values)
    if kind == FIELD_TYPE.SET:
        return _set(column.size, column.set_values)
    if kind == FIELD_TYPE.BIT:
        return _bit(column.bytes, column.bits)
    if kind == FIELD_TYPE.DATE:
        return _date
    if kind == FIELD_TYPE.DATETIME2:
        return _datetime(column.fsp)
    if kind == FIELD_TYPE.TIMESTAMP2:
        return _timestamp(column.fsp)
    if kind == FIELD_TYPE.TIME2:
        return _time(column.fsp)
    # MySQL's binary JSON, GEOMETRY, the pre-5.6 temporal types, the pre-5.0 DECIMAL, MariaDB's
    # compressed columns and anything newer: the library's path.
    return None


def _number(layout: str, convert: Callable[[Any], Any] | None = None) -> Reader:
    unpack, size = struct.Struct(layout).unpack_from, struct.calcsize(layout)
    if convert is None:

        def read(data: bytes, pos: int) -> tuple[Any, int]:
            return unpack(data, pos)[0], pos + size

        return read

    def read_converted(data: bytes, pos: int) -> tuple[Any, int]:
        return convert(unpack(data, pos)[0]), pos + size

    return read_converted


def _int24(signed: bool, data: bytes, pos: int) -> tuple[int, int]:
    end = pos + 3
    return int.from_bytes(data[pos:end], "little", signed=signed), end


def _year(data: bytes, pos: int) -> tuple[int, int]:
    stored = data[pos]
    return stored + 1900 if stored else 0, pos + 1


def _decimal(precision: int, scale: int) -> Reader:
    """DECIMAL as lossless text, formatted as `format(Decimal(...), "f")` formats the library's
    Decimal: no leading zeros, "0" before an empty integer part, all `scale` fraction digits.

    Each part is a number in base 10^9 whose digits are 4-byte groups (the integer part's
    leftover leading digits are one more, smaller, digit); the fraction's leftover trailing
    digits follow its groups."""
    whole_groups, lead_digits = divmod(precision - scale, 9)
    fraction_groups, tail_digits = divmod(scale, 9)
    lead_bytes, tail_bytes = _DIG2BYTES[lead_digits], _DIG2BYTES[tail_digits]
    fraction_bits = 8 * (4 * fraction_groups + tail_bytes)
    size = lead_bytes + 4 * whole_groups + fraction_bits // 8
    sign_bit = 1 << (8 * size - 1)
    negative_flip = ((1 << 8 * size) - 1) ^ sign_bit
    fraction_mask, tail_mask = (1 << fraction_bits) - 1, (1 << 8 * tail_bytes) - 1
    tail_factor: int = 10**tail_digits
    # Most significant first: the shifts of the integer part's digits, of the fraction's groups.
    whole_shifts = [32 * k for k in range(whole_groups + (1 if lead_bytes else 0))][::-1]
    fraction_shifts = [8 * tail_bytes + 32 * k for k in range(fraction_groups)][::-1]

    def read(data: bytes, pos: int) -> tuple[str, int]:
        end = pos + size
        bits = int.from_bytes(data[pos:end], "big")
        if bits & sign_bit:
            bits ^= sign_bit
            sign = ""
        else:
            bits ^= negative_flip
            sign = "-"
        whole = bits >> fraction_bits
        if whole > _GROUP:  # two base-10^9 digits or more (below that, the bits are the value)
            digits, whole = whole, 0
            for shift in whole_shifts:
                whole = whole * _BILLION + ((digits >> shift) & _GROUP)
        if not scale:
            return f"{sign}{whole}", end
        fraction = bits & fraction_mask
        if fraction_shifts:
            digits, fraction = fraction, 0
            for shift in fraction_shifts:
                fraction = fraction * _BILLION + ((digits >> shift) & _GROUP)
            fraction = fraction * tail_factor + (digits & tail_mask)
        return f"{sign}{whole}.{fraction:0{scale}d}", end

    return read


def _string(width: int, column: Any, convert: Converter) -> Reader:
    """Length-prefixed bytes, decoded as mysql-replication decodes them (the charset's Python
    codec, strictly; bytes when Python has no such codec), then converted (base64 for binary,
    parsed for MariaDB JSON). A value that does not decode raises UnicodeDecodeError: the library
    would fail on it too, and the event goes to it."""
    finish = _finisher(column.character_set_name, convert)

    if width == 1:

        def read_short(data: bytes, pos: int) -> tuple[Any, int]:
            end = pos + 1 + data[pos]
            return finish(data[pos + 1 : end]), end

        return read_short

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        start = pos + width
        end = start + int.from_bytes(data[pos:start], "little")
        return finish(data[start:end]), end

    return read


def _finisher(charset: str | None, convert: Converter) -> Callable[[bytes], Any]:
    """What becomes of a string column's bytes: the library's decoding, then the converter."""
    encoding = RowsEvent.charset_to_encoding(charset) if charset is not None else "utf-8"
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        return convert  # the library keeps the bytes
    decode: Callable[[bytes], str]
    if codec.name == "utf-8":
        decode = bytes.decode  # strict UTF-8, a fifth of the cost of the general call below
    else:

        def decode(raw: bytes) -> str:
            return str(raw, encoding)

    if convert is text_of:  # the identity on text
        return decode

    def decode_and_convert(raw: bytes) -> Any:
        return convert(decode(raw))

    return decode_and_convert


def _enum(size: int, members: list[str] | None) -> Reader:
    """The member's text ('' for index 0); null without member names, as the library gives it.
    An index past the members raises IndexError (the library fails on it too)."""

    def read(data: bytes, pos: int) -> tuple[str | None, int]:
        end = pos + size
        index = int.from_bytes(data[pos:end], "little")
        return (members[index] if members else None), end

    return read


def _set(size: int, members: list[str] | None) -> Reader | None:
    """Members joined by "," in declaration order, "" for none. Members whose names repeat (the
    library names every member it cannot decode '') would merge in the library's Python set:
    such columns keep the library's path."""
    named = list(members or [])
    if len(set(named)) != len(named):
        return None
    bits = [(1 << position, member) for position, member in enumerate(named)]

    def read(data: bytes, pos: int) -> tuple[str, int]:
        end = pos + size
        mask = int.from_bytes(data[pos:end], "little")
        return ",".join([member for bit, member in bits if mask & bit]), end

    return read


def _bit(size: int, width: int) -> Reader:
    """BIT(1) a boolean, BIT(n) an unsigned integer; bits above n in the first byte are ignored,
    as the library ignores them."""
    mask = (1 << width) - 1

    def read(data: bytes, pos: int) -> tuple[int | bool, int]:
        end = pos + size
        value = int.from_bytes(data[pos:end], "big") & mask
        return (value != 0 if width == 1 else value), end

    return read


def _date(data: bytes, pos: int) -> tuple[str | None, int]:
    """Zero dates and dates with a zero part are null; an impossible date (ALLOW_INVALID_DATES)
    raises ValueError, as the library does."""
    stored = int.from_bytes(data[pos : pos + 3], "little")
    year, month, day = stored >> 9, (stored >> 5) & 0xF, stored & 0x1F
    if not (year and month and day):
        return None, pos + 3
    return date(year, month, day).isoformat(), pos + 3


def _fraction(fsp: int) -> tuple[int, int, int]:
    """(bytes, divisor, scale) of a DATETIME2 or TIMESTAMP2 fraction: microseconds are
    stored // divisor * scale (an odd precision stores one digit more, which the library drops).
    Readers refuse a fraction past 999999: the library would fail on it, or read it signed."""
    return (fsp + 1) // 2, 10 if fsp % 2 else 1, 10 ** (6 - fsp)


def _datetime(fsp: int) -> Reader:
    """Naive ISO-8601; a zero or invalid date is null, as the library makes it."""
    fraction_bytes, divisor, scale = _fraction(fsp)
    size, shift, fraction_mask = 5 + fraction_bytes, 8 * fraction_bytes, (1 << 8 * fraction_bytes) - 1

    def read(data: bytes, pos: int) -> tuple[str | None, int]:
        end = pos + size
        stored = int.from_bytes(data[pos:end], "big")
        micro = (stored & fraction_mask) // divisor * scale
        if micro > 999_999:
            raise ValueError(f"DATETIME fraction {micro} out of range")
        packed = stored >> shift
        year_month = (packed >> 22) & 0x1FFFF
        try:
            value = datetime(
                year_month // 13, year_month % 13, (packed >> 17) & 0x1F, (packed >> 12) & 0x1F,
                (packed >> 6) & 0x3F, packed & 0x3F, micro,
            )  # fmt: skip
        except ValueError:
            return None, end
        return value.isoformat(), end

    return read


def _timestamp(fsp: int) -> Reader:
    """ISO-8601 UTC with "Z", as `values.iso_timestamp` formats the library's datetime; the zero
    timestamp is null. Seconds past 2^31 (MariaDB 11.5+ stores TIMESTAMPs up to 2106) are
    refused: the library reads them signed."""
    fraction_bytes, divisor, scale = _fraction(fsp)
    size, shift, fraction_mask = 4 + fraction_bytes, 8 * fraction_bytes, (1 << 8 * fraction_bytes) - 1

    def read(data: bytes, pos: int) -> tuple[str | None, int]:
        end = pos + size
        stored = int.from_bytes(data[pos:end], "big")
        seconds, micro = stored >> shift, (stored & fraction_mask) // divisor * scale
        if seconds >= 1 << 31 or micro > 999_999:
            raise ValueError(f"TIMESTAMP {seconds}.{micro} out of range")
        if not (seconds or micro):
            return None, end
        minute, second = divmod(seconds, 60)
        text = _utc_minute(minute) + _TWO_DIGITS[second]
        return (f"{text}.{micro:06d}Z" if micro else text + "Z"), end

    return read


@lru_cache(maxsize=4096)
def _utc_minute(minutes: int) -> str:
    """ "YYYY-MM-DDTHH:MM:" of the minute `minutes` after the epoch. The TIMESTAMPs of a stream
    of changes fall into few minutes (most are about now), and building and formatting a
    datetime for each one cost several times the rest of the value."""
    return (_EPOCH + timedelta(minutes=minutes)).isoformat()[:17]


def _time(fsp: int) -> Reader:
    """TIME as [-]HH:MM:SS[.ffffff], decoded as the server decodes it
    (`my_time_packed_from_binary`), which is what `values.time_text` makes of the library's value."""
    fraction_size = (fsp + 1) // 2
    size = 3 + fraction_size
    reversed_at = 1 << (8 * fraction_size)  # a negative value's fraction is stored as this minus it
    scale: int = 10 ** (6 - 2 * fraction_size)  # microseconds per stored unit (1/100, 1/10000 or 1e-6 s)

    def read(data: bytes, pos: int) -> tuple[str, int]:
        whole = int.from_bytes(data[pos : pos + 3], "big") - _TIME_OFFSET
        fraction = int.from_bytes(data[pos + 3 : pos + size], "big")
        if whole < 0 and fraction:
            whole += 1
            fraction -= reversed_at
        packed = (whole << 24) + fraction * scale
        negative = packed < 0
        magnitude = -packed if negative else packed
        fields, micro = magnitude >> 24, magnitude & 0xFFFFFF
        seconds = ((fields >> 12) & 0x3FF) * 3600 + ((fields >> 6) & 0x3F) * 60 + (fields & 0x3F)
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        text = f"{'-' if negative else ''}{hours:02d}:{minutes:02d}:{secs:02d}"
        return (f"{text}.{micro:06d}" if micro else text), pos + size

    return read
