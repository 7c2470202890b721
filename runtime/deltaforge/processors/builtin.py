"""The built-in processors. Each changes or drops one event at a time; none keeps state.

They run between batching and the sinks, so their cost is paid per event: no regex or
allocation beyond what the rule needs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection

from deltaforge.events import UNCHANGED, ChangeEvent, Op, Row
from deltaforge.sources.patterns import TablePatterns

REDACTED = "***"


class FilterProcessor:
    """Keeps the events whose op and table match; counted as drops otherwise."""

    def __init__(self, name: str, *, ops: Collection[Op] | None, tables: TablePatterns | None) -> None:
        self.name = name
        self._ops = frozenset(ops) if ops else None
        self._tables = tables

    def apply(self, event: ChangeEvent) -> ChangeEvent | None:
        if self._ops is not None and event.op not in self._ops:
            return None
        if self._tables is not None and not self._tables.matches(event.source.schema, event.source.table):
            return None
        return event


class SelectProcessor:
    """Keeps (`include`) or drops (`exclude`) columns of the matching tables, in before, after and key."""

    def __init__(
        self,
        name: str,
        *,
        tables: TablePatterns | None,
        include: Collection[str] | None,
        exclude: Collection[str] | None,
    ) -> None:
        self.name = name
        self._tables = tables
        self._include = frozenset(include) if include is not None else None
        self._exclude = frozenset(exclude or ())

    def _columns(self, row: Row | None) -> Row | None:
        if row is None:
            return None
        if self._include is not None:
            return {column: value for column, value in row.items() if column in self._include}
        return {column: value for column, value in row.items() if column not in self._exclude}

    def apply(self, event: ChangeEvent) -> ChangeEvent | None:
        if self._tables is not None and not self._tables.matches(event.source.schema, event.source.table):
            return event
        event.before, event.after = self._columns(event.before), self._columns(event.after)
        return event


class MaskProcessor:
    """Replaces column values by a keyed hash (joinable, not reversible) or a fixed redaction.

    Key columns are masked too (in `key`), so a masked value never leaks through the Kafka key.
    """

    def __init__(
        self,
        name: str,
        *,
        tables: TablePatterns | None,
        columns: Collection[str],
        method: str,
        salt: str = "",
    ) -> None:
        if method not in ("hash", "redact"):
            raise ValueError(f"mask method {method!r}: use hash or redact")
        self.name = name
        self._tables, self._columns, self._method = tables, frozenset(columns), method
        self._salt = salt.encode()

    def _mask(self, value: object) -> object:
        if value is None or value is UNCHANGED:
            return value
        if self._method == "redact":
            return REDACTED
        return hmac.new(self._salt, str(value).encode(), hashlib.sha256).hexdigest()

    def _row(self, row: Row | None) -> Row | None:
        if row is None:
            return None
        return {
            column: self._mask(value) if column in self._columns else value for column, value in row.items()
        }

    def apply(self, event: ChangeEvent) -> ChangeEvent | None:
        if self._tables is not None and not self._tables.matches(event.source.schema, event.source.table):
            return event
        event.before, event.after, event.key = (
            self._row(event.before),
            self._row(event.after),
            self._row(event.key),
        )
        return event
