"""What the binlog reader holds between its thread and the event loop: a bound in binlog bytes, and
translated events freed at once rather than by the cyclic garbage collector."""

from __future__ import annotations

import gc
import queue
import weakref

import pytest

from deltaforge.events import Op
from deltaforge.sources.mysql.catalog import TableShape
from deltaforge.sources.mysql.reader import RECORD_BYTES, _RecordQueue, _release
from deltaforge.sources.mysql.records import Begin, Commit, Rows

ORDERS = TableShape("shop", "orders", ["id"], [lambda v: v], ["id"], frozenset())


def _rows(count: int, size: int) -> Rows:
    return Rows(ORDERS, Op.CREATE, [(None, {"id": n}) for n in range(count)], size)


def test_the_queue_is_bounded_by_binlog_bytes_not_by_records() -> None:
    records = _RecordQueue(maxsize=1000)
    records.put_nowait(_rows(200, 4))  # one event of 200 narrow rows: 800 bytes
    records.put_nowait(_rows(1, 300))  # a record may take the queue past its bound...
    with pytest.raises(queue.Full):  # ...after which nothing more goes in
        records.put_nowait(Begin(None, "binlog.000001", 4, 0))
    first = records.get_nowait()
    assert isinstance(first, Rows)
    assert len(first.rows) == 200
    for _ in range(3):  # small records count for a few bytes each
        records.put_nowait(Commit(None, "binlog.000001", 100, 0))
    assert records.bytes == 300 + 3 * RECORD_BYTES
    while not records.empty():
        records.get_nowait()
    assert records.bytes == 0


class _Packet:
    """mysql-replication's packet wrapper and its event refer to each other, as here."""

    def __init__(self) -> None:
        self.event = _Event(self)


class _Event:
    def __init__(self, packet: _Packet) -> None:
        self.packet = packet


def test_a_translated_event_is_freed_without_the_cyclic_collector() -> None:
    gc.disable()
    try:
        kept, released = _Packet().event, _Packet().event
        kept_ref, released_ref = weakref.ref(kept), weakref.ref(released)
        _release(released)
        del kept, released
        assert released_ref() is None
        assert kept_ref() is not None, "the cycle keeps an unreleased event alive until a collection"
    finally:
        gc.enable()
        gc.collect()
