"""The local Kafka's cluster id never starts with "-", which the storage tool would take for an option."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hack.stack import kafka


def test_a_cluster_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: Iterator[uuid.UUID] = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert kafka._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"
