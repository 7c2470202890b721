"""The Kafka side of a benchmark: a fresh topic, and how many records it holds (its end offsets).

Counting by end offsets reads no record, so polling it costs the broker and this process almost
nothing while a contender runs. The worker's producer is idempotent but not transactional, so
the end offsets of a fresh topic are exactly the number of records written.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topic(
    bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    """A topic of `partitions` with one replica (the local stack has one broker) and `configs`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


class RecordCounter:
    """Sum of the end offsets of every partition of one topic."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions = [TopicPartition(topic, partition) for partition in range(partitions)]

    async def __aenter__(self) -> RecordCounter:
        await self._consumer.start()
        await self.count()  # metadata and connections now, not during the measurement
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def count(self) -> int:
        offsets = await self._consumer.end_offsets(self._partitions)
        return sum(offsets.values())
