"""Scenario `mysql-kafka`: MariaDB -> Kafka, the worker against mysql-replication on one change set.

1. A fresh database with a narrow table; the binlog position a fresh pipeline would start from;
   then `rows` inserts in transactions of `tx_rows`, before any reader starts.
2. The contenders one after the other, both from that position: mysql-replication decoding
   every row and discarding it (the ceiling of a worker built on the library), then the worker
   (decode, convert, encode, produce to Kafka with zstd, the default), started from a checkpoint
   that holds the position.
3. A table and the ratio worker/mysql-replication, printed and written as JSON to bench/results/.
   The target: the worker reaches at least 80 % of the ceiling's throughput.
4. The database and the topic are dropped whatever happened.
"""

from __future__ import annotations

from pathlib import Path

import pymysql

from bench import mysql_replication, report, worker
from bench.measurement import Measurement
from bench.mysql_workload import MysqlTarget, MysqlWorkload, drop, prepare
from bench.procstat import CpuSpan
from bench.scenario import Options, Scenario, Target
from hack.stack.config import HOST, Settings
from hack.stack.mariadb import MariaDB

TARGET_THROUGHPUT_RATIO = 0.8  # the worker's goal: this share of the decode-only ceiling's events/s


class MysqlKafka(Scenario[MysqlWorkload]):
    name = "mysql-kafka"
    reference = mysql_replication.NAME
    server_title = "mariadbd (the whole server while each contender ran)"
    service = "mariadb"

    def unreachable(self, settings: Settings) -> str | None:
        try:
            _target(settings).admin().close()
        except pymysql.Error as error:
            return f"MariaDB at {HOST}:{settings.mariadb_port} is not reachable ({error})"
        return None

    def prepare(self, settings: Settings, name: str, options: Options) -> MysqlWorkload:
        return prepare(_target(settings), name=name, rows=options.rows, tx_rows=options.tx_rows)

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
        server_pid = _server_pid(settings)
        config = target.source_config(workload.database, reader=worker.NAME)
        return worker.Source(
            scenario=self.name,
            spec={
                "mysql": {
                    "host": target.host,
                    "port": target.port,
                    "user": target.cdc_user,
                    "password": "${MYSQL_PASSWORD}",
                    "sslMode": "disable",
                    "tables": [workload.table],
                    "serverId": config.server_id,
                }
            },
            rows=workload.rows,
            server=lambda: CpuSpan(server_pid),
            server_name=mysql_replication.SERVER_NAME,
            env={"MYSQL_PASSWORD": target.cdc_password},
            start=workload.start.format(),
        )

    def target(self, measurements: list[Measurement]) -> Target:
        ratio = report.ratios(measurements, worker.NAME, self.reference)
        ours = report.find(measurements, worker.NAME)
        throughput = None if ratio is None else ratio["throughput"]
        rate = "" if ours is None else f" at {ours.events_per_second:,.0f}/s"
        return Target(
            goal=f"{TARGET_THROUGHPUT_RATIO:.0%} of the {self.reference} ceiling",
            met=throughput is not None and throughput >= TARGET_THROUGHPUT_RATIO,
            measured=("ceiling not measured" if throughput is None else f"{throughput:.0%}") + rate,
            document={"throughputRatio": TARGET_THROUGHPUT_RATIO, "measured": throughput},
        )


def _target(settings: Settings) -> MysqlTarget:
    return MysqlTarget(port=settings.mariadb_port)


def _server_pid(settings: Settings) -> int | None:
    """The local stack's mariadbd: it serves the binlog from a thread per reader, so its whole CPU
    over a contender's run is the server-side figure (on a quiet stack, nearly all of it is the
    binlog dump)."""
    server = MariaDB(settings)
    return server.pid() if server.running() else None
