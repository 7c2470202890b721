"""The Redis side of a benchmark: one fresh stream the worker's Redis sink appends to, counted by XLEN.

XLEN is O(1) and reads no entry, so polling it every 100 ms costs Redis and this process almost
nothing while the worker runs, as a topic's end offsets do for Kafka. The worker's sink writes
every change to this one stream (a literal `stream` key, no template) and its dead letters to a
stream next to it, which is deleted with it: the local Redis is shared and keeps no data on
disk, so nothing may outlive the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

DEAD_LETTER_SUFFIX = ":deadletter"


class StreamCounter:
    """XLEN of one stream (0 while it does not exist)."""

    def __init__(self, url: str, key: str) -> None:
        self._client = aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._key = key

    async def __aenter__(self) -> StreamCounter:
        await self.count()  # the connection now, not during the measurement
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def count(self) -> int:
        return int(await self._client.xlen(self._key))


@dataclass(frozen=True)
class Stream:
    """A fresh Redis stream: `delivery.Destination` for the worker's Redis sink."""

    url: str
    name: str  # the stream's key
    timeout: float
    broker_pid: int | None = None  # the local redis-server
    system: str = "Redis"

    @property
    def label(self) -> str:
        return f"stream {self.name}"

    @property
    def keys(self) -> tuple[str, str]:
        return self.name, self.name + DEAD_LETTER_SUFFIX

    def counter(self) -> StreamCounter:
        return StreamCounter(self.url, self.name)

    def create(self) -> None:
        """Nothing to create (XADD creates the stream); fail if a stream of that name holds entries."""
        with redis.Redis.from_url(self.url, socket_connect_timeout=5) as client:
            if client.exists(*self.keys):
                raise RuntimeError(f"{self.label} already exists in Redis")

    def delete(self) -> None:
        with redis.Redis.from_url(self.url, socket_connect_timeout=5) as client:
            client.delete(*self.keys)

    def sink(self) -> dict[str, Any]:
        """The worker's Redis sink: the native envelope, every table into this one stream."""
        return {
            "name": "redis",
            "redis": {
                "url": self.url,
                "stream": self.name,
                "envelope": "native",
                "deadLetterStream": self.name + DEAD_LETTER_SUFFIX,
            },
        }

    def as_json(self) -> dict[str, Any]:
        return {"stream": self.name}


def unreachable(url: str) -> str | None:
    """Why Redis does not answer at `url`, or None when it does."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as client:
            client.ping()
    except (redis.RedisError, OSError) as error:
        return f"Redis at {url} is not reachable ({error})"
    return None
