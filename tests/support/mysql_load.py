"""MySQL/MariaDB pipelines in tests: manifests, a steady write load, and the delivery check.

The load commits small transactions from a background thread while faults are injected. Rows
follow one contract: a key `id` that only grows, and a `version` that is 0 on insert and
incremented by each update, so every version a row went through follows from its final state,
without a log of what the writer did. `check_delivery` then proves: nothing committed is missing,
a duplicate is a re-delivery (same event_id, same bytes), and each row's changes arrive in order.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from aiokafka import ConsumerRecord

from deltaforge.sources.mysql.position import BinlogPosition
from tests.fixtures.data_stack import MysqlDatabase
from tests.support.faults import BATCH_EVENTS, fail, kafka_sink
from tests.support.load import LoadTarget
from tests.support.verify import Positions
from tests.support.worker import Worker, start_worker


def mysql_manifest(
    database: MysqlDatabase,
    bootstrap: str,
    topic_prefix: str,
    *,
    tables: list[str],
    user: str | None = None,
    server_id: int | None = None,
) -> dict[str, Any]:
    source: dict[str, Any] = {
        "host": database.host,
        "port": database.port,
        "user": user or database.cdc_user,
        "password": "${MYSQL_PASSWORD}",
        "sslMode": "disable",
        "tables": tables,
        "heartbeat": {"interval": "1s"},
    }
    if server_id is not None:
        source["serverId"] = server_id
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": database.name.replace("_", "-"), "namespace": "tests"},
        "spec": {
            "source": {"mysql": source},
            "sinks": [{"name": "events", **kafka_sink(bootstrap, topic_prefix)}],
            "batch": {"maxEvents": BATCH_EVENTS, "maxDelay": "20ms"},
            "checkpoint": {"file": {"path": "checkpoint.json"}},
        },
    }


def mariadb_target(database: MysqlDatabase) -> LoadTarget:
    """`database` for `tests.support.load.LoadWriter` (which needs transactions: autocommit off)."""

    def connect() -> pymysql.connections.Connection:
        connection = database.admin_connection()
        connection.autocommit(False)
        return connection

    return LoadTarget(
        connect=connect,
        quote=lambda name: "`" + name.replace("`", "``") + "`",
        lost=(pymysql.err.OperationalError, pymysql.err.InterfaceError),
    )


_GTID = re.compile(r"gtid=(\d+)-\d+-(\d+);")


def _gtid_order(position: str) -> tuple[int, int]:
    """(domain, sequence number) of a MariaDB event position ("gtid=0-1-42;prior=...;binlog=..."):
    one server's binlog in commit order, since the sequence only grows within a domain."""
    found = _GTID.match(position)
    if found is None:
        raise ValueError(f"not a MariaDB GTID position: {position!r}")
    return int(found.group(1)), int(found.group(2))


def _commit_identity(position: str) -> str:
    return BinlogPosition.parse(position).identity


# Event ids derive from the transaction's GTID alone (its binlog file and offset without GTIDs),
# not from the whole position string: `BinlogPosition.identity`.
MARIADB_POSITIONS = Positions(order=_gtid_order, identity=_commit_identity)


