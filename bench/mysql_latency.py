"""Scenario `mysql-latency`: the MariaDB half of `bench.latency` (its table, its writer, its clock).

MariaDB's binlog gives a transaction's time in whole seconds only (`source.commitTime` is that),
far too coarse for latencies of milliseconds. So the row carries its own: `written_at
timestamp(6) DEFAULT CURRENT_TIMESTAMP(6)`, the start of the INSERT statement, with
microseconds. Each transaction is that one statement (autocommit), which commits right after it:
the figure is from a moment just before the commit (by the statement's own duration, well under
a millisecond for these rows) to Kafka, so it overstates the latency slightly, never understates
it. The worker starts as a fresh pipeline does, at the server's current position, before the
first write.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from bench.latency import Backend, Insert
from bench.mysql_workload import MysqlTarget
from deltaforge.sources.mysql.config import derive_server_id
from hack.stack.config import Settings

TABLE = """
CREATE TABLE steady (
    id bigint PRIMARY KEY,
    qty int,
    note varchar(255),
    amount decimal(12, 2),
    written_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)
"""
# The bounds are integers we format ourselves (the sequence engine's table names hold them).
INSERT = (
    "INSERT INTO steady (id, qty, note, amount) "
    "SELECT seq, seq % 100, CONCAT('note ', seq), seq * 0.01 FROM seq_{first}_to_{last}"
)


class MysqlLatency(Backend):
    name = "mysql-latency"
    database = "MariaDB"
    written = "row write time, written_at"

    def prepare(self, settings: Settings, name: str) -> None:
        target = MysqlTarget(port=settings.mariadb_port)
        with target.admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        with target.admin(name) as connection, connection.cursor() as cursor:
            cursor.execute(TABLE)

    def drop(self, settings: Settings, name: str) -> None:
        with MysqlTarget(port=settings.mariadb_port).admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def source(self, settings: Settings, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        target = MysqlTarget(port=settings.mariadb_port)
        return target.worker_source([f"{name}.steady"], derive_server_id("bench", name)), target.secrets

    @contextmanager
    def writer(self, settings: Settings, name: str) -> Iterator[Insert]:
        target = MysqlTarget(port=settings.mariadb_port)
        with target.admin(name, autocommit=True) as connection, connection.cursor() as cursor:

            def insert(first: int, last: int) -> None:
                cursor.execute(INSERT.format(first=first, last=last))

            yield insert

    def written_ms(self, event: dict[str, Any]) -> float:
        return datetime.fromisoformat(event["after"]["written_at"]).timestamp() * 1000
