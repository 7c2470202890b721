"""ChangeEvent: one committed row change, the unit every source emits and every sink writes.

Identity is derived from the source position, never from the clock: a change replayed after a
restart carries the same `event_id` (a UUIDv8 of the transaction's commit position and the change's
index in it), so consumers can drop duplicates.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

Row = dict[str, Any]


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # a row read by a snapshot
    TRUNCATE = "t"


class _Unchanged:
    """A value the source did not send because it did not change (a TOASTed PostgreSQL column).

    Never a null: null is a real value, and a consumer must keep the value it already has.
    """

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

# Hashed in front of every event id's name (a fixed random UUID of this project), so our ids never
# coincide with another system's hashes of the same text.
_EVENT_NAMESPACE: Final = uuid.UUID("3f7d7c52-4f0e-4d57-9a55-0b8a3f3f5d1e").bytes
_INDEX_BITS: Final = 42  # changes per transaction an id can number: over four trillion
_LOW_48: Final = (1 << 48) - 1


def event_id(source_id: str, commit_position: str, index: int) -> str:
    """Deterministic id of the `index`-th change of the transaction committed at `commit_position`."""
    return event_ids(source_id, commit_position)(index)


def event_ids(source_id: str, commit_position: str) -> Callable[[int], str]:
    """`event_id` for every index of one transaction: a UUIDv8 (RFC 9562) made of 80 bits of
    SHA-1(namespace, "source_id|commit_position") and the 42-bit index.

    One hash per transaction and string formatting per event: a hash per event (UUIDv5) cost
    about a tenth of a worker's CPU. Two transactions share an id prefix only on an 80-bit hash
    collision; the index makes ids of one transaction distinct by construction.
    """
    digest = hashlib.sha1(_EVENT_NAMESPACE + f"{source_id}|{commit_position}".encode()).digest()
    hashed = int.from_bytes(digest[:10])
    base = (
        (hashed >> 32) << 80  # 48 bits
        | 0x8 << 76  # version 8
        | ((hashed >> 20) & 0xFFF) << 64  # 12 bits
        | 0b10 << 62  # the RFC 9562 variant
        | (hashed & 0xFFFFF) << _INDEX_BITS  # 20 bits; the index fills the 42 below
    )
    text = f"{base:032x}"
    prefix = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-"
    tail = base & _LOW_48
    limit = 1 << _INDEX_BITS

    def for_index(index: int) -> str:
        if not 0 <= index < limit:
            raise ValueError(f"event index {index} is outside 0..2^{_INDEX_BITS}-1")
        return f"{prefix}{tail | index:012x}"

    return for_index


@dataclass(slots=True)
class SourceInfo:
    """Where a change comes from, in the terms of the source database."""

    connector: str  # "postgres" | "mysql"
    name: str  # the source id: stable per pipeline and source database
    db: str
    schema: str
    table: str
    position: str  # commit position: a PostgreSQL LSN "0/16B6C50", a GTID, or "file:pos"
    commit_ts_us: int | None  # commit time, microseconds since the Unix epoch (UTC)
    txid: str | None


@dataclass(slots=True)
class ChangeEvent:
    """One row change. `index` orders the change inside its transaction; `last_in_tx` marks the end."""

    op: Op
    source: SourceInfo
    before: Row | None
    after: Row | None
    key: Row | None
    index: int
    last_in_tx: bool
    event_id: str
    lsn: int = 0  # PostgreSQL: the commit's end LSN, which the slot is confirmed up to
    size: int = 0  # approximate bytes as received from the source, for batch limits

    @property
    def table_path(self) -> str:
        return f"{self.source.schema}.{self.source.table}"


@dataclass(slots=True)
class Progress:
    """The source moved to `position` with no row change for us (heartbeat, filtered transaction).

    Flows through the pipeline like an event so the position is acknowledged in order.
    """

    position: str
    lsn: int = 0


@dataclass(slots=True, frozen=True)
class Checkpoint:
    """Delivered up to the `index`-th change of the transaction committed at `position`.

    `index` is -1 when the whole transaction (or a Progress marker) was delivered. A source resumes
    after it: a replayed transaction skips the changes at or below the checkpoint's index.
    """

    position: str
    index: int = -1
    lsn: int = 0

    @property
    def complete(self) -> bool:
        return self.index < 0
