"""Redis Streams sink: pipelined XADD, one stream per table template, optional approximate MAXLEN."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError, TimeoutError

from deltaforge.envelopes import Encoder
from deltaforge.events import ChangeEvent, Checkpoint
from deltaforge.sinks.base import (
    Backoff,
    FailureKind,
    FailureRecorder,
    Health,
    SinkError,
    retry_until_written,
)


def classify(error: BaseException) -> FailureKind:
    if isinstance(error, AuthenticationError) or (
        isinstance(error, ResponseError) and "NOAUTH" in str(error)
    ):
        return FailureKind.AUTH
    if isinstance(error, TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(error, ConnectionError | OSError):
        return FailureKind.CONNECTION
    return FailureKind.OTHER


class RedisSink:
    def __init__(
        self,
        name: str,
        *,
        required: bool,
        url: str,
        stream_for: Callable[[ChangeEvent], str],
        encode: Encoder,
        failures: FailureRecorder,
        max_len: int | None = None,
        log: Callable[[str, SinkError, float], None] | None = None,
    ) -> None:
        self.name, self.required = name, required
        self._url, self._stream_for, self._encode = url, stream_for, encode
        self._max_len, self._failures, self._log = max_len, failures, log
        self._client: aioredis.Redis | None = None
        self._health = Health()
        self._backoff = Backoff()

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(self._url, socket_timeout=10, socket_connect_timeout=5)
        await retry_until_written(
            self._ping, sink=self.name, health=self._health, failures=self._failures, log=self._log
        )

    async def _ping(self) -> None:
        assert self._client is not None
        try:
            await self._client.ping()
        except RedisError as error:
            raise SinkError(classify(error), f"cannot reach Redis: {error}") from error

    async def write(self, events: Sequence[ChangeEvent], checkpoint: Checkpoint) -> None:
        await retry_until_written(
            lambda: self._write_once(events),
            sink=self.name,
            health=self._health,
            failures=self._failures,
            backoff=self._backoff,
            log=self._log,
        )

    async def _write_once(self, events: Sequence[ChangeEvent]) -> None:
        assert self._client is not None
        try:
            entries = [
                (
                    self._stream_for(event),
                    {
                        "event_id": event.event_id,
                        "op": event.op.value,
                        "table": event.table_path,
                        "position": event.source.position,
                        "data": self._encode(event),
                    },
                )
                for event in events
            ]
        except (TypeError, ValueError) as error:
            raise SinkError(FailureKind.SERIALIZATION, str(error)) from error
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for stream, fields in entries:
                    pipe.xadd(stream, fields, maxlen=self._max_len, approximate=True)  # type: ignore[arg-type]
                await pipe.execute()
        except RedisError as error:
            raise SinkError(classify(error), str(error)) from error

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> tuple[bool, str]:
        return self._health.as_tuple()
