"""How the PostgreSQL source retries: its backoff, and a slot still held by our own lost connection."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from deltaforge.sources.errors import SourceUnavailable
from deltaforge.sources.patterns import TablePatterns
from deltaforge.sources.postgres import source as source_module
from deltaforge.sources.postgres.connection import PostgresSettings
from deltaforge.sources.postgres.source import PostgresSource, PostgresSourceConfig
from deltaforge.sources.postgres.stream import SlotInUse

STREAMS_THEN_BREAKS, BREAKS, SLOT_BUSY = "streams, then breaks", "breaks", "slot busy"


class _Metrics:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _run(monkeypatch: pytest.MonkeyPatch, attempts: list[str]) -> list[float]:
    """Run the source's retry loop over scripted connection `attempts` (it stops once they are
    used up); returns the upper bound of each backoff delay drawn."""
    bounds: list[float] = []

    async def no_preflight(*args: Any, **kwargs: Any) -> Any:
        return type("Plan", (), {"tables": [], "slot_created": False})()

    def record_bound(low: float, high: float) -> float:
        bounds.append(high)
        return 0.0

    source = PostgresSource(
        PostgresSourceConfig(
            settings=PostgresSettings(host="h", port=1, database="d", user="u", password="p"),
            patterns=TablePatterns(["public.*"]),
            slot="s",
            create_slot=False,
            publication="p",
            create_publication=False,
            heartbeat_interval=0,
        ),
        resume=None,
        metrics=_Metrics(),
        log=lambda *args, **kwargs: None,
    )

    async def stream(emit: Any) -> None:
        if not attempts:
            await source.stop()
            return
        attempt = attempts.pop(0)
        if attempt == SLOT_BUSY:
            raise SlotInUse("replication slot is active for PID 7")
        if attempt == STREAMS_THEN_BREAKS:
            source._health = (True, "streaming")
        raise SourceUnavailable("connection lost")

    monkeypatch.setattr(source_module, "preflight", no_preflight)
    monkeypatch.setattr(random, "uniform", record_bound)
    monkeypatch.setattr(source, "_stream", stream)
    asyncio.run(source.run(lambda items: asyncio.sleep(0)))
    return bounds


def test_backoff_grows_while_failing_and_resets_after_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds = _run(monkeypatch, [BREAKS, BREAKS, BREAKS, STREAMS_THEN_BREAKS, BREAKS])
    assert bounds == [0.5, 1.0, 2.0, 0.5, 1.0]


def test_a_slot_in_use_at_start_is_another_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SlotInUse):
        _run(monkeypatch, [SLOT_BUSY])
    with pytest.raises(SlotInUse):  # failing to connect first does not make it ours
        _run(monkeypatch, [BREAKS, SLOT_BUSY])


def test_after_a_lost_connection_the_slot_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server ends our previous walsender only at wal_sender_timeout: wait, bounded."""
    assert len(_run(monkeypatch, [STREAMS_THEN_BREAKS, SLOT_BUSY, SLOT_BUSY, BREAKS])) == 4
    monkeypatch.setattr(source_module, "SLOT_RELEASE_WAIT", -1.0)
    with pytest.raises(SlotInUse):
        _run(monkeypatch, [STREAMS_THEN_BREAKS, SLOT_BUSY])
