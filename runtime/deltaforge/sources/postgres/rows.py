"""The Insert fast path: a pgoutput TupleData read straight into a typed row dict.

Inserts are most of a change stream, and the general route (`pgoutput.decode` to an `Insert` with
a tuple of raw values, then `values.convert_row`) builds two intermediate objects and walks the
columns twice. This walks them once. It declines (returns None) anything unusual, a binary value
or a column count that does not match the relation, and the caller then takes the general route,
which reports such messages precisely.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from deltaforge.events import UNCHANGED
from deltaforge.sources.postgres.values import Converter

_U16: Final = struct.Struct(">H")
_I32: Final = struct.Struct(">i")
_TEXT: Final = ord("t")
_NULL: Final = ord("n")
_TOAST: Final = ord("u")


def text_row(
    buf: bytes, pos: int, columns: Sequence[str], converters: Sequence[Converter]
) -> dict[str, Any] | None:
    """The TupleData at `pos` as {column: typed value}, or None to leave it to the general route."""
    (count,) = _U16.unpack_from(buf, pos)
    if count != len(columns):
        return None
    pos += 2
    unpack_length = _I32.unpack_from
    row: dict[str, Any] = {}
    for name, convert in zip(columns, converters, strict=True):
        kind = buf[pos]
        if kind == _TEXT:
            (length,) = unpack_length(buf, pos + 1)
            pos += 5
            row[name] = convert(buf[pos : pos + length])
            pos += length
        elif kind == _NULL:
            row[name] = None
            pos += 1
        elif kind == _TOAST:
            row[name] = UNCHANGED
            pos += 1
        else:
            return None
    return row
