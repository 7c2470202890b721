"""Table patterns such as `public.orders`, `public.order_*`, `shop.*`, shared by every source."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence


class TablePatterns:
    """Matches `schema.table` names against globs; case-sensitive, as identifiers are."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        self._regex = re.compile(
            "|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns) or "(?!)"
        )
        self._cache: dict[tuple[str, str], bool] = {}

    def matches(self, schema: str, table: str) -> bool:
        key = (schema, table)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._regex.fullmatch(f"{schema}.{table}") is not None
        return found

    def unmatched(self, tables: Iterable[tuple[str, str]]) -> list[str]:
        """The patterns that match none of `tables`: each is a likely typo worth an error."""
        names = [f"{schema}.{table}" for schema, table in tables]
        return [pattern for pattern in self.patterns if not fnmatch.filter(names, pattern)]
