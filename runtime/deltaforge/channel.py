"""The bounded hand-off between a source and the coordinator, in chunks of items.

A source hands over everything it decoded from one network read at once: one queue operation and
one await per event cost more than decoding the event. The bound counts events, not chunks, so
memory stays bounded whatever the chunk sizes; a source waits while the channel is full.
"""

from __future__ import annotations

import asyncio
from collections import deque

from deltaforge.protocols import Item


class ChannelClosed(Exception):
    """Raised by `get` once the source has finished and every chunk was taken."""


class Channel:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"channel capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._chunks: deque[list[Item]] = deque()
        self._depth = 0
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def depth(self) -> int:
        """Events waiting, for the `pipeline_channel_depth` gauge and the liveness check."""
        return self._depth

    async def put(self, items: list[Item]) -> None:
        """Queue `items` (the caller gives up the list), after waiting for room if the channel is full."""
        if not items:
            return
        while self._depth >= self.capacity:
            self._writable.clear()
            await self._writable.wait()
        self._chunks.append(items)
        self._depth += len(items)
        self._readable.set()

    def close(self) -> None:
        """The source is done: `get` drains what is queued, then raises ChannelClosed."""
        self._closed = True
        self._readable.set()

    def get_nowait(self) -> list[Item] | None:
        """The oldest chunk, or None when nothing is queued (ChannelClosed once closed and empty)."""
        if not self._chunks:
            if self._closed:
                raise ChannelClosed
            return None
        chunk = self._chunks.popleft()
        self._depth -= len(chunk)
        if self._depth < self.capacity:
            self._writable.set()
        return chunk

    def unget(self, items: list[Item]) -> None:
        """Put back the part of a chunk the coordinator could not take into the current batch."""
        if items:
            self._chunks.appendleft(items)
            self._depth += len(items)
            self._readable.set()

    async def wait_readable(self) -> None:
        """Until a chunk is queued or the channel is closed."""
        while not self._chunks and not self._closed:
            self._readable.clear()
            await self._readable.wait()
