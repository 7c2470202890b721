"""The checkpoint of an exactly-once pipeline: a record in a compacted Kafka topic, written by the
Kafka sink inside the transaction of the batch it belongs to (see `sinks.kafka.KafkaTransaction`).

A batch's records and its checkpoint become visible together or not at all, so after a crash the
pipeline resumes exactly after the last committed batch: a `read_committed` consumer never sees a
change twice. The record's key is the sink's transactional id; compaction keeps the latest one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from deltaforge.checkpoints import codec
from deltaforge.events import Checkpoint
from deltaforge.sinks.kafka import KafkaSink, KafkaTransaction, kafka_partition

# Compact, and roll segments hourly so that compaction can drop old checkpoints: a topic of one
# small record per batch would otherwise grow until retention.
TOPIC_CONFIG: Final = {"cleanup.policy": "compact", "segment.ms": str(3_600_000)}
LOAD_PATIENCE: Final = 60.0  # seconds a starting worker waits for Kafka to serve its checkpoint


class KafkaCheckpointStore:
    def __init__(self, sink: KafkaSink, bootstrap_servers: list[str]) -> None:
        assert sink.transaction is not None, "only an exactly-once Kafka sink stores checkpoints"
        self.sink, self.transaction = sink, sink.transaction
        self._bootstrap = bootstrap_servers

    @property
    def where(self) -> str:
        return f"Kafka topic {self.transaction.checkpoint_topic} (key {self.transaction.transactional_id})"

    async def load(self) -> Checkpoint | None:
        """The last committed checkpoint; Kafka may still be starting, so connection failures
        are retried for up to `LOAD_PATIENCE` seconds before the worker gives up with a message.

        The sink's transactional producer starts first: that fences the previous worker and
        settles its last transaction (a commit it had sent completes, an open one is aborted), so
        the checkpoint read afterwards is final. Read before, it could miss a commit still being
        completed, and the batch would be written twice.
        """
        await self.sink.start()
        deadline = time.monotonic() + LOAD_PATIENCE
        attempt = 0
        while True:
            try:
                await self._ensure_topic()
                value = await self._latest_value()
                break
            except (KafkaError, OSError) as error:
                if time.monotonic() >= deadline:
                    raise ValueError(
                        f"cannot read the checkpoint from {self.where} at {','.join(self._bootstrap)} "
                        f"within {LOAD_PATIENCE:.0f} s: {error or type(error).__name__}"
                    ) from error
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
                attempt += 1
        return None if value is None else codec.load(value, self.where)

    async def save(self, checkpoint: Checkpoint) -> None:
        """Already committed with its batch, unless the batch wrote no event to this sink (all
        filtered, or only progress markers): then a transaction of the checkpoint alone."""
        if self.sink.committed != checkpoint:
            await self.sink.write([], checkpoint)

    async def close(self) -> None:
        return None

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            if self.transaction.checkpoint_topic in await admin.list_topics():
                return
            brokers = len((await admin.describe_cluster())["brokers"])
            topic = NewTopic(
                self.transaction.checkpoint_topic, 1, min(3, brokers), topic_configs=TOPIC_CONFIG
            )
            response = await admin.create_topics([topic])
            for name, code, *details in response.topic_errors:
                # 36 TOPIC_ALREADY_EXISTS: another pipeline created it meanwhile.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaError(f"cannot create the checkpoint topic {name}: error {code} {details}")
        finally:
            await admin.close()

    async def _latest_value(self) -> bytes | None:
        """The last committed value of our key: read the whole partition, it is compacted."""
        transaction: KafkaTransaction = self.transaction
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        try:
            await consumer.topics()  # fresh metadata: the topic may have been created just now
            partitions = sorted(consumer.partitions_for_topic(transaction.checkpoint_topic) or [0])
            partition = TopicPartition(
                transaction.checkpoint_topic, kafka_partition(transaction.checkpoint_key, partitions)
            )
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            latest: bytes | None = None
            while await consumer.position(partition) < end:
                batches = await consumer.getmany(partition, timeout_ms=1000)
                for record in batches.get(partition, []):
                    if record.key == transaction.checkpoint_key and record.value is not None:
                        latest = record.value
            return latest
        finally:
            await consumer.stop()
