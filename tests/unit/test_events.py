"""Event identity is a standard UUIDv5 of the source position, so any consumer can recompute it."""

from __future__ import annotations

import uuid

from deltaforge.events import _EVENT_NAMESPACE, event_id, event_ids


def test_event_ids_are_standard_uuid5_of_source_position_and_index() -> None:
    for index in (0, 1, 12345):
        expected = str(uuid.uuid5(_EVENT_NAMESPACE, f"pg:shop:slot|0/16B6C50|{index}"))
        assert event_id("pg:shop:slot", "0/16B6C50", index) == expected


def test_per_transaction_ids_equal_single_ids() -> None:
    for_transaction = event_ids("mysql:shop/orders", "gtid=0-1-42")
    assert [for_transaction(index) for index in range(3)] == [
        event_id("mysql:shop/orders", "gtid=0-1-42", index) for index in range(3)
    ]
