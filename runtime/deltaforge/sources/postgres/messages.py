"""The messages of pgoutput as typed values: what `pgoutput.decode` returns.

Kept apart from the decoder so that each module stays about one thing; import them through
`pgoutput` (`pgoutput.Insert`), which re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from deltaforge.events import _Unchanged


class PgOutputError(ValueError):
    """A message pgoutput cannot have produced with the protocol we asked for: never skip it."""


@dataclass(slots=True)
class BinaryValue:
    """A column value in binary format, sent only when the subscription asked for `binary 'true'`.

    Kept apart from text values (plain `bytes`) so a binary value is never parsed as text.
    """

    data: bytes


# A column of a tuple: text (`bytes`), an unchanged TOASTed value, binary, or SQL NULL (`None`).
TupleValue: TypeAlias = bytes | _Unchanged | BinaryValue | None
TupleValues: TypeAlias = tuple[TupleValue, ...]


@dataclass(slots=True)
class Begin:
    final_lsn: int  # the LSN of the commit record
    commit_ts_us: int
    xid: int


@dataclass(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the position to confirm once the transaction is durable downstream
    commit_ts_us: int


@dataclass(slots=True)
class Origin:
    """The replication origin a transaction was replayed from (set by another replica's apply)."""

    commit_lsn: int  # the commit LSN on the origin server
    name: str


@dataclass(slots=True)
class Column:
    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        """Part of the replica identity: every column under REPLICA IDENTITY FULL."""
        return bool(self.flags & 1)


@dataclass(slots=True)
class Relation:
    """A table's shape, sent before its first change and again after any schema change."""

    xid: int | None
    relation_id: int
    namespace: str  # empty for pg_catalog
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(slots=True)
class Type:
    """The name of a non-builtin column type (an enum, a domain, an extension type like citext)."""

    xid: int | None
    type_oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Insert:
    xid: int | None
    relation_id: int
    new: TupleValues


@dataclass(slots=True)
class Update:
    """`old` is the old key ('K', other columns NULL) or the whole old row ('O', REPLICA IDENTITY FULL).

    It is absent when the identity is DEFAULT or INDEX and the key did not change.
    """

    xid: int | None
    relation_id: int
    old: TupleValues | None
    old_is_key: bool
    new: TupleValues


@dataclass(slots=True)
class Delete:
    xid: int | None
    relation_id: int
    old: TupleValues
    old_is_key: bool


@dataclass(slots=True)
class Truncate:
    xid: int | None
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(slots=True)
class LogicalMessage:
    """A `pg_logical_emit_message` record: our heartbeats, or another tool's markers."""

    xid: int | None
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@dataclass(slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(slots=True)
class StreamStop:
    pass


@dataclass(slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts_us: int


@dataclass(slots=True)
class StreamAbort:
    """A streamed transaction (`subxid == xid`) or one of its subtransactions rolled back."""

    xid: int
    subxid: int


# Transaction framing (protocol 1), then the streaming of in-progress transactions (protocol 2).
Control: TypeAlias = Begin | Commit | Origin | StreamStart | StreamStop | StreamCommit | StreamAbort
Change: TypeAlias = Insert | Update | Delete | Truncate
Message: TypeAlias = Control | Change | Relation | Type | LogicalMessage
