"""Scenario `mysql-kafka`: MariaDB -> Kafka, the worker against mysql-replication and Debezium on one change set.

1. A fresh database with the table of `--shape` (bench.shapes); the binlog position a fresh
   pipeline would start from; then `rows` inserts in transactions of `tx_rows`, before any
   reader starts.
2. The contenders one after the other, all from that position: mysql-replication decoding
   every row and discarding it (the ceiling of a worker built on the library), the worker
   (decode, convert, encode, produce to Kafka with zstd, the default), started from a checkpoint
   that holds the position, then Debezium's embedded engine (its MySQL connector, reading
   MariaDB's binlog from the same file and offset, into Kafka).
3. A table and the ratios worker/mysql-replication and worker/Debezium, printed and written as
   JSON to bench/results/. Targets: the worker reaches at least 90 % of the ceiling's
   throughput, and 1.2x Debezium's.
4. The database and the topics are dropped whatever happened.
"""

from __future__ import annotations

from pathlib import Path

import pymysql

from bench import debezium_engine, delivery, mysql_replication, worker
from bench.measurement import Measurement
from bench.mysql_workload import MysqlTarget, MysqlWorkload, drop, prepare
from bench.procstat import CpuSpan
from bench.scenario import Options, Scenario, Target, ceiling_target
from hack.stack.config import HOST, Settings
from hack.stack.mariadb import MariaDB

TARGET_THROUGHPUT_RATIO = 0.9  # the worker's goal: this share of the decode-only ceiling's events/s
TARGET_DEBEZIUM_RATIO = 1.2  # and against Debezium: this multiple of its events/s (issue 8)


class MysqlKafka(Scenario[MysqlWorkload]):
    name = "mysql-kafka"
    reference = mysql_replication.NAME
    server_title = "mariadbd (the whole server while each contender ran)"
    service = "mariadb"
    debezium_target = TARGET_DEBEZIUM_RATIO

    def unreachable(self, settings: Settings) -> str | None:
        try:
            _target(settings).admin().close()
        except pymysql.Error as error:
            return f"MariaDB at {HOST}:{settings.mariadb_port} is not reachable ({error})"
        return None

    def prepare(self, settings: Settings, name: str, options: Options) -> MysqlWorkload:
        return prepare(
            _target(settings), name=name, rows=options.rows, tx_rows=options.tx_rows, shape=options.shape
        )

    def written(self, workload: MysqlWorkload) -> str:
        return (
            f"written in {workload.write_seconds:.1f} s: {workload.transactions} transactions, "
            f"{workload.binlog_bytes / 2**20:.1f} MiB of binlog, {workload.start.format()} .. {workload.end_gtid}"
        )

    def drop(self, settings: Settings, name: str) -> None:
        drop(_target(settings), name)

    def run_reference(
        self, settings: Settings, workload: MysqlWorkload, *, log_path: Path, timeout: float
    ) -> Measurement:
        return mysql_replication.run(
            workload, server_pid=_server_pid(settings), log_path=log_path, timeout=timeout
        )

    def worker_source(self, settings: Settings, workload: MysqlWorkload) -> worker.Source:
        target = workload.target
        config = target.source_config(workload.database, reader=worker.NAME)
        return worker.Source(
            scenario=self.name,
            spec=target.worker_source([workload.table], config.server_id),
            change_set=_change_set(settings, workload),
            env=target.secrets,
            start=workload.start.format(),
        )

    def debezium_connector(self, settings: Settings, workload: MysqlWorkload) -> debezium_engine.Connector:
        """Debezium's MySQL connector on MariaDB (its MariaDB connector is not served here), with
        the harness's JDBC driver, which translates the one status statement MariaDB names
        differently (MariaDbDriver.java).

        It starts from the workload's start position as binlog file and offset, written to its
        offset file before it starts; its `recovery` snapshot reads the table's structure (which
        no binlog event after that position describes) into its schema history, then streams from
        that offset.
        """
        target = workload.target
        config = target.source_config(workload.database, reader=debezium_engine.NAME)
        return debezium_engine.Connector(
            properties={
                **debezium_engine.connection(
                    "io.debezium.connector.mysql.MySqlConnector", target, topic_prefix=workload.database
                ),
                "database.server.id": str(config.server_id),
                "database.ssl.mode": "disabled",
                "database.jdbc.driver": debezium_engine.MARIADB_DRIVER,
                "database.include.list": workload.database,
                "table.include.list": workload.table,
                "snapshot.mode": "recovery",
                "snapshot.locking.mode": "none",  # no DDL runs during the benchmark
                "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
                "schema.history.internal.file.filename": "schema-history.dat",
                # the shared server holds other databases: record (and read) only this table
                "schema.history.internal.store.only.captured.databases.ddl": "true",
                "schema.history.internal.store.only.captured.tables.ddl": "true",
                "include.schema.changes": "false",
            },
            change_set=_change_set(settings, workload),
            start={
                "partition": {"server": workload.database},  # the source partition: topic.prefix
                "offset": {"file": workload.start.file, "pos": workload.start.offset},
            },
        )

    def target(self, measurements: list[Measurement]) -> Target:
        return ceiling_target(measurements, self.reference, TARGET_THROUGHPUT_RATIO)


def _target(settings: Settings) -> MysqlTarget:
    return MysqlTarget(port=settings.mariadb_port)


def _change_set(settings: Settings, workload: MysqlWorkload) -> delivery.ChangeSet:
    server_pid = _server_pid(settings)
    return delivery.ChangeSet(
        rows=workload.rows,
        server=lambda: CpuSpan(server_pid),
        server_name=mysql_replication.SERVER_NAME,
    )


def _server_pid(settings: Settings) -> int | None:
    """The local stack's mariadbd: it serves the binlog from a thread per reader, so its whole CPU
    over a contender's run is the server-side figure (on a quiet stack, nearly all of it is the
    binlog dump)."""
    server = MariaDB(settings)
    return server.pid() if server.running() else None
