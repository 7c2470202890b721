"""XADD commands packed in the Redis protocol (RESP) directly, for a batch at a time.

redis-py packs a command by encoding and length-prefixing every argument in Python; with five
fields per entry that was a quarter of the worker's CPU (`bench run pg-redis --profile sample`).
Here the parts that repeat are packed once: the stream, MAXLEN and the table and position fields
are shared by a run of events of one table and transaction, and the field names never change,
so each event costs one formatting of its id, op and data. The output is byte for byte what
redis-py's `xadd(stream, fields, id=..., maxlen=..., approximate=True)` sends
(tests/unit/test_xadd.py compares them).
"""

from __future__ import annotations

from typing import Final

from deltaforge.events import ChangeEvent, Op

ANY_ID: Final = "*"  # the server assigns the entry id
_OPS: Final = {op: b"$2\r\nop\r\n$%d\r\n%b\r\n" % (len(op.value), op.value.encode()) for op in Op}


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


class XaddPacker:
    """The RESP bytes of one XADD per event, with fields event_id, op, table, position and data."""

    def __init__(self, max_len: int | None) -> None:
        # XADD, stream, [MAXLEN ~ n], id, and five field/value pairs
        self._count = b"*%d\r\n$4\r\nXADD\r\n" % (2 + (3 if max_len is not None else 0) + 1 + 10)
        self._trim = b"" if max_len is None else b"$6\r\nMAXLEN\r\n$1\r\n~\r\n" + bulk(str(max_len).encode())
        self._last: tuple[object, str] | None = None
        self._head, self._middle = b"", b""

    def pack(self, event: ChangeEvent, stream: str, entry_id: str, data: bytes) -> bytes:
        source = event.source
        if self._last is None or self._last[0] is not source or self._last[1] != stream:
            self._head = self._count + bulk(stream.encode()) + self._trim
            self._middle = (
                b"$5\r\ntable\r\n"
                + bulk(event.table_path.encode())
                + b"$8\r\nposition\r\n"
                + bulk(source.position.encode())
                + b"$4\r\ndata\r\n"
            )
            self._last = (source, stream)
        entry, event_id = entry_id.encode(), event.event_id.encode()
        return b"%b$%d\r\n%b\r\n$8\r\nevent_id\r\n$%d\r\n%b\r\n%b%b$%d\r\n%b\r\n" % (
            self._head, len(entry), entry, len(event_id), event_id,
            _OPS[event.op], self._middle, len(data), data,
        )  # fmt: skip
