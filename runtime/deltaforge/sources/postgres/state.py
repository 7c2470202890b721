"""What the PostgreSQL source tracks while it streams: the tables its Relation messages
described, and the transaction being read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deltaforge.events import ChangeEvent, Row, SourceInfo


@dataclass
class Table:
    relation_id: int
    schema: str
    name: str
    columns: list[str]
    converters: list[Callable[[bytes], Any]]
    key_positions: list[int]
    wanted: bool
    key_columns: list[str] = field(init=False)
    path: str = field(init=False)  # "schema.table", the metrics label

    def __post_init__(self) -> None:
        self.key_columns = [self.columns[index] for index in self.key_positions]
        self.path = f"{self.schema}.{self.name}"

    def key_of(self, row: Row | None) -> Row | None:
        """The replica identity columns of `row`: the default Kafka key."""
        if row is None or not self.key_columns:
            return None
        if len(self.key_columns) == 1:  # the common case, without a comprehension's frame
            name = self.key_columns[0]
            return {name: row.get(name)}
        return {name: row.get(name) for name in self.key_columns}


@dataclass
class OpenTransaction:
    position: str
    commit_ts_us: int
    xid: str
    skip_through: int  # indexes at or below were delivered before a restart
    event_ids: Callable[[int], str]
    index: int = 0
    held: ChangeEvent | None = None  # the newest event, sent once we know whether it is the last
    infos: dict[int, SourceInfo] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