def wait_for_checkpoint(worker: Worker, path: Path, timeout: float = 30) -> None:
    """A worker without a checkpoint starts at the server's current position: writes made before
    that position is stored would not be captured, so tests write only after it is."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint within {timeout} s:\n{worker.log()[-3000:]}", pytrace=False)
        time.sleep(0.05)


def pin_start_position(
    manifest: Path, env: dict[str, str], stored: Callable[[Worker], None], log_name: str = "worker-pin.log"
) -> None:
    """Run a worker until `stored` says its first checkpoint is stored, then stop it (it must exit
    0): the writes of a test then begin after a stored position, so every one is captured even if
    the next worker is killed before it stores one of its own (see `wait_for_checkpoint`)."""
    worker = start_worker(manifest, env=env, log_name=log_name)
    try:
        worker.wait_ready(timeout=60)
        stored(worker)
    except BaseException:
        worker.kill()
        raise
    if (code := worker.stop(timeout=30)) != 0:
        fail(f"the worker that pinned the start position exited with {code} on SIGTERM", worker)


def create_load_tables(database: MysqlDatabase, tables: Sequence[str]) -> None:
    with database.admin_connection() as admin, admin.cursor() as cursor:
        for table in tables:
            cursor.execute(
                f"CREATE TABLE `{table}` (id bigint PRIMARY KEY, version int NOT NULL DEFAULT 0, payload varchar(64))"
            )


@dataclass
class MysqlLoad:
    """Commits transactions of 1-5 inserts and updates into `tables` until `stop()`."""

    database: MysqlDatabase
    tables: Sequence[str]
    pause: float = 0.005
    transactions: int = 0
    _next_id: int = 1
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mysql-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.error is not None:
            raise AssertionError(f"the load writer failed: {self.error!r}") from self.error

    def _run(self) -> None:
        chooser = random.Random(7)
        try:
            with self.database.admin_connection() as connection, connection.cursor() as cursor:
                cursor.execute("SET autocommit = 0")
                while not self._stop.is_set():
                    for _ in range(chooser.randint(1, 5)):
                        table = chooser.choice(self.tables)
                        if self._next_id > 3 and chooser.random() < 0.3:
                            key = chooser.randrange(1, self._next_id)
                            cursor.execute(f"UPDATE `{table}` SET version = version + 1 WHERE id = %s", [key])
                        else:
                            cursor.execute(
                                f"INSERT INTO `{table}` (id, payload) VALUES (%s, %s)",
                                [self._next_id, f"p{self._next_id}"],
                            )
                            self._next_id += 1
                    connection.commit()
                    self.transactions += 1
                    time.sleep(self.pause)
        except BaseException as error:
            self.error = error


def committed(database: MysqlDatabase, tables: Sequence[str]) -> dict[tuple[str, int], int]:
    """(table, id) -> final version of every committed row."""
    rows: dict[tuple[str, int], int] = {}
    with database.admin_connection() as connection, connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT id, version FROM `{table}`")
            for key, version in cursor.fetchall():
                rows[(table, int(key))] = int(version)
    return rows


def expected_changes(rows: dict[tuple[str, int], int]) -> int:
    return sum(version + 1 for version in rows.values())


@dataclass
class DeliveryReport:
    missing: list[str]
    bad_duplicates: list[str]
    out_of_order: list[str]
    duplicates: int
    distinct: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.bad_duplicates or self.out_of_order)

    def __str__(self) -> str:
        return (
            f"{self.distinct} distinct changes, {self.duplicates} re-deliveries; missing {len(self.missing)} "
            f"{self.missing[:10]}; bad duplicates {len(self.bad_duplicates)} {self.bad_duplicates[:5]}; "
            f"out of order {len(self.out_of_order)} {self.out_of_order[:5]}"
        )


def check_delivery(
    records: Sequence[ConsumerRecord[bytes, bytes]], rows: dict[tuple[str, int], int]
) -> DeliveryReport:
    """Compare what Kafka holds with the committed rows (see the module docstring)."""
    first_copy: dict[str, bytes] = {}
    seen: dict[tuple[str, int], list[int]] = defaultdict(list)
    bad: list[str] = []
    duplicates = 0
    for record in records:
        assert record.value is not None
        value = json.loads(record.value)
        headers = dict(record.headers)
        if headers.get("event_id", b"").decode() != value["id"]:
            bad.append(f"event_id header differs from the payload id at offset {record.offset}")
        earlier = first_copy.get(value["id"])
        if earlier is not None:
            duplicates += 1
            if earlier != record.value:
                bad.append(f"event {value['id']} delivered twice with different contents")
            continue
        first_copy[value["id"]] = record.value
        row = value["after"] or value["before"]
        seen[(value["source"]["table"], int(row["id"]))].append(int(row["version"]))
    missing, disorder = [], []
    for (table, key), final in sorted(rows.items()):
        versions = seen.get((table, key), [])
        if sorted(set(versions)) != list(range(final + 1)):
            missing.append(f"{table}#{key}: saw versions {versions}, committed up to {final}")
        elif versions != sorted(versions):
            disorder.append(f"{table}#{key}: versions arrived as {versions}")
        if len(versions) != len(set(versions)):
            bad.append(f"{table}#{key}: one version under two event ids: {versions}")
    return DeliveryReport(missing, bad, disorder, duplicates, len(first_copy))


def dump_threads(database: MysqlDatabase, user: str) -> list[int]:
    """The ids of `user`'s binlog dump connections (SHOW PROCESSLIST as admin)."""
    with database.admin_connection() as connection, connection.cursor() as cursor:
        cursor.execute("SHOW FULL PROCESSLIST")
        return [
            int(row[0])
            for row in cursor.fetchall()
            if row[1] == user and str(row[4]).startswith("Binlog Dump")
        ]


def kill(database: MysqlDatabase, thread_id: int) -> None:
    with database.admin_connection() as connection, connection.cursor() as cursor:
        try:
            cursor.execute(f"KILL {thread_id}")
        except pymysql.err.OperationalError as error:
            if error.args[0] != 1094:  # unknown thread: it is already gone
                raise
