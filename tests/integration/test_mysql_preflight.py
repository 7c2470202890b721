"""Every misconfiguration the MySQL/MariaDB source refuses, produced for real, and its message.

Server settings are changed on a throwaway MariaDB of this module's own (the shared server must
keep its row-based binlog for everyone else); users without grants and a competing reader with
our server_id use the shared server. Each message must name the setting and the fix.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader

from deltaforge.events import Checkpoint
from deltaforge.protocols import Item
from deltaforge.sources.errors import SourceConfigError
from deltaforge.sources.mysql.config import MysqlSettings, MysqlSourceConfig
from deltaforge.sources.mysql.preflight import preflight as run_preflight
from deltaforge.sources.mysql.source import MysqlSource
from deltaforge.sources.patterns import TablePatterns
from hack.stack.config import HOST
from tests.fixtures.data_stack import MysqlDatabase
from tests.support.mariadb_instance import MariaDbInstance, throwaway_mariadb
from tests.support.worker import free_port

LOG_BIN = {"log_bin": "mariadb-bin"}


class NullMetrics:
    def __init__(self) -> None:
        self.reconnects = 0

    def source_events(self, table: str, count: int = 1) -> None: ...

    def source_activity(self) -> None: ...

    def source_reconnect(self) -> None:
        self.reconnects += 1

    def set_source_lag(self, seconds: float) -> None: ...


def config(
    port: int, user: str, password: str, tables: list[str], *, server_id: int = 3_999_000_001
) -> MysqlSourceConfig:
    return MysqlSourceConfig(
        settings=MysqlSettings(HOST, port, user, password, ssl_mode="disable", connect_timeout=5),
        patterns=TablePatterns(tables),
        server_id=server_id,
        heartbeat_interval=1.0,
        pipeline="tests/preflight",
    )


async def refusal(
    source_config: MysqlSourceConfig,
    resume: Checkpoint | None = None,
    *,
    within: float = 60,
    preflight: bool = True,
) -> str:
    """The SourceConfigError the source stops with (in preflight: before it emits anything)."""
    emitted: list[Item] = []

    async def emit(items: list[Item]) -> None:
        emitted.extend(items)

    source = MysqlSource(source_config, resume=resume, metrics=NullMetrics(), log=lambda *_, **__: None)
    try:
        with pytest.raises(SourceConfigError) as raised:
            await asyncio.wait_for(source.run(emit), within)
    finally:
        await source.stop()
    if preflight:
        assert emitted == [], "a source refused in preflight must not emit anything"
    ok, reason = source.health()
    assert not ok
    assert reason == str(raised.value), "/readyz reports the same reason"
    return str(raised.value)


def purge_binlogs(cursor: pymysql.cursors.Cursor, keep: str) -> None:
    """PURGE BINARY LOGS TO `keep`; MariaDB keeps a file until its binlog checkpoint is written
    (asynchronously, after InnoDB flushed), so try again for a while."""
    deadline = time.monotonic() + 30
    while True:
        cursor.execute(f"PURGE BINARY LOGS TO '{keep}'")
        cursor.execute("SHOW BINARY LOGS")
        files = [row[0] for row in cursor.fetchall()]
        if files == [keep]:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"MariaDB did not purge its binlogs up to {keep}: {files}", pytrace=False)
        time.sleep(0.3)


@pytest.fixture(scope="module")
def instance() -> Iterator[MariaDbInstance]:
    with throwaway_mariadb(LOG_BIN) as started:
        yield started


def throwaway_config(instance: MariaDbInstance) -> MysqlSourceConfig:
    return config(instance.port, instance.user, instance.password, ["shop.orders"])


@pytest.mark.parametrize(
    ("variable", "bad", "good", "fix"),
    [
        ("binlog_format", "STATEMENT", "ROW", "SET GLOBAL binlog_format = 'ROW'"),
        ("binlog_format", "MIXED", "ROW", "SET GLOBAL binlog_format = 'ROW'"),
        ("binlog_row_image", "MINIMAL", "FULL", "SET GLOBAL binlog_row_image = 'FULL'"),
        ("binlog_row_metadata", "MINIMAL", "FULL", "SET GLOBAL binlog_row_metadata = 'FULL'"),
        ("log_bin_compress", "ON", "OFF", "SET GLOBAL log_bin_compress = OFF"),
    ],
)
async def test_bad_binlog_settings_are_refused_with_the_fix(
    instance: MariaDbInstance, variable: str, bad: str, good: str, fix: str
) -> None:
    with instance.root() as root, root.cursor() as cursor:
        cursor.execute(f"SET GLOBAL {variable} = '{bad}'")
        try:
            message = await refusal(throwaway_config(instance))
        finally:
            cursor.execute(f"SET GLOBAL {variable} = '{good}'")
    assert variable in message
    assert fix in message
    assert "my.cnf" in message


async def test_a_purged_position_is_lost_never_skipped(instance: MariaDbInstance) -> None:
    with instance.root() as root, root.cursor() as cursor:
        cursor.execute("SELECT @@gtid_binlog_pos")
        (state,) = cursor.fetchone()
        cursor.execute("SHOW MASTER STATUS")
        file, offset = cursor.fetchone()[:2]
        cursor.execute("INSERT INTO shop.orders VALUES (1, 1)")
        cursor.execute("FLUSH BINARY LOGS")
        cursor.execute("INSERT INTO shop.orders VALUES (2, 2)")
        cursor.execute("SHOW MASTER STATUS")
        newest = cursor.fetchone()[0]
        purge_binlogs(cursor, newest)
        cursor.execute("SELECT @@gtid_binlog_pos")
        (current,) = cursor.fetchone()
    lost = Checkpoint(f"prior={state};at={file}:{offset}")
    message = await refusal(throwaway_config(instance), resume=lost)
    assert message.startswith("position lost, re-snapshot required")
    assert "delete the pipeline's checkpoint" in message
    # A checkpoint the server still has passes the same check.
    kept = Checkpoint(f"prior={current};at={newest}:4")
    facts = await asyncio.to_thread(run_preflight, throwaway_config(instance), None, kept.position)
    assert facts.mariadb


async def test_binlog_off_is_refused(instance: MariaDbInstance) -> None:
    instance.restart({})
    try:
        message = await refusal(throwaway_config(instance))
    finally:
        instance.restart(LOG_BIN)
    assert "log_bin=OFF" in message
    assert "set log_bin" in message


@pytest.fixture
def limited_user(mariadb_database: MysqlDatabase) -> Iterator[tuple[str, pymysql.connections.Connection]]:
    """A fresh user on the shared server; the test grants what it wants; dropped afterwards."""
    name = f"t_user_{uuid.uuid4().hex[:10]}"
    with mariadb_database.admin_connection() as admin:
        cursor = admin.cursor()
        cursor.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'pw'")
        cursor.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        try:
            yield name, admin
        finally:
            cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")


@pytest.mark.parametrize(
    ("grants", "missing"),
    [
        ("SELECT, BINLOG MONITOR", "REPLICATION SLAVE"),
        ("SELECT, REPLICATION SLAVE", "REPLICATION CLIENT (MariaDB: BINLOG MONITOR)"),
    ],
)
async def test_missing_grants_are_named(
    mariadb_database: MysqlDatabase,
    limited_user: tuple[str, pymysql.connections.Connection],
    grants: str,
    missing: str,
) -> None:
    name, admin = limited_user
    admin.cursor().execute(f"GRANT {grants} ON *.* TO '{name}'@'%'")
    message = await refusal(config(mariadb_database.port, name, "pw", [f"{mariadb_database.name}.orders"]))
    assert f"lacks {missing}" in message
    assert f"GRANT {missing.split(' (', maxsplit=1)[0]} ON *.* TO '{name}'@'%'" in message


async def test_wrong_password_and_unknown_tables_name_the_spec_fields(
    mariadb_database: MysqlDatabase,
) -> None:
    database = mariadb_database
    with database.admin_connection() as admin:
        admin.cursor().execute("CREATE TABLE orders (id int PRIMARY KEY)")
    wrong = await refusal(config(database.port, database.cdc_user, "wrong", [f"{database.name}.orders"]))
    assert "spec.source.mysql.password" in wrong
    missing = await refusal(
        config(database.port, database.cdc_user, database.cdc_password, [f"{database.name}.nope_*"])
    )
    assert f"'{database.name}.nope_*'" in missing
    assert "spec.source.mysql.tables" in missing


async def test_a_second_reader_with_our_server_id_is_fatal(mariadb_database: MysqlDatabase) -> None:
    database = mariadb_database
    with database.admin_connection() as admin:
        admin.cursor().execute("CREATE TABLE orders (id int PRIMARY KEY)")
        cursor = admin.cursor()
        cursor.execute("SELECT @@gtid_binlog_pos")
        (current,) = cursor.fetchone()
    server_id = 3_000_000_000 + uuid.uuid4().int % 1_000_000
    stop = threading.Event()

    def competitor() -> None:
        """Another replica with the same server_id that reconnects whenever it is pushed out."""
        while not stop.is_set():
            stream = BinLogStreamReader(
                connection_settings={
                    "host": database.host, "port": database.port, "user": database.cdc_user,
                    "password": database.cdc_password, "read_timeout": 5,
                },
                server_id=server_id, blocking=True, resume_stream=True, is_mariadb=True, auto_position=current,
                slave_heartbeat=1, enable_logging=False,
            )  # fmt: skip
            try:
                for _ in stream:
                    if stop.is_set():
                        break
            except Exception:  # pushed out by the source: come back, as a misconfigured replica does
                stop.wait(0.3)
            finally:
                stream.close()

    thread = threading.Thread(target=competitor, daemon=True)
    source_config = config(
        database.port, database.cdc_user, database.cdc_password, [f"{database.name}.*"], server_id=server_id
    )
    thread.start()
    try:
        message = await refusal(source_config, within=90, preflight=False)
    finally:
        stop.set()
        thread.join(15)
    assert f"server_id {server_id}" in message
    assert "spec.source.mysql.serverId" in message


async def test_an_unreachable_server_is_retried_not_fatal() -> None:
    source = MysqlSource(
        config(free_port(), "cdc", "cdc", ["shop.orders"]),
        resume=None,
        metrics=NullMetrics(),
        log=lambda *_, **__: None,
    )

    async def emit(items: list[Item]) -> None:
        raise AssertionError(f"nothing can be emitted without a server: {items}")

    task = asyncio.create_task(source.run(emit))
    await asyncio.sleep(2.0)
    assert not task.done(), "a server that is not up yet must be waited for, not fail the pipeline"
    ok, reason = source.health()
    assert not ok
    assert reason.startswith("connecting:")
    await source.stop()
    await asyncio.wait_for(task, 10)
