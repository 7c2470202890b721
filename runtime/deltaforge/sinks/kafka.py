"""Kafka sink on aiokafka: idempotent producer, acks=all, compression, `event_id` and position headers.

Delivery is at-least-once: a batch is written again after a failure, with the same event ids and
keys, so consumers can drop duplicates (the exactly-once mode builds on this with transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordTooLargeError,
    RequestTimedOutError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.partitioner import murmur2

from deltaforge.backoff import Backoff
from deltaforge.checkpoints import codec
from deltaforge.envelopes import Encoder
from deltaforge.events import ChangeEvent, Checkpoint
from deltaforge.sinks.base import (
    FailureKind,
    FailureRecorder,
    Health,
    SinkError,
    SinkFencedError,
    retry_until_written,
)
from deltaforge.sinks.deadletter import DeadLetter, dead_letter_document

_KINDS: tuple[tuple[tuple[type[BaseException], ...], FailureKind], ...] = (
    ((AuthenticationFailedError, SaslAuthenticationFailed, TopicAuthorizationFailedError,
      ClusterAuthorizationFailedError, TransactionalIdAuthorizationFailed), FailureKind.AUTH),
    ((MessageSizeTooLargeError, RecordTooLargeError), FailureKind.MESSAGE_TOO_LARGE),
    ((KafkaTimeoutError, RequestTimedOutError, asyncio.TimeoutError), FailureKind.TIMEOUT),
    ((KafkaConnectionError, ConnectionError, OSError), FailureKind.CONNECTION),
)  # fmt: skip


METADATA_RETRY_PAUSE = 1.0  # seconds between metadata attempts while no broker answers
# Bytes of a produce request that are not the record's key and value: request and batch headers,
# record framing, our two headers. A record whose key and value leave less room is a dead letter.
RECORD_OVERHEAD = 512
# A record as it is sent: topic, key, value, and the event_id and position headers.
_Record = tuple[str, bytes | None, bytes, bytes, bytes]


def _pace_failed_metadata_updates(client: Any, pause: float) -> None:
    """Space out metadata refreshes that failed, on one producer's client.

    While no broker answers, aiokafka's sender loop waits on `force_metadata_update()` with no
    backoff, and a refused connection fails it at once: the loop spins, one CPU core at 100 % and
    about a thousand error lines a second for the whole outage. A failed refresh now completes
    only after `pause`, as Kafka's Java client backs off reconnects (reconnect.backoff.max.ms).
    """
    force = client.force_metadata_update

    async def settle(update: Awaitable[Any]) -> bool:
        updated = bool(await update)
        if not updated:
            await asyncio.sleep(pause)
        return updated

    # The refresh starts at the call, exactly as before; only a failed one is reported later.
    client.force_metadata_update = lambda: asyncio.ensure_future(settle(force()))


def kafka_partition(key: bytes | None, partitions: list[int]) -> int:
    """Kafka's default partitioner (murmur2 of the key), as the Java client and aiokafka compute it."""
    if len(partitions) == 1:
        return partitions[0]
    if key is None:
        return random.choice(partitions)
    return partitions[(int(murmur2(key)) & 0x7FFFFFFF) % len(partitions)]


@dataclass(frozen=True)
class KafkaTransaction:
    """Exactly-once mode: each batch and the checkpoint it reaches are one Kafka transaction.

    The checkpoint is a record keyed by `transactional_id` in the compacted `checkpoint_topic`;
    `checkpoints.kafka.KafkaCheckpointStore` reads it back on start.
    """

    transactional_id: str
    checkpoint_topic: str

    @property
    def checkpoint_key(self) -> bytes:
        return self.transactional_id.encode()


def classify(error: BaseException) -> FailureKind:
    for types, kind in _KINDS:
        if isinstance(error, types):
            return kind
    return FailureKind.OTHER


