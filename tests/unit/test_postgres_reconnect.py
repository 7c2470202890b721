"""The PostgreSQL source's reconnect backoff starts over after a connection that streamed."""

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


class _Metrics:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_backoff_grows_while_failing_and_resets_after_streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each entry: does this connection attempt reach streaming before it breaks?
    outcomes = [False, False, False, True, False]
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
        if not outcomes:
            await source.stop()
            return
        if outcomes.pop(0):
            source._health = (True, "streaming")
        raise SourceUnavailable("connection lost")

    monkeypatch.setattr(source_module, "preflight", no_preflight)
    monkeypatch.setattr(random, "uniform", record_bound)
    monkeypatch.setattr(source, "_stream", stream)

    asyncio.run(source.run(lambda items: asyncio.sleep(0)))

    assert bounds == [0.5, 1.0, 2.0, 0.5, 1.0]
