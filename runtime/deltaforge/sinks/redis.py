"""Redis Streams sink: pipelined XADD, one stream per table template, optional approximate MAXLEN.

Delivery is at-least-once with the `event_id` field for consumer-side dedup. The idempotent mode
(`entry_id`) gives each entry an id derived from its position, `<commit order>-<index>`: Redis
itself then refuses a replayed change, since a stream's ids only grow (docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
from deltaforge.sinks.deadletter import DeadLetter, dead_letter_document

_ALREADY_WRITTEN = "equal or smaller than the target stream top item"


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
        dead_letter_stream_for: Callable[[ChangeEvent], str] | None = None,
        on_dead_letters: Callable[[str, list[DeadLetter]], None] | None = None,
        entry_id: Callable[[ChangeEvent], str] | None = None,
    ) -> None:
        self.name, self.required = name, required
        self._url, self._stream_for, self._encode = url, stream_for, encode
        self._max_len, self._failures, self._log = max_len, failures, log
        self._dead_letter_stream_for = dead_letter_stream_for or (lambda _: f"deltaforge:{name}:deadletter")
        self._on_dead_letters = on_dead_letters
        self._entry_id = entry_id  # idempotent mode: entry ids from the position (see `write`)
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

    def _entries(
        self, events: Sequence[ChangeEvent]
    ) -> tuple[list[tuple[str, dict[str, Any], str]], list[DeadLetter]]:
        """One XADD per event; an event that cannot be serialized is a dead letter instead
        (see `sinks.deadletter`), written to the dead-letter stream."""
        entries: list[tuple[str, dict[str, Any], str]] = []
        entry_id = self._entry_id
        letters: list[DeadLetter] = []
        for event in events:
            try:
                data = self._encode(event)
            except (TypeError, ValueError) as error:
                letter = DeadLetter(event, FailureKind.SERIALIZATION, str(error))
                letters.append(letter)
                stream, data = self._dead_letter_stream_for(event), dead_letter_document(letter, self.name)
            else:
                stream = self._stream_for(event)
            fields = {
                "event_id": event.event_id,
                "op": event.op.value,
                "table": event.table_path,
                "position": event.source.position,
                "data": data,
            }
            entries.append((stream, fields, entry_id(event) if entry_id is not None else "*"))
        return entries, letters

    async def _write_once(self, events: Sequence[ChangeEvent]) -> None:
        assert self._client is not None
        entries, letters = self._entries(events)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for stream, fields, entry in entries:
                    pipe.xadd(stream, fields, id=entry, maxlen=self._max_len, approximate=True)  # type: ignore[arg-type]
                outcomes = await pipe.execute(raise_on_error=False)
        except RedisError as error:
            raise SinkError(classify(error), str(error)) from error
        for outcome in outcomes:
            # Idempotent mode: Redis refuses an id at or below the stream's last one, which is
            # exactly a change written before (a replay after a crash): already there, not an error.
            if isinstance(outcome, RedisError) and not (self._entry_id and _ALREADY_WRITTEN in str(outcome)):
                raise SinkError(classify(outcome), str(outcome)) from outcome
        if letters:
            for letter in letters:
                self._failures.sink_failure(self.name, letter.kind)
            if self._on_dead_letters is not None:
                self._on_dead_letters(self.name, letters)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> tuple[bool, str]:
        return self._health.as_tuple()
