"""Scenario `pg-kafka`: PostgreSQL -> Kafka, the worker against pg_recvlogical and Debezium on one change set.

1. A fresh database with the table of `--shape` (bench.shapes), a publication and one slot per
   contender at one position; then `rows` inserts in transactions of `tx_rows`, before any
   reader starts.
2. The contenders one after the other, each on its own slot: pg_recvlogical (decode and
   discard: the ceiling), the worker (decode, convert, encode, produce to Kafka with zstd, the
   default), then Debezium's embedded engine (its PostgreSQL connector, pgoutput, into Kafka).
3. A table and the ratios worker/pg_recvlogical and worker/Debezium, printed and written as JSON
   to bench/results/. Targets: at least 35 % of pg_recvlogical's events/s, and 1.5x Debezium's.
4. Slots, publication, database and topics are dropped whatever happened.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from bench import debezium_engine, delivery, recvlogical, worker
from bench.measurement import Measurement
from bench.scenario import Options, Scenario, Target, ceiling_target
from bench.workload import PgTarget, PgWorkload, drop, prepare, walsender
from hack.stack.config import HOST, Settings

TARGET_THROUGHPUT_RATIO = 0.35  # the worker's goal: this share of pg_recvlogical's events/s (issue 8)
TARGET_DEBEZIUM_RATIO = 1.5  # and against Debezium: this multiple of its events/s


class PgScenario(Scenario[PgWorkload]):
    """What every PostgreSQL scenario shares, whatever the worker's sink: the workload (one slot
    per contender), pg_recvlogical as the reference and the worker's source; `pg-redis` reuses it."""

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
            shape=options.shape,
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
            spec=target.worker_source(workload.database, workload.table, slot, workload.publication),
            change_set=_change_set(workload, worker.NAME),
            env=target.secrets,
        )


class PgKafka(PgScenario):
    name = "pg-kafka"
    debezium_target = TARGET_DEBEZIUM_RATIO

    def debezium_connector(self, settings: Settings, workload: PgWorkload) -> debezium_engine.Connector:
        """Its own copied slot, so it starts where the others start; no snapshot, only the stream."""
        target = workload.target
        return debezium_engine.Connector(
            properties={
                **debezium_engine.connection(
                    "io.debezium.connector.postgresql.PostgresConnector",
                    target,
                    topic_prefix=workload.database,
                ),
                "database.dbname": workload.database,
                "table.include.list": workload.table,
                "plugin.name": "pgoutput",
                "slot.name": workload.slots[debezium_engine.NAME],
                "publication.name": workload.publication,
                "publication.autocreate.mode": "disabled",
                "snapshot.mode": "no_data",
                # Logical decoding messages are no table changes; the worker, which runs before,
                # writes its heartbeats as such in this database (and drops its own).
                "message.prefix.exclude.list": ".*",
            },
            change_set=_change_set(workload, debezium_engine.NAME),
        )

    def target(self, measurements: list[Measurement]) -> Target:
        return ceiling_target(measurements, self.reference, TARGET_THROUGHPUT_RATIO)


def _target(settings: Settings) -> PgTarget:
    return PgTarget(port=settings.postgres_port)


def _change_set(workload: PgWorkload, contender: str) -> delivery.ChangeSet:
    """The change set as `contender` reads it from its own slot, with the walsender serving it."""
    target, slot = workload.target, workload.slots[contender]
    return delivery.ChangeSet(
        rows=workload.rows,
        server=lambda: walsender(target, slot, interval=1.0),
        server_name=recvlogical.SERVER_NAME,
    )
