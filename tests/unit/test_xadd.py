"""Our packed XADD is byte for byte the command redis-py would send for the same entry."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from deltaforge.events import ChangeEvent, Op, SourceInfo, event_id
from deltaforge.sinks.xadd import ANY_ID, XaddPacker


def _event(table: str, position: str, index: int, op: Op = Op.CREATE) -> ChangeEvent:
    info = SourceInfo(
        "postgres", "pg:shop:slot", "shop", "public", table, position, 1_764_000_000_000_000, "7"
    )
    return ChangeEvent(
        op, info, None, {"id": index}, {"id": index}, index, False, event_id(info.name, position, index)
    )


def _redis_py(stream: str, event: ChangeEvent, entry_id: str, data: bytes, max_len: int | None) -> bytes:
    args: list[object] = ["XADD", stream]
    if max_len is not None:
        args += ["MAXLEN", "~", max_len]
    args.append(entry_id)
    fields = {
        "event_id": event.event_id,
        "op": event.op.value,
        "table": event.table_path,
        "position": event.source.position,
        "data": data,
    }
    for name, value in fields.items():
        args += [name, value]
    return b"".join(Connection().pack_command(*args))  # type: ignore[arg-type]


@pytest.mark.parametrize("max_len", [None, 100_000])
def test_packed_commands_match_redis_py(max_len: int | None) -> None:
    packer = XaddPacker(max_len)
    cases = [
        ("cdc:orders", _event("orders", "0/16B6C50", 0), ANY_ID, b'{"id":0}'),
        ("cdc:orders", _event("orders", "0/16B6C50", 1, Op.UPDATE), ANY_ID, b'{"id":1}'),
        ("cdc:orders", _event("orders", "0/16B6D00", 0, Op.DELETE), "27-0", b""),  # a new transaction
        (
            "cdc:b\u00e4ckerei",
            _event("b\u00e4ckerei", "0/16B6D00", 1, Op.TRUNCATE),
            "27-1",
            "\u00e9t\u00e9".encode(),
        ),
        ("deltaforge:redis:deadletter", _event("b\u00e4ckerei", "0/16B6D00", 2), "27-2", b"x" * 70_000),
    ]
    for stream, event, entry_id, data in cases:
        assert packer.pack(event, stream, entry_id, data) == _redis_py(stream, event, entry_id, data, max_len)
