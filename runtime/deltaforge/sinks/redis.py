"""Redis Streams sink: pipelined XADD, one stream per table template, optional approximate MAXLEN.

Delivery is at-least-once with the `event_id` field for consumer-side dedup. The idempotent mode
(`entry_id`) gives each entry an id derived from its position, `<commit order>-<index>`: Redis
itself then refuses a replayed change, since a stream's ids only grow (docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from deltaforge.backoff import Backoff
from deltaforge.envelopes import Encoder
from deltaforge.events import ChangeEvent, Checkpoint
from deltaforge.sinks.base import (
    FailureKind,
    FailureRecorder,
    Health,
    SinkError,
    retry_until_written,
)
from deltaforge.sinks.deadletter import DeadLetter, dead_letter_document
from deltaforge.sinks.xadd import ANY_ID, XaddPacker

_ALREADY_WRITTEN = "equal or smaller than the target stream top item"
SOCKET_TIMEOUT: Final = 10.0  # seconds a write, or the wait for the next reply, may take
PROGRESS_EVERY: Final = 256  # replies between two moves of the reply deadline


def classify(error: BaseException) -> FailureKind:
    if isinstance(error, AuthenticationError) or (
        isinstance(error, ResponseError) and "NOAUTH" in str(error)
    ):
        return FailureKind.AUTH
    if isinstance(error, RedisTimeoutError):
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
        self._packer = XaddPacker(max_len)
        self._client: aioredis.Redis | None = None
        self._health = Health()
        self._backoff = Backoff()

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self._url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=5
        )
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

    def _commands(self, events: Sequence[ChangeEvent]) -> tuple[list[bytes], list[DeadLetter]]:
        """One packed XADD per event; an event that cannot be serialized is a dead letter instead
        (see `sinks.deadletter`), written to the dead-letter stream."""
        pack, entry_id = self._packer.pack, self._entry_id
        commands: list[bytes] = []
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
            commands.append(pack(event, stream, entry_id(event) if entry_id is not None else ANY_ID, data))
        return commands, letters

    async def _write_once(self, events: Sequence[ChangeEvent]) -> None:
        assert self._client is not None
        commands, letters = self._commands(events)
        try:
            refused = await self._send(self._client, commands)
        except RedisError as error:
            raise SinkError(classify(error), str(error)) from error
        for refusal in refused:
            # Idempotent mode: Redis refuses an id at or below the stream's last one, which is
            # exactly a change written before (a replay after a crash): already there, not an error.
            if not (self._entry_id and _ALREADY_WRITTEN in str(refusal)):
                raise SinkError(classify(refusal), str(refusal)) from refusal
        if letters:
            for letter in letters:
                self._failures.sink_failure(self.name, letter.kind)
            if self._on_dead_letters is not None:
                self._on_dead_letters(self.name, letters)

    @staticmethod
    async def _send(client: aioredis.Redis, commands: list[bytes]) -> list[ResponseError]:
        """Pipelines `commands` on one pooled connection and reads every reply; returns the
        refusals. redis-py would arm and cancel a timer for every reply; here one deadline, moved
        every few hundred replies, fails the write once Redis has answered nothing for
        SOCKET_TIMEOUT (a blackholed connection). A connection left with unread replies (an error,
        a timeout, a cancellation) is closed, never reused."""
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        refused: list[ResponseError] = []
        answered = 0
        try:
            await connection.send_packed_command(commands)  # bounded by SOCKET_TIMEOUT itself
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(None) as deadline:
                for answered in range(len(commands)):
                    if answered % PROGRESS_EVERY == 0:
                        deadline.reschedule(loop.time() + SOCKET_TIMEOUT)
                    try:
                        await connection.read_response(disable_decoding=True, timeout=math.inf)
                    except ResponseError as error:
                        refused.append(error)
        except TimeoutError as error:
            await connection.disconnect(nowait=True)
            raise SinkError(
                FailureKind.TIMEOUT,
                f"Redis sent no reply for {SOCKET_TIMEOUT:.0f} s ({answered} of {len(commands)} XADDs answered)",
            ) from error
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)
        return refused

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> tuple[bool, str]:
        return self._health.as_tuple()
