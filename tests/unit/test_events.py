"""Event identity: a UUIDv8 of the source position and the index, so any consumer can recompute it."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from deltaforge.events import _EVENT_NAMESPACE, event_id, event_ids


def _recomputed(source_id: str, position: str, index: int) -> str:
    """The documented formula, written independently of the implementation's bit packing."""
    hashed = hashlib.sha1(_EVENT_NAMESPACE + f"{source_id}|{position}".encode()).digest()[:10]
    bits = f"{int.from_bytes(hashed):080b}" + f"{index:042b}"
    layout = bits[:48] + "1000" + bits[48:60] + "10" + bits[60:]
    return str(uuid.UUID(int=int(layout, 2)))


def test_event_ids_are_rfc_9562_version_8_uuids_of_position_and_index() -> None:
    for index in (0, 1, 12345, 2**42 - 1):
        text = event_id("pg:shop:slot", "0/16B6C50", index)
        parsed = uuid.UUID(text)
        assert parsed.version == 8
        assert parsed.variant == uuid.RFC_4122
        assert text == _recomputed("pg:shop:slot", "0/16B6C50", index)


def test_ids_differ_by_index_transaction_and_source() -> None:
    ids = {event_id("pg:shop:slot", "0/16B6C50", index) for index in range(1000)}
    ids.add(event_id("pg:shop:slot", "0/16B6C51", 0))
    ids.add(event_id("pg:shop:other", "0/16B6C50", 0))
    assert len(ids) == 1002


def test_per_transaction_ids_equal_single_ids() -> None:
    for_transaction = event_ids("mysql:shop/orders", "gtid=0-1-42")
    assert [for_transaction(index) for index in range(3)] == [
        event_id("mysql:shop/orders", "gtid=0-1-42", index) for index in range(3)
    ]


def test_an_index_beyond_42_bits_is_refused_not_wrapped() -> None:
    with pytest.raises(ValueError, match="outside"):
        event_id("pg:shop:slot", "0/16B6C50", 2**42)
