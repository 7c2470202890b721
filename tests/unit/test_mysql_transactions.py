"""Assembling binlog records into ChangeEvents: indexes, positions, skips, progress and resume."""

from __future__ import annotations

from typing import Any

from deltaforge.events import ChangeEvent, Op, Progress, event_id
from deltaforge.protocols import Item
from deltaforge.sources.mysql.catalog import TableShape
from deltaforge.sources.mysql.position import SKIP_ALL, MariadbGtidState, ResumePoint, Skip
from deltaforge.sources.mysql.records import Begin, Commit, Heartbeat, Rows, Truncate
from deltaforge.sources.mysql.transactions import Assembler

SOURCE = "mysql:tests/orders"
ORDERS = TableShape("shop", "orders", ["id", "qty"], [lambda v: v, lambda v: v], ["id"], frozenset())


class Metrics:
    def __init__(self) -> None:
        self.events: dict[str, int] = {}
        self.lags: list[float] = []
        self.activity = 0

    def source_events(self, table: str, count: int = 1) -> None:
        self.events[table] = self.events.get(table, 0) + count

    def source_activity(self) -> None:
        self.activity += 1

    def source_reconnect(self) -> None:
        raise AssertionError("the assembler never reconnects")

    def set_source_lag(self, seconds: float) -> None:
        self.lags.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def assembler(skip: Skip | None = None, state: str = "0-1-9") -> tuple[Assembler, Metrics, Clock]:
    metrics, clock = Metrics(), Clock()
    made = Assembler(
        SOURCE,
        gtids=MariadbGtidState.parse(state),
        resume=ResumePoint(state, "bin.000001", 100),
        skip=skip,
        metrics=metrics,
        clock=clock,
    )
    return made, metrics, clock


def inserts(*ids: int) -> Rows:
    return Rows(ORDERS, Op.CREATE, [(None, {"id": i, "qty": i * 10}) for i in ids], size=40)


async def feed(made: Assembler, *records: Any) -> list[Item]:
    out: list[Item] = []

    async def emit(items: list[Item]) -> None:
        out.extend(items)

    for record in records:
        await made.feed(record, emit)
    return out


def transaction(gtid: str, start: int, *rows: Any) -> list[Any]:
    return [Begin(gtid, "bin.000001", start, 999), *rows, Commit(7, "bin.000001", start + 90, 999)]


async def test_a_transaction_becomes_ordered_events_with_one_position() -> None:
    made, metrics, _ = assembler()
    update = Rows(ORDERS, Op.UPDATE, [({"id": 1, "qty": 10}, {"id": 1, "qty": 11})], size=50)
    out = await feed(made, *transaction("0-1-10", 100, inserts(1, 2), update, Truncate("shop", "orders")))
    events = [item for item in out if isinstance(item, ChangeEvent)]
    assert [(e.op, e.index, e.last_in_tx) for e in events] == [
        (Op.CREATE, 0, False), (Op.CREATE, 1, False), (Op.UPDATE, 2, False), (Op.TRUNCATE, 3, True),
    ]  # fmt: skip
    position = "gtid=0-1-10;prior=0-1-9;binlog=bin.000001:100"
    assert {e.source.position for e in events} == {position}
    assert events[0].event_id == event_id(SOURCE, "0-1-10", 0)
    assert events[0].key == {"id": 1}
    assert events[2].before == {"id": 1, "qty": 10}
    assert events[3].key is None
    assert events[3].after is None
    assert events[0].source.commit_ts_us == 999_000_000
    assert metrics.events == {"shop.orders": 4}
    assert made.position == position


async def test_a_rows_record_is_handed_on_in_one_list() -> None:
    made, _, _ = assembler()
    calls: list[list[int]] = []

    async def emit(items: list[Item]) -> None:
        calls.append([item.index for item in items if isinstance(item, ChangeEvent)])

    for record in transaction("0-1-10", 100, inserts(1, 2, 3), inserts(4, 5)):
        await made.feed(record, emit)
    assert calls == [[0, 1], [2, 3], [4]], "all but the last of each record; the last at the commit"


async def test_the_next_transaction_records_the_gtid_state_before_it() -> None:
    made, _, _ = assembler()
    out = await feed(made, *transaction("0-1-10", 100, inserts(1)), *transaction("0-2-11", 200, inserts(2)))
    assert isinstance(out[1], ChangeEvent)
    assert out[1].source.position == "gtid=0-2-11;prior=0-1-10;binlog=bin.000001:200"


async def test_a_replayed_transaction_skips_what_was_delivered() -> None:
    made, _, _ = assembler(skip=Skip("0-1-10", 1))
    out = await feed(
        made, *transaction("0-1-10", 100, inserts(1, 2, 3, 4)), *transaction("0-1-11", 200, inserts(5))
    )
    assert [(e.index, e.after) for e in out if isinstance(e, ChangeEvent)] == [
        (2, {"id": 3, "qty": 30}),
        (3, {"id": 4, "qty": 40}),
        (0, {"id": 5, "qty": 50}),
    ]


async def test_a_transaction_skipped_whole_only_moves_the_position() -> None:
    made, _, _clock = assembler(skip=Skip("0-1-10", SKIP_ALL))
    out = await feed(made, *transaction("0-1-10", 100, inserts(1, 2)))
    assert out == [Progress("gtid=0-1-10;prior=0-1-9;binlog=bin.000001:100")]


async def test_uncaptured_transactions_are_checkpointed_at_most_once_a_second_and_when_idle() -> None:
    made, _, clock = assembler()
    first = await feed(made, *transaction("0-1-10", 100))
    assert first == [Progress("gtid=0-1-10;prior=0-1-9;binlog=bin.000001:100")]
    clock.now += 0.1
    assert await feed(made, *transaction("0-1-11", 200), *transaction("0-1-12", 300)) == []
    out: list[Item] = []

    async def emit(items: list[Item]) -> None:
        out.extend(items)

    await made.idle(emit)
    assert out == [Progress("gtid=0-1-12;prior=0-1-11;binlog=bin.000001:300")]
    clock.now += 2
    assert len(await feed(made, *transaction("0-1-13", 400))) == 1


async def test_a_lost_connection_resumes_without_replaying_what_was_emitted() -> None:
    made, _, _ = assembler()
    await feed(made, *transaction("0-1-10", 100, inserts(1)))
    assert made.resume_point() == (ResumePoint("0-1-10", "bin.000001", 190), None)
    # Inside a transaction: two events emitted, the third held back when the connection dropped.
    out = await feed(made, Begin("0-1-11", "bin.000001", 190, 999), inserts(2, 3, 4))
    assert [e.index for e in out if isinstance(e, ChangeEvent)] == [0, 1]
    point, skip = made.resume_point()
    assert (point, skip) == (ResumePoint("0-1-10", "bin.000001", 190), Skip("0-1-11", 1))
    again = await feed(made, *transaction("0-1-11", 190, inserts(2, 3, 4)))
    assert [(e.index, e.last_in_tx) for e in again if isinstance(e, ChangeEvent)] == [(2, True)]


async def test_heartbeats_mark_the_stream_alive_and_caught_up() -> None:
    made, metrics, _ = assembler()
    await feed(made, Heartbeat())
    assert metrics.activity == 1
    assert metrics.lags == [0.0]
