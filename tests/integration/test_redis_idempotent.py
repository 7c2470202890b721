"""Redis in idempotent mode: entry ids come from positions, so a replayed batch adds nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from deltaforge.assembly import postgres_entry_id
from deltaforge.envelopes import encoder_for
from deltaforge.events import ChangeEvent, Checkpoint, Op, SourceInfo, event_ids
from deltaforge.sinks.redis import RedisSink
from tests.fixtures.data_stack import RedisNamespace


class _NoFailures:
    def sink_failure(self, sink: str, kind: object) -> None:
        raise AssertionError(f"sink {sink} failed ({kind})")


def _transaction(position: str, rows: int) -> list[ChangeEvent]:
    info = SourceInfo("postgres", "pg:shop:slot", "shop", "public", "orders", position, 0, "7")
    ids = event_ids(info.name, position)
    return [
        ChangeEvent(Op.CREATE, info, None, {"id": n}, {"id": n}, n, n == rows - 1, ids(n), 0, 10)
        for n in range(rows)
    ]


def test_a_replayed_batch_is_refused_by_redis_and_new_changes_are_added(
    redis_namespace: RedisNamespace,
) -> None:
    stream = redis_namespace.key("orders")
    sink = RedisSink(
        "cache", required=True, url=redis_namespace.url, stream_for=lambda _: stream,
        encode=encoder_for("native", "p"), failures=_NoFailures(), entry_id=postgres_entry_id(),
    )  # fmt: skip
    first = _transaction("0/100", 3)
    second = _transaction("0/200", 2)

    async def scenario() -> None:
        await sink.start()
        try:
            await sink.write(first, Checkpoint("0/100", -1, 0x110))
            # A crash before the checkpoint: the first batch comes again, with the next one.
            await sink.write([*first, *second], Checkpoint("0/200", -1, 0x210))
        finally:
            await sink.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(redis_namespace.url, decode_responses=True)
    with client:
        entries: Any = client.xrange(stream)
    assert [entry_id for entry_id, _ in entries] == ["256-0", "256-1", "256-2", "512-0", "512-1"]
    assert [fields["event_id"] for _, fields in entries] == [event.event_id for event in [*first, *second]]
