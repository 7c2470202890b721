"""ChangeEvent: one committed row change, the unit every source emits and every sink writes.

Identity is derived from the source position, never from the clock: a change replayed after a
restart carries the same `event_id`, so consumers can drop duplicates.
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

# UUIDv5 namespace for event ids (a fixed random UUID of this project).
_EVENT_NAMESPACE = uuid.UUID("3f7d7c52-4f0e-4d57-9a55-0b8a3f3f5d1e")


_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes


def event_id(source_id: str, commit_position: str, index: int) -> str:
    """Deterministic id of the `index`-th change of the transaction committed at `commit_position`.

    A UUIDv5, equal to `uuid.uuid5(namespace, name)`, built without `uuid.UUID` objects: this runs
    once per event and the object route costs several times more.
    """
    return event_ids(source_id, commit_position)(index)


def event_ids(source_id: str, commit_position: str) -> Callable[[int], str]:
    """`event_id` for every index of one transaction, hashing the shared prefix once."""
    prefix = hashlib.sha1(_NAMESPACE_BYTES + f"{source_id}|{commit_position}|".encode())

    def for_index(index: int) -> str:
        hashed = prefix.copy()
        hashed.update(str(index).encode())
        digest = bytearray(hashed.digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        text = digest.hex()
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

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
