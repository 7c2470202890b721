"""The MariaDB side of a benchmark: a fresh database, the table of a shape, and where its changes lie.

A binlog has no slot that holds a position per reader, so the position is taken before the first
row is written, by the source's own preflight (`facts.current`: exactly the point a fresh
pipeline would start from and checkpoint). Every contender then reads from that point: the
decode-only reader with its GTID state, the worker from a checkpoint file holding it. The end is
the GTID of the last transaction written (`@@last_gtid`, this session's own), so another client
writing to the shared server meanwhile neither shortens nor lengthens the change set. All rows
are written (in transactions of `tx_rows`) before any reader starts, so readers measure
catch-up throughput, not the writer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from bench.shapes import TABLE, Shape
from bench.workload import described
from deltaforge.sources.mysql.config import MysqlSettings, MysqlSourceConfig, derive_server_id
from deltaforge.sources.mysql.position import BinlogPosition
from deltaforge.sources.mysql.preflight import preflight
from deltaforge.sources.patterns import TablePatterns
from hack.stack.config import (
    HOST,
    MYSQL_ADMIN_PASSWORD,
    MYSQL_ADMIN_USER,
    MYSQL_CDC_PASSWORD,
    MYSQL_CDC_USER,
)

HEARTBEAT_SECONDS = 10.0  # spec.source.mysql.heartbeat.interval's default: what the worker runs with
# Statements sent in one round trip (a multi-statement query): with autocommit each INSERT is a
# transaction of its own, so 1-row transactions are not bound by round trips (about 3k/s here:
# the server's commits are the limit then, not the client).
STATEMENTS_PER_TRIP = 1000


@dataclass(frozen=True)
class MysqlTarget:
    """Where the MariaDB server is, and the credentials the stack gives it."""

    port: int
    host: str = HOST
    admin_user: str = MYSQL_ADMIN_USER
    admin_password: str = MYSQL_ADMIN_PASSWORD
    cdc_user: str = MYSQL_CDC_USER
    cdc_password: str = MYSQL_CDC_PASSWORD

    def admin(
        self, database: str | None = None, *, autocommit: bool = False
    ) -> pymysql.connections.Connection:
        """An admin session; with `autocommit` it takes several statements per query (the writer)."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.admin_user,
            password=self.admin_password,
            database=database,
            init_command="SET time_zone = '+00:00'",
            connect_timeout=5,
            autocommit=autocommit,
            client_flag=CLIENT.MULTI_STATEMENTS if autocommit else 0,
        )

    def worker_source(self, tables: list[str], server_id: int) -> dict[str, Any]:
        """The worker's `spec.source` on this server as the CDC user, its password in
        `${MYSQL_PASSWORD}` (`secrets`)."""
        return {
            "mysql": {
                "host": self.host,
                "port": self.port,
                "user": self.cdc_user,
                "password": "${MYSQL_PASSWORD}",
                "sslMode": "disable",
                "tables": tables,
                "serverId": server_id,
            }
        }

    @property
    def secrets(self) -> dict[str, str]:
        return {"MYSQL_PASSWORD": self.cdc_password}

    def source_config(self, database: str, *, reader: str) -> MysqlSourceConfig:
        """The source's configuration for the benchmark table, as the worker builds it from its
        manifest; `reader` names the contender, whose replica server_id derives from it."""
        return MysqlSourceConfig(
            settings=MysqlSettings(
                host=self.host,
                port=self.port,
                user=self.cdc_user,
                password=self.cdc_password,
                ssl_mode="disable",
            ),
            patterns=TablePatterns([f"{database}.{TABLE}"]),
            server_id=derive_server_id("bench", f"{database}-{reader}"),
            heartbeat_interval=HEARTBEAT_SECONDS,
            pipeline=f"bench/{database}",
        )


@dataclass
class MysqlWorkload:
    """A prepared change set: `rows` inserts in `transactions` transactions, from `start` up to
    and including the transaction `end_gtid`."""

    target: MysqlTarget
    database: str
    rows: int
    tx_rows: int
    shape: Shape
    start: BinlogPosition
    transactions: int = 0
    end_gtid: str = ""
    end_file: str = ""
    end_offset: int = 0
    binlog_bytes: int = 0
    write_seconds: float = 0.0
    server_version: str = ""

    @property
    def table(self) -> str:
        return f"{self.database}.{TABLE}"

    def as_json(self) -> dict[str, object]:
        return described(
            self,
            columns=self.shape.described(),
            positions={
                "start": self.start.format(),
                "endGtid": self.end_gtid,
                "end": f"{self.end_file}:{self.end_offset}",
                "binlogBytes": self.binlog_bytes,
            },
        )


def prepare(target: MysqlTarget, *, name: str, rows: int, tx_rows: int, shape: str) -> MysqlWorkload:
    """Database and table, the start position (read as a fresh pipeline reads it), then the rows."""
    with target.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
        cursor.execute("SELECT @@version")
        version = str(cursor.fetchone()[0])
    chosen = Shape.of(shape, mysql=True)
    with target.admin(name) as connection, connection.cursor() as cursor:
        cursor.execute(chosen.create_table())
    facts = preflight(target.source_config(name, reader="preflight"), None)
    if not facts.mariadb:
        raise RuntimeError(
            f"the server at {target.host}:{target.port} is {facts.version}; this scenario needs MariaDB"
        )
    workload = MysqlWorkload(
        target=target,
        database=name,
        rows=rows,
        tx_rows=tx_rows,
        shape=chosen,
        start=facts.current,
        server_version=version,
    )
    # The sequence engine's seq_<a>_to_<b> tables generate the row numbers; we format the bounds.
    insert = chosen.insert(number="seq", source="seq_{first}_to_{last}")
    statements = [
        insert.format(first=first_id, last=min(first_id + tx_rows - 1, rows))
        for first_id in range(1, rows + 1, tx_rows)
    ]
    started = time.perf_counter()
    with target.admin(name, autocommit=True) as writer, writer.cursor() as cursor:
        for start in range(0, len(statements), STATEMENTS_PER_TRIP):
            trip = statements[start : start + STATEMENTS_PER_TRIP]
            cursor.execute(";\n".join(trip))
            while cursor.nextset():  # one result per statement; each must be read
                pass
            workload.transactions += len(trip)
        cursor.execute("SELECT @@last_gtid")
        workload.end_gtid = str(cursor.fetchone()[0])
        cursor.execute("SHOW MASTER STATUS")
        workload.end_file, end_offset = cursor.fetchone()[:2]
        workload.end_offset = int(end_offset)
        cursor.execute("SHOW BINARY LOGS")
        sizes = {str(log): int(size) for log, size, *_ in cursor.fetchall()}
    workload.write_seconds = time.perf_counter() - started
    workload.binlog_bytes = _bytes_between(sizes, workload.start, workload.end_file, workload.end_offset)
    return workload


def _bytes_between(sizes: dict[str, int], start: BinlogPosition, end_file: str, end_offset: int) -> int:
    """Binlog bytes from `start` to `end_file:end_offset`, across files (names sort in order);
    another client's writes in between are counted too."""
    if start.file == end_file:
        return end_offset - start.offset
    between = sum(size for log, size in sizes.items() if start.file <= log < end_file)
    return between - start.offset + end_offset


def drop(target: MysqlTarget, database: str) -> None:
    with target.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
