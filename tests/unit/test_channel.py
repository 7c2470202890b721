"""The source-to-coordinator channel: bounded by events, ordered, closed once drained."""

from __future__ import annotations

import asyncio

import pytest

from deltaforge.channel import Channel, ChannelClosed
from deltaforge.events import Progress
from deltaforge.protocols import Item


def _items(*positions: int) -> list[Item]:
    return [Progress(f"0/{position:X}", position) for position in positions]


def test_a_full_channel_makes_the_source_wait_until_the_reader_takes_a_chunk() -> None:
    async def scenario() -> None:
        channel = Channel(capacity=3)
        await channel.put(_items(1, 2, 3))
        blocked = asyncio.create_task(channel.put(_items(4)))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        assert channel.depth() == 3
        assert channel.get_nowait() == _items(1, 2, 3)
        await asyncio.wait_for(blocked, 1)
        assert channel.depth() == 1

    asyncio.run(scenario())


def test_chunks_come_out_in_order_and_a_put_back_remainder_comes_first() -> None:
    async def scenario() -> None:
        channel = Channel(capacity=10)
        await channel.put(_items(1, 2))
        await channel.put(_items(3))
        first = channel.get_nowait()
        assert first is not None
        channel.unget(first[1:])
        assert channel.depth() == 2
        assert channel.get_nowait() == _items(2)
        assert channel.get_nowait() == _items(3)
        assert channel.get_nowait() is None

    asyncio.run(scenario())


def test_close_lets_the_reader_drain_then_reports_the_end() -> None:
    async def scenario() -> None:
        channel = Channel(capacity=10)
        await channel.put(_items(1))
        channel.close()
        await asyncio.wait_for(channel.wait_readable(), 1)
        assert channel.get_nowait() == _items(1)
        with pytest.raises(ChannelClosed):
            channel.get_nowait()

    asyncio.run(scenario())


def test_a_reader_waiting_on_an_empty_channel_wakes_on_put() -> None:
    async def scenario() -> None:
        channel = Channel(capacity=10)
        waiting = asyncio.create_task(channel.wait_readable())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await channel.put(_items(7))
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Channel(capacity=0)
