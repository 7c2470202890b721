"""Scenario `pg-redis`: PostgreSQL -> Redis Streams, the worker against pg_recvlogical on one change set.

The same workload, reference and reporting as `pg-kafka` (`PgScenario`); only the worker's sink
differs: its Redis sink appends every change, in the native envelope, to one fresh stream (XADD,
pipelined per batch) on the local Redis. The worker is timed from spawn until the stream's XLEN
reaches the row count, start-up included; then SIGTERM, exit 0, exactly the row count in the
stream. Debezium does not run here: its harness writes to Kafka only. Target: 80,000 events/s
end to end. The stream, its dead-letter stream, the slots, the publication and the database are
deleted whatever happened.
"""

from __future__ import annotations

from bench import delivery, recvlogical, worker
from bench.measurement import Measurement
from bench.pg_kafka import PgScenario
from bench.redis_stream import Stream, unreachable
from bench.scenario import Options, Target, rate_target
from hack.stack.config import Settings
from hack.stack.redis import Redis

TARGET_EVENTS_PER_SECOND = 80_000  # the worker's goal into Redis, end to end (issue 8)


class PgRedis(PgScenario):
    name = "pg-redis"
    sink_service = "redis"
    debezium_target = 0.0  # no Debezium contender

    @property
    def contenders(self) -> tuple[str, ...]:
        return (recvlogical.NAME, worker.NAME)

    def sink_unreachable(self, settings: Settings) -> str | None:
        return unreachable(settings.redis_url())

    def destination(
        self, settings: Settings, name: str, contender: str, options: Options
    ) -> delivery.Destination:
        server = Redis(settings)
        return Stream(
            url=settings.redis_url(),
            name=name,
            timeout=options.timeout,
            broker_pid=server.pid() if server.running() else None,
        )

    def target(self, measurements: list[Measurement]) -> Target:
        return rate_target(measurements, TARGET_EVENTS_PER_SECOND, "Postgres -> Redis")
