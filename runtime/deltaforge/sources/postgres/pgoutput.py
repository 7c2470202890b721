"""Decoder of pgoutput, PostgreSQL's built-in logical replication output plugin (protocol 1 and 2).

We decode in-process instead of using a client library because the source's throughput is bound
by this code: every row change of the database passes through it. Hence the shape:

- one precompiled `struct.Struct` per fixed layout, read with `unpack_from` at an offset, so the
  message is never sliced except for the column values themselves;
- column values stay raw `bytes` (text format) here; turning them into typed values is the job
  of `values.converter_for`, chosen once per column when a Relation arrives, not once per row;
- timestamps are returned as microseconds since the Unix epoch (pgoutput counts from 2000-01-01).

Protocol 2 adds streaming of large in-progress transactions: between Stream Start and Stream
Stop, Relation, Type, Insert, Update, Delete, Truncate and Message carry the transaction id after
the type byte. That framing cannot be recognised from the message itself, so the caller says
whether a stream is open (`decode(..., in_stream=True)`) or lets `PgOutputDecoder` track it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from deltaforge.events import UNCHANGED
from deltaforge.sources.postgres.messages import (
    Begin,
    BinaryValue,
    Change,
    Column,
    Commit,
    Control,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    PgOutputError,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TupleValue,
    TupleValues,
    Type,
    Update,
)

# Microseconds from the Unix epoch to 2000-01-01 00:00:00 UTC, PostgreSQL's epoch.
PG_EPOCH_OFFSET_US: Final = 946_684_800_000_000

# The message types are part of this module's interface: callers write `pgoutput.Insert`.
__all__ = [
    "PG_EPOCH_OFFSET_US",
    "Begin",
    "BinaryValue",
    "Change",
    "Column",
    "Commit",
    "Control",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "PgOutputDecoder",
    "PgOutputError",
    "Relation",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleValue",
    "TupleValues",
    "Type",
    "Update",
    "decode",
]


_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U32_U32: Final = struct.Struct(">II")
_I32: Final = struct.Struct(">i")
_U64: Final = struct.Struct(">Q")
_BEGIN: Final = struct.Struct(">QqI")
_COMMIT: Final = struct.Struct(">BQQq")
_COLUMN_TYPE: Final = struct.Struct(">Ii")
_MESSAGE_HEAD: Final = struct.Struct(">BQ")
_STREAM_START: Final = struct.Struct(">IB")
_STREAM_COMMIT: Final = struct.Struct(">IBQQq")

_TEXT: Final = ord("t")
_NULL: Final = ord("n")
_TOAST: Final = ord("u")
_BINARY: Final = ord("b")
_NEW: Final = ord("N")
_KEY: Final = ord("K")
_OLD: Final = ord("O")


def _tuple_data(buf: bytes, pos: int) -> tuple[TupleValues, int]:
    """TupleData at `pos`: the column values and the offset after them."""
    (count,) = _U16.unpack_from(buf, pos)
    pos += 2
    unpack_length = _I32.unpack_from
    values: list[TupleValue] = []
    append = values.append
    for _ in range(count):
        kind = buf[pos]
        if kind == _TEXT:
            (length,) = unpack_length(buf, pos + 1)
            pos += 5
            append(buf[pos : pos + length])
            pos += length
        elif kind == _NULL:
            append(None)
            pos += 1
        elif kind == _TOAST:
            append(UNCHANGED)
            pos += 1
        elif kind == _BINARY:
            (length,) = unpack_length(buf, pos + 1)
            pos += 5
            append(BinaryValue(buf[pos : pos + length]))
            pos += length
        else:
            raise PgOutputError(f"unknown TupleData column kind {chr(kind)!r} at offset {pos}")
    if pos > len(buf):
        raise PgOutputError("TupleData runs past the end of the message")
    return tuple(values), pos


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated string at `pos` and the offset after its terminator."""
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _begin(buf: bytes, pos: int, _: int | None) -> Begin:
    final_lsn, commit_ts, xid = _BEGIN.unpack_from(buf, pos)
    return Begin(final_lsn, commit_ts + PG_EPOCH_OFFSET_US, xid)


def _commit(buf: bytes, pos: int, _: int | None) -> Commit:
    flags, commit_lsn, end_lsn, commit_ts = _COMMIT.unpack_from(buf, pos)
    return Commit(flags, commit_lsn, end_lsn, commit_ts + PG_EPOCH_OFFSET_US)


def _origin(buf: bytes, pos: int, _: int | None) -> Origin:
    # Sent after Begin or Stream Start, never with a transaction id of its own.
    (commit_lsn,) = _U64.unpack_from(buf, pos)
    return Origin(commit_lsn, _string(buf, pos + 8)[0])


def _relation(buf: bytes, pos: int, xid: int | None) -> Relation:
    (relation_id,) = _U32.unpack_from(buf, pos)
    namespace, pos = _string(buf, pos + 4)
    name, pos = _string(buf, pos)
    replica_identity = chr(buf[pos])
    (count,) = _U16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        column_name, pos = _string(buf, pos + 1)
        type_oid, type_modifier = _COLUMN_TYPE.unpack_from(buf, pos)
        pos += 8
        columns.append(Column(flags, column_name, type_oid, type_modifier))
    return Relation(xid, relation_id, namespace, name, replica_identity, tuple(columns))


def _type(buf: bytes, pos: int, xid: int | None) -> Type:
    (type_oid,) = _U32.unpack_from(buf, pos)
    namespace, pos = _string(buf, pos + 4)
    name, _ = _string(buf, pos)
    return Type(xid, type_oid, namespace, name)


