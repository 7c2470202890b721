"""Table patterns (`public.orders`, `public.order_*`, `*.audit`) and their compiled matcher.

The shape is checked when the manifest loads: a bare `orders` (no schema) or a stray space
would otherwise silently capture nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator

from deltaforge.spec.base import schema_pattern

_PART = re.compile(r"[A-Za-z0-9_$*-]+")


def check_table_pattern(text: str) -> str:
    """Return `text` unchanged if it is `schema.table`, where either part may use `*` globs."""
    schema, dot, table = text.partition(".")
    if not (dot and _PART.fullmatch(schema) and _PART.fullmatch(table)):
        raise ValueError(
            f"{text!r} is not a table pattern; write schema.table (database.table for MySQL) "
            "using letters, digits, '_', '$', '-' and '*' globs, e.g. public.orders, "
            "public.order_* or inventory.*"
        )
    return text


TablePattern = Annotated[
    str, AfterValidator(check_table_pattern), schema_pattern(rf"{_PART.pattern}\.{_PART.pattern}")
]
"""`schema.table` (MySQL: `database.table`); `*` matches any run of characters in either part."""


class TableMatcher:
    """Whether a table is selected by any of a list of patterns, compiled into one regex.

    Schema and table are joined with NUL, a character no identifier contains, so a quoted
    table name with a dot in it cannot match across the boundary.
    """

    __slots__ = ("_regex",)

    def __init__(self, patterns: Iterable[str]) -> None:
        alternatives = [_pattern_regex(check_table_pattern(pattern)) for pattern in patterns]
        self._regex = re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, schema: str, table: str) -> bool:
        return self._regex is not None and self._regex.fullmatch(f"{schema}\0{table}") is not None


def _pattern_regex(pattern: str) -> str:
    schema, _, table = pattern.partition(".")
    return rf"(?:{_glob(schema)}\x00{_glob(table)})"


def _glob(part: str) -> str:
    return r"[^\x00]*".join(re.escape(piece) for piece in part.split("*"))
