"""Envelope shapes, and that a remembered source block never leaks into another event's."""

from __future__ import annotations

import tracemalloc

import orjson

from deltaforge.envelopes import encode_key, encoder_for
from deltaforge.events import UNCHANGED, ChangeEvent, Op, SourceInfo, event_id


def _info(table: str = "orders", position: str = "0/16B6C50") -> SourceInfo:
    return SourceInfo(
        "postgres", "pg:shop:slot", "shop", "public", table, position, 1_764_000_000_123_456, "731"
    )


def _event(info: SourceInfo, index: int = 0, *, op: Op = Op.CREATE, lsn: int = 0) -> ChangeEvent:
    return ChangeEvent(
        op, info, None, {"id": index, "note": UNCHANGED}, {"id": index}, index, lsn > 0,
        event_id(info.name, info.position, index), lsn,
    )  # fmt: skip


def test_native_shape() -> None:
    info = _info()
    document = orjson.loads(encoder_for("native", "p")(_event(info, 3)))
    assert document == {
        "id": event_id("pg:shop:slot", "0/16B6C50", 3),
        "op": "c",
        "source": {
            "connector": "postgres",
            "name": "pg:shop:slot",
            "db": "shop",
            "schema": "public",
            "table": "orders",
            "position": "0/16B6C50",
            "commitTime": "2025-11-24T16:00:00.123456Z",
            "txId": "731",
        },
        "key": {"id": 3},
        "before": None,
        "after": {"id": 3, "note": {"__unchanged__": True}},
        "tx": {"index": 3, "last": False},
    }


def test_each_event_gets_its_own_source_block() -> None:
    encode = encoder_for("native", "p")
    first, other_table, other_tx = _info(), _info("customers"), _info(position="0/16B6D00")
    sources = [
        orjson.loads(encode(_event(info)))["source"] for info in (first, first, other_table, other_tx, first)
    ]
    assert [(s["table"], s["position"]) for s in sources] == [
        ("orders", "0/16B6C50"),
        ("orders", "0/16B6C50"),
        ("customers", "0/16B6C50"),
        ("orders", "0/16B6D00"),
        ("orders", "0/16B6C50"),
    ]


def test_debezium_carries_the_lsn_only_on_the_commit_and_marks_snapshot_reads() -> None:
    encode = encoder_for("debezium", "p")
    info = _info()
    middle = orjson.loads(encode(_event(info, 0)))
    last = orjson.loads(encode(_event(info, 1, lsn=0x16B6C80)))
    read = orjson.loads(encode(_event(info, 2, op=Op.READ)))
    assert middle["source"]["lsn"] is None
    assert last["source"]["lsn"] == 0x16B6C80
    assert (middle["source"]["snapshot"], read["source"]["snapshot"]) == ("false", "true")
    assert middle["after"]["note"] == "__debezium_unavailable_value"
    assert middle["transaction"] == {"id": "731:0/16B6C50", "total_order": 1, "data_collection_order": 1}
    assert middle["ts_ms"] == 1_764_000_000_123


def test_cloudevents_attributes() -> None:
    document = orjson.loads(encoder_for("cloudevents", "orders-cdc")(_event(_info(), 5, op=Op.DELETE)))
    assert document["specversion"] == "1.0"
    assert document["source"] == "/deltaforge/orders-cdc/postgres/shop"
    assert document["type"] == "io.deltaforge.row.deleted"
    assert document["subject"] == "public.orders"
    assert document["time"] == "2025-11-24T16:00:00.123456Z"
    assert (document["deltaforgeposition"], document["deltaforgeindex"]) == ("0/16B6C50", 5)
    assert document["data"]["op"] == "d"


def test_default_key_is_sorted_json_of_the_primary_key() -> None:
    assert encode_key({"b": 2, "a": "x"}) == b'{"a":"x","b":2}'
    assert encode_key(None) is None


def test_encoded_events_and_keys_occupy_only_their_own_size() -> None:
    """A sink holds a batch of encoded events until it is written; orjson's untrimmed buffers
    (4 KiB each from 3.12 on) would multiply that memory by 10 or more for small rows."""
    events = [_event(_info(), index) for index in range(500)]
    held: list[bytes | None] = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in ("native", "debezium", "cloudevents"):
            encode = encoder_for(name, "p")
            held.extend(encode(event) for event in events)
        held.extend(encode_key(event.key) for event in events)
        held.extend(encode_key({"b": event.index, "a": 1}) for event in events)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload = sum(len(data or b"") for data in held)
    # Each bytes object costs its length plus a 33-byte header (and the list's pointer).
    assert grown < payload + 64 * len(held), f"{grown} bytes held for {payload} bytes of JSON"