def _insert(buf: bytes, pos: int, xid: int | None) -> Insert:
    (relation_id,) = _U32.unpack_from(buf, pos)
    if buf[pos + 4] != _NEW:
        raise PgOutputError(f"Insert: expected a new tuple 'N', got {chr(buf[pos + 4])!r}")
    new, _ = _tuple_data(buf, pos + 5)
    return Insert(xid, relation_id, new)


def _update(buf: bytes, pos: int, xid: int | None) -> Update:
    (relation_id,) = _U32.unpack_from(buf, pos)
    pos += 4
    kind = buf[pos]
    old: TupleValues | None = None
    if kind in (_KEY, _OLD):
        old, pos = _tuple_data(buf, pos + 1)
        if buf[pos] != _NEW:
            raise PgOutputError(f"Update: expected a new tuple 'N', got {chr(buf[pos])!r}")
    elif kind != _NEW:
        raise PgOutputError(f"Update: expected a tuple 'K', 'O' or 'N', got {chr(kind)!r}")
    new, _ = _tuple_data(buf, pos + 1)
    return Update(xid, relation_id, old, kind == _KEY, new)


def _delete(buf: bytes, pos: int, xid: int | None) -> Delete:
    (relation_id,) = _U32.unpack_from(buf, pos)
    kind = buf[pos + 4]
    if kind not in (_KEY, _OLD):
        raise PgOutputError(f"Delete: expected an old tuple 'K' or 'O', got {chr(kind)!r}")
    old, _ = _tuple_data(buf, pos + 5)
    return Delete(xid, relation_id, old, kind == _KEY)


def _truncate(buf: bytes, pos: int, xid: int | None) -> Truncate:
    (count,) = _U32.unpack_from(buf, pos)
    options = buf[pos + 4]
    relation_ids = struct.unpack_from(f">{count}I", buf, pos + 5)
    return Truncate(xid, relation_ids, bool(options & 1), bool(options & 2))


def _message(buf: bytes, pos: int, xid: int | None) -> LogicalMessage:
    flags, lsn = _MESSAGE_HEAD.unpack_from(buf, pos)
    prefix, pos = _string(buf, pos + 9)
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    if pos + length > len(buf):
        raise PgOutputError("Message: content runs past the end of the message")
    return LogicalMessage(xid, bool(flags & 1), lsn, prefix, buf[pos : pos + length])


def _stream_start(buf: bytes, pos: int, _: int | None) -> StreamStart:
    xid, first_segment = _STREAM_START.unpack_from(buf, pos)
    return StreamStart(xid, first_segment == 1)


def _stream_stop(buf: bytes, pos: int, _: int | None) -> StreamStop:
    return StreamStop()


def _stream_commit(buf: bytes, pos: int, _: int | None) -> StreamCommit:
    xid, flags, commit_lsn, end_lsn, commit_ts = _STREAM_COMMIT.unpack_from(buf, pos)
    return StreamCommit(xid, flags, commit_lsn, end_lsn, commit_ts + PG_EPOCH_OFFSET_US)


def _stream_abort(buf: bytes, pos: int, _: int | None) -> StreamAbort:
    xid, subxid = _U32_U32.unpack_from(buf, pos)
    return StreamAbort(xid, subxid)


_DECODERS: Final[dict[int, Callable[[bytes, int, int | None], Message]]] = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
    ord("S"): _stream_start,
    ord("E"): _stream_stop,
    ord("c"): _stream_commit,
    ord("A"): _stream_abort,
}


# Messages that carry the transaction id after their type byte inside a stream (protocol 2).
_STREAMED: Final = frozenset(b"RYIUDTM")


def decode(message: bytes | memoryview, *, in_stream: bool = False) -> Message:
    """Decode one pgoutput message (the payload of an XLogData frame, without its 25-byte header).

    `in_stream` must be true between Stream Start and Stream Stop (protocol 2); the function is
    stateless so that a caller which already tracks transactions pays nothing for it. A
    memoryview is copied once, so the values returned are independent `bytes`.
    """
    buf = message if isinstance(message, bytes) else bytes(message)
    if not buf:
        raise PgOutputError("empty pgoutput message")
    kind = buf[0]
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise PgOutputError(
            f"unknown pgoutput message type {chr(kind)!r}: protocol versions 1 and 2 are supported"
        )
    try:
        if in_stream and kind in _STREAMED:
            return decoder(buf, 5, _U32.unpack_from(buf, 1)[0])
        return decoder(buf, 1, None)
    except PgOutputError:
        raise
    except (struct.error, IndexError, ValueError) as error:  # ValueError: no NUL, or bad UTF-8
        raise PgOutputError(f"malformed pgoutput message {chr(buf[0])!r}: {error}") from error


class PgOutputDecoder:
    """`decode` with the stream state kept for the caller: it opens at Stream Start, closes at Stop.

    One instance per replication connection; it is reset by creating a new one on reconnect,
    because a restarted stream never resumes inside a segment.
    """

    __slots__ = ("in_stream",)

    def __init__(self) -> None:
        self.in_stream = False

    def decode(self, message: bytes | memoryview) -> Message:
        decoded = decode(message, in_stream=self.in_stream)
        if decoded.__class__ is StreamStart:
            self.in_stream = True
        elif decoded.__class__ is StreamStop:
            self.in_stream = False
        return decoded
