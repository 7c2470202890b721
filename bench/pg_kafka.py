"""Scenario `pg-kafka`: PostgreSQL -> Kafka, the worker against pg_recvlogical on one change set.

1. A fresh database with a narrow table, a publication and one slot per contender at one
   position; then `rows` inserts in transactions of `tx_rows`, before any reader starts.
2. The contenders one after the other, each on its own slot: pg_recvlogical (decode and
   discard: the ceiling), then the worker (decode, convert, encode, produce to Kafka with zstd, the default).
3. A table and the ratio worker/pg_recvlogical, printed and written as JSON to bench/results/.
4. Slots, publication, database and topic are dropped whatever happened.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench import recvlogical, report, worker
from bench.measurement import Measurement
from bench.scenario import Options, Scenario, Target
from bench.workload import PgTarget, PgWorkload, drop, prepare, walsender
from hack.stack.config import HOST, Settings

TARGET_EVENTS_PER_SECOND = 30_000  # the worker's goal, end to end, on this workload


class PgKafka(Scenario[PgWorkload]):
    name = "pg-kafka"
    reference = recvlogical.NAME
    server_title = "walsender (server-side decoding)"
    service = "postgres"

    def unreachable(self, settings: Settings) -> str | None:
        try:
            psycopg.connect(_target(settings).dsn(), connect_timeout=5).close()
        except psycopg.Error as error:
            return f"PostgreSQL at {HOST}:{settings.postgres_port} is not reachable ({error})"
        return None

    def prepare(self, settings: Settings, name: str, options: Options) -> PgWorkload:
        return prepare(
            _target(settings),
            name=name,
            contenders=list(options.contenders),
            rows=options.rows,
            tx_rows=options.tx_rows,
        )

    def written(self, workload: PgWorkload) -> str:
        return (
            f"written in {workload.write_seconds:.1f} s: {workload.transactions} transactions, "
            f"{workload.wal_bytes / 2**20:.1f} MiB of WAL, {workload.start_lsn} .. {workload.end_lsn}"
        )

    def drop(self, settings: Settings, name: str) -> None:
        drop(_target(settings), name, name)

    def run_reference(
        self, settings: Settings, workload: PgWorkload, *, log_path: Path, timeout: float
    ) -> Measurement:
        return recvlogical.run(workload, log_path=log_path, timeout=timeout)

    def worker_source(self, settings: Settings, workload: PgWorkload) -> worker.Source:
        target, slot = workload.target, workload.slots[worker.NAME]
        return worker.Source(
            scenario=self.name,
            spec={
                "postgres": {
                    "host": target.host,
                    "port": target.port,
                    "database": workload.database,
                    "user": target.cdc_user,
                    "password": "${PG_PASSWORD}",
                    "sslMode": "disable",
                    "tables": [workload.table],
                    "slot": {"name": slot, "create": False},
                    "publication": {"name": workload.publication, "create": False},
                }
            },
            rows=workload.rows,
            server=lambda: walsender(target, slot, interval=1.0),
            server_name=recvlogical.SERVER_NAME,
            env={"PG_PASSWORD": target.cdc_password},
        )

    def target(self, measurements: list[Measurement]) -> Target:
        ours = report.find(measurements, worker.NAME)
        rate = 0.0 if ours is None else ours.events_per_second
        return Target(
            goal=f"{TARGET_EVENTS_PER_SECOND:,} events/s end to end",
            met=rate >= TARGET_EVENTS_PER_SECOND,
            measured=f"{rate:,.0f}/s",
            document={"eventsPerSecond": TARGET_EVENTS_PER_SECOND},
        )


def _target(settings: Settings) -> PgTarget:
    return PgTarget(port=settings.postgres_port)