class KafkaSink:
    def __init__(
        self,
        name: str,
        *,
        required: bool,
        bootstrap_servers: list[str],
        topic_for: Callable[[ChangeEvent], str],
        key_for: Callable[[ChangeEvent], bytes | None],
        encode: Encoder,
        failures: FailureRecorder,
        compression: str | None = "zstd",
        linger_ms: int = 5,
        max_request_size: int = 1024 * 1024,
        client_id: str | None = None,
        log: Callable[[str, SinkError, float], None] | None = None,
        stall_after: float = 5.0,
        transaction: KafkaTransaction | None = None,
        dead_letter_topic_for: Callable[[ChangeEvent], str] | None = None,
        on_dead_letters: Callable[[str, list[DeadLetter]], None] | None = None,
    ) -> None:
        self.name, self.required = name, required
        self.bootstrap_servers = self._bootstrap = bootstrap_servers
        self._topic_for, self._key_for, self._encode = topic_for, key_for, encode
        self._failures, self._log = failures, log
        self._stall_after = stall_after
        self._options = {
            "compression_type": None if compression in (None, "none") else compression,
            "linger_ms": linger_ms,
            "max_request_size": max_request_size,
            "client_id": client_id or f"deltaforge-{name}",
        }
        self.transaction = transaction
        self._dead_letter_topic_for = dead_letter_topic_for or (lambda _: f"deltaforge.{name}.deadletter")
        self._on_dead_letters = on_dead_letters
        self._max_record_bytes = max_request_size - RECORD_OVERHEAD
        self.committed: Checkpoint | None = None  # the last checkpoint a transaction committed
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._health = Health()
        self._backoff = Backoff()

    async def start(self) -> None:
        """Connect; a second call keeps the producer of the first (the checkpoint store of an
        exactly-once sink starts it before the pipeline does, see `checkpoints.kafka`)."""
        if self._producer is not None:
            return
        await retry_until_written(
            self._connect, sink=self.name, health=self._health, failures=self._failures, log=self._log
        )

    async def _connect(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            max_batch_size=256 * 1024,
            request_timeout_ms=30_000,
            retry_backoff_ms=200,
            transactional_id=self.transaction.transactional_id if self.transaction else None,
            **self._options,
        )
        _pace_failed_metadata_updates(producer.client, METADATA_RETRY_PAUSE)
        try:
            # With a transactional id, start() also fences every older producer with that id.
            await producer.start()
        except (KafkaError, OSError) as error:
            await producer.stop()
            raise SinkError(
                classify(error), f"cannot connect to Kafka at {','.join(self._bootstrap)}: {error}"
            ) from error
        self._producer = producer

    async def write(self, events: Sequence[ChangeEvent], checkpoint: Checkpoint) -> None:
        await retry_until_written(
            lambda: self._write_once(events, checkpoint),
            sink=self.name,
            health=self._health,
            failures=self._failures,
            on_failure=self._reset_after,
            backoff=self._backoff,
            log=self._log,
        )

    async def _write_once(self, events: Sequence[ChangeEvent], checkpoint: Checkpoint) -> None:
        # The producer retries a lost broker by itself, for up to its request timeout (30 s) before
        # any error reaches us: report the sink unhealthy once acknowledgements are overdue, so
        # /readyz tells the truth during an outage that is shorter than that timeout.
        overdue = asyncio.get_running_loop().call_later(self._stall_after, self._overdue)
        try:
            if self.transaction is None:
                await self._deliver(events)
            else:
                await self._deliver_in_transaction(events, checkpoint, self.transaction)
        finally:
            overdue.cancel()

    async def _deliver_in_transaction(
        self, events: Sequence[ChangeEvent], checkpoint: Checkpoint, transaction: KafkaTransaction
    ) -> None:
        """The batch and its checkpoint record commit together, or neither is visible to
        `read_committed` consumers; a failed attempt is aborted (or fenced by the next producer
        the retry starts) and written again whole."""
        if self._producer is None:
            await self._connect()
        producer = self._producer
        assert producer is not None
        try:
            await producer.begin_transaction()
            await self._deliver(events)
            partitions = await self._partitions_of(producer, transaction.checkpoint_topic)
            written = await producer.send(
                transaction.checkpoint_topic,
                value=codec.dump(checkpoint),
                key=transaction.checkpoint_key,
                partition=kafka_partition(transaction.checkpoint_key, partitions),
            )
            await written
            await producer.commit_transaction()
        except (ProducerFenced, InvalidProducerEpoch) as error:
            self._producer = None
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise SinkFencedError(
                f"sink {self.name}: another producer with transactional id "
                f"{transaction.transactional_id!r} took over (another worker of this pipeline is "
                "running), or a transaction outlived the broker's transaction timeout; this worker "
                "stops so that only one writes, and a restart resumes from the last committed batch"
            ) from error
        except (TimeoutError, KafkaError, OSError) as error:
            raise SinkError(
                classify(error), f"transaction failed: {error or type(error).__name__}"
            ) from error
        self.committed = checkpoint

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        return partitions

    async def _deliver(self, events: Sequence[ChangeEvent]) -> None:
        if self._producer is None:
            await self._connect()
        producer = self._producer
        assert producer is not None
        # Everything is serialized before anything is sent, and what cannot be becomes a dead
        # letter: a bad event must neither leave part of the batch in Kafka nor fail every retry.
        records, letters = self._records(events)
        try:
            # Every outcome is collected, so no failed batch is left as an unretrieved exception.
            outcomes = await asyncio.gather(
                *await self._send_batches(producer, records), return_exceptions=True
            )
            failed = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
            if failed is not None:
                raise failed
        except (ProducerFenced, InvalidProducerEpoch):
            raise  # not a failed write: `_deliver_in_transaction` stops the worker
        except (TimeoutError, KafkaError, OSError) as error:
            raise SinkError(classify(error), str(error) or type(error).__name__) from error
        if letters:
            for letter in letters:
                self._failures.sink_failure(self.name, letter.kind)
            if self._on_dead_letters is not None:
                self._on_dead_letters(self.name, letters)

    def _records(self, events: Sequence[ChangeEvent]) -> tuple[list[_Record], list[DeadLetter]]:
        """The records of `events` (topic, key, value, event id, position), and the dead letters
        that replace the events that cannot be written."""
        encode, key_for, topic_for = self._encode, self._key_for, self._topic_for
        records: list[_Record] = []
        letters: list[DeadLetter] = []
        limit = self._max_record_bytes
        last_source, position, topic = None, b"", ""
        for event in events:
            if event.source is not last_source:  # a new table or transaction: its topic and position
                last_source, position, topic = event.source, event.source.position.encode(), topic_for(event)
            try:
                value, key = encode(event), key_for(event)
            except (TypeError, ValueError) as error:
                letters.append(DeadLetter(event, FailureKind.SERIALIZATION, str(error)))
                continue
            if len(value) + len(key or b"") > limit:
                reason = (
                    f"{len(value) + len(key or b'')} bytes of key and value exceed the sink's maxRequestSize "
                    f"({self._options['max_request_size']} bytes, less {RECORD_OVERHEAD} for framing)"
                )
                letters.append(DeadLetter(event, FailureKind.MESSAGE_TOO_LARGE, reason))
                continue
            records.append((topic, key, value, event.event_id.encode(), position))
        for letter in letters:
            event = letter.event
            records.append(
                (
                    self._dead_letter_topic_for(event),
                    key_for(event) if letter.kind is FailureKind.MESSAGE_TOO_LARGE else None,
                    dead_letter_document(letter, self.name),
                    event.event_id.encode(),
                    event.source.position.encode(),
                )
            )
        return records, letters

    async def _send_batches(
        self, producer: AIOKafkaProducer, records: list[_Record]
    ) -> list[asyncio.Future[Any]]:
        """Fill one record batch per partition and hand each over when full: per-record `send()`
        costs a future and a metadata object per event, the largest share of a worker's CPU."""
        builders: dict[tuple[str, int], Any] = {}
        pending: list[asyncio.Future[Any]] = []
        last_topic, partitions = None, []
        for topic, key, value, event_id, position in records:
            if topic != last_topic:  # records come in runs of one topic
                last_topic, partitions = topic, await self._partitions_of(producer, topic)
            partition = kafka_partition(key, partitions)
            slot = (topic, partition)
            builder = builders.get(slot)
            if builder is None:
                builder = builders[slot] = producer.create_batch()
            headers = [("event_id", event_id), ("position", position)]
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # Full: hand it over; a fresh batch always takes its first record.
                pending.append(await producer.send_batch(builder, topic, partition=partition))
                builder = builders[slot] = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None, headers=headers)
        for (topic, partition), builder in builders.items():
            if builder.record_count():
                pending.append(await producer.send_batch(builder, topic, partition=partition))
        return pending

    def _overdue(self) -> None:
        """Unhealthy until the write completes (recover) or fails (a SinkError reason replaces this).

        Counted as a timeout too: an outage shorter than the producer's request timeout raises
        nothing, and deltaforge_sink_failures_total would otherwise never show it."""
        self._failures.sink_failure(self.name, FailureKind.TIMEOUT)
        self._health.fail(
            f"{FailureKind.TIMEOUT.value}: no acknowledgement from Kafka at {','.join(self._bootstrap)} "
            f"for {self._stall_after:g} s, still retrying"
        )

    async def _reset_after(self, error: SinkError) -> None:
        """A failed idempotent producer may hold a broken sequence, a transactional one an open
        transaction: start a fresh one (which, transactional, aborts what the old one left)."""
        self._partitions.clear()
        retried = (FailureKind.CONNECTION, FailureKind.TIMEOUT, FailureKind.OTHER)
        if (error.kind in retried or self.transaction is not None) and self._producer:
            producer, self._producer = self._producer, None
            with contextlib.suppress(TimeoutError, KafkaError, OSError):
                await asyncio.wait_for(producer.stop(), timeout=10)

    def backlog(self) -> int:
        """Records buffered in the producer, for the backpressure gauge."""
        producer = self._producer
        if producer is None:
            return 0
        accumulator = getattr(producer, "_message_accumulator", None)
        batches = getattr(accumulator, "_batches", {}) if accumulator is not None else {}
        return sum(len(queue) for queue in batches.values())

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def health(self) -> tuple[bool, str]:
        return self._health.as_tuple()
