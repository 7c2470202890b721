"""A real worker streams MariaDB binlog changes into Kafka: typed, in commit order, through DDL,
a killed binlog connection and repeated SIGKILLs of the worker itself.

The SIGKILL schedule is random; its seed is printed, and DELTAFORGE_FAULT_SEED replays a run."""

from __future__ import annotations

import base64
import random
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.stack.config import MYSQL_CDC_PASSWORD, Settings
from tests.fixtures.data_stack import MysqlDatabase, unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import assert_at_least_once, fault_topics, kafka_reader, storm_and_drain
from tests.support.load import LoadWriter
from tests.support.mysql_load import (
    MARIADB_POSITIONS,
    MysqlLoad,
    check_delivery,
    committed,
    create_load_tables,
    dump_threads,
    expected_changes,
    kill,
    mariadb_target,
    mysql_manifest,
    pin_start_position,
    wait_for_checkpoint,
)
from tests.support.worker import consume, running_worker, start_worker, values, write_manifest

ENV = {"MYSQL_PASSWORD": MYSQL_CDC_PASSWORD}
STORM_KILLS = 20
STORM_TABLES = ("load_a", "load_b")

SCHEMA = [
    """CREATE TABLE orders (
        id bigint unsigned PRIMARY KEY, ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned,
        mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint, d decimal(30,10), f float,
        db double, c char(5), vc varchar(300), tx text, bn binary(4), vb varbinary(10), bl blob, dt date,
        tm time(3), dtt datetime(6), ts timestamp(6) NULL, y year, e enum('new','paid','shipped'),
        s set('gift','rush','fragile'), j json, b1 bit(1), b10 bit(10))""",
    "CREATE TABLE order_items (order_id bigint, line int, sku varchar(20), PRIMARY KEY (order_id, line))",
    "CREATE TABLE order_log (id int PRIMARY KEY, note text) ENGINE=MyISAM",
    "CREATE TABLE invoices (id int PRIMARY KEY, total int)",
]
FULL_ROW = (
    "INSERT INTO orders VALUES (18446744073709551615, -128, 255, -32768, 65535, -8388608, 16777215, "
    "-2147483648, 4294967295, -9223372036854775808, '-12345678901234567890.0123456789', 1.1, 2.2, 'ab', "
    "'héllo wörld', 'text', x'0102', x'00ff', x'deadbeef', '2024-02-29', '-838:59:59.123', "
    "'2024-03-01 10:00:00.5', '2024-03-01 10:00:00.25', 2155, 'new', '', '{\"vip\": true, \"n\": [1, 2]}', "
    "b'1', b'1010101010')"
)
EXPECTED_FULL_ROW = {
    "id": 18446744073709551615, "ti": -128, "tiu": 255, "si": -32768, "siu": 65535, "mi": -8388608,
    "miu": 16777215, "i": -2147483648, "iu": 4294967295, "bi": -9223372036854775808,
    "d": "-12345678901234567890.0123456789", "f": 1.1, "db": 2.2, "c": "ab", "vc": "héllo wörld", "tx": "text",
    "bn": base64.b64encode(b"\x01\x02\x00\x00").decode(), "vb": base64.b64encode(b"\x00\xff").decode(),
    "bl": base64.b64encode(b"\xde\xad\xbe\xef").decode(), "dt": "2024-02-29", "tm": "-838:59:59.123000",
    "dtt": "2024-03-01T10:00:00.500000", "ts": "2024-03-01T08:00:00.250000Z", "y": 2155, "e": "new", "s": "",
    "j": {"vip": True, "n": [1, 2]}, "b1": True, "b10": 682,
}  # fmt: skip


def metric(body: str, name: str) -> float:
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", body, re.MULTILINE)
    assert found is not None, f"{name} is not in /metrics"
    return float(found.group(1))


def test_changes_arrive_in_kafka_typed_in_commit_order_and_through_ddl(
    mariadb_database: MysqlDatabase, kafka_server: Settings, tmp_path: Path
) -> None:
    database = mariadb_database
    with database.admin_connection() as admin, admin.cursor() as cursor:
        for statement in SCHEMA:
            cursor.execute(statement)
    prefix = unique_name("my")
    manifest = mysql_manifest(
        database, kafka_server.kafka_bootstrap, prefix, tables=[f"{database.name}.order*"]
    )
    with running_worker(write_manifest(tmp_path, manifest), env=ENV) as worker:
        wait_for_checkpoint(worker, tmp_path / "checkpoint.json")
        with database.admin_connection() as writer, writer.cursor() as cursor:
            cursor.execute("SET time_zone = '+02:00'")  # TIMESTAMP must still arrive in UTC
            cursor.execute("BEGIN")
            cursor.execute(FULL_ROW)
            cursor.execute("INSERT INTO order_items VALUES (1, 1, 'sku-1'), (1, 2, 'sku-2')")
            cursor.execute("INSERT INTO invoices VALUES (1, 100)")  # not captured
            cursor.execute("COMMIT")
            cursor.execute("BEGIN")
            cursor.execute("INSERT INTO orders (id) VALUES (2)")
            cursor.execute("UPDATE orders SET e = 'paid', s = 'rush,gift' WHERE id = 18446744073709551615")
            cursor.execute("UPDATE order_items SET sku = 'sku-2b' WHERE order_id = 1 AND line = 2")
            cursor.execute("COMMIT")
            cursor.execute("ALTER TABLE orders ADD COLUMN note varchar(20) DEFAULT 'n/a'")
            cursor.execute("UPDATE orders SET note = 'late' WHERE id = 18446744073709551615")
            cursor.execute("DELETE FROM order_items WHERE order_id = 1 AND line = 1")
            cursor.execute("INSERT INTO order_log VALUES (1, 'non-transactional')")
            cursor.execute("DELETE FROM orders WHERE id = 2")
            cursor.execute("TRUNCATE TABLE order_items")
        order_records = consume(kafka_server.kafka_bootstrap, [f"{prefix}.orders"], 5)
        orders = values(order_records)
        items = values(consume(kafka_server.kafka_bootstrap, [f"{prefix}.order_items"], 5))
        log = values(consume(kafka_server.kafka_bootstrap, [f"{prefix}.order_log"], 1))
        status, body = worker.get("/metrics")
        assert status == 200

    assert [(event["op"], (event["after"] or event["before"])["id"]) for event in orders] == [
        ("c", 18446744073709551615), ("c", 2), ("u", 18446744073709551615), ("u", 18446744073709551615), ("d", 2),
    ]  # fmt: skip
    assert orders[0]["after"] == EXPECTED_FULL_ROW
    assert orders[0]["key"] == {"id": 18446744073709551615}
    assert order_records[0].key == b'{"id":18446744073709551615}', "the default Kafka key is the primary key"
    assert orders[1]["after"] == {name: None for name in EXPECTED_FULL_ROW} | {"id": 2}
    assert orders[2]["before"] == EXPECTED_FULL_ROW, "before images are full rows (binlog_row_image=FULL)"
    assert (orders[2]["after"]["e"], orders[2]["after"]["s"]) == ("paid", "gift,rush")
    # ALTER TABLE mid-stream: later rows carry the new column, earlier ones were decoded as they were.
    assert "note" not in orders[2]["after"]
    assert (orders[3]["before"]["note"], orders[3]["after"]["note"]) == ("n/a", "late")
    assert orders[3]["after"]["j"] == {"vip": True, "n": [1, 2]}
    assert orders[4]["before"]["note"] == "n/a"

    check_items_and_transactions(orders, items, log)
    assert dict(order_records[0].headers)["event_id"].decode() == orders[0]["id"]
    assert metric(body, "deltaforge_source_events_total") > 0
    assert 'table="' + database.name + '.orders"' in body


def check_items_and_transactions(
    orders: list[dict[str, Any]], items: list[dict[str, Any]], log: list[dict[str, Any]]
) -> None:
    assert [event["op"] for event in items] == ["c", "c", "u", "d", "t"]
    assert items[0]["key"] == {"order_id": 1, "line": 1}
    assert items[2]["before"]["sku"] == "sku-2"
    assert items[2]["after"]["sku"] == "sku-2b"
    assert items[4]["source"]["table"] == "order_items"
    assert items[4]["before"] is None
    assert [event["after"] for event in log] == [{"id": 1, "note": "non-transactional"}]

    # One transaction: one position (its GTID and the state before it), consecutive indexes, last flagged.
    first_tx = [orders[0], items[0], items[1]]
    assert len({event["source"]["position"] for event in first_tx}) == 1
    assert re.fullmatch(
        r"gtid=0-1-\d+;prior=[0-9,-]+;binlog=mariadb-bin\.\d+:\d+", orders[0]["source"]["position"]
    )
    assert [event["tx"] for event in first_tx] == [
        {"index": 0, "last": False}, {"index": 1, "last": False}, {"index": 2, "last": True},
    ]  # fmt: skip
    assert orders[0]["source"]["txId"] == orders[0]["source"]["position"].split(";")[0].removeprefix("gtid=")
    assert len({event["id"] for event in orders + items + log}) == 11


@pytest.fixture
def cdc_user(mariadb_database: MysqlDatabase) -> Iterator[str]:
    """A CDC user of this test's own, so its binlog connection is found in SHOW PROCESSLIST."""
    name = f"t_cdc_{uuid.uuid4().hex[:10]}"
    with mariadb_database.admin_connection() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{MYSQL_CDC_PASSWORD}'")
        cursor.execute(
            f"GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{name}'@'%'"
        )
        try:
            yield name
        finally:
            cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")


def test_a_killed_binlog_connection_reconnects_without_gap_or_replay(
    mariadb_database: MysqlDatabase, kafka_server: Settings, cdc_user: str, tmp_path: Path
) -> None:
    database, tables = mariadb_database, ("load_a", "load_b")
    create_load_tables(database, tables)
    prefix = unique_name("my")
    manifest = mysql_manifest(
        database, kafka_server.kafka_bootstrap, prefix, tables=[f"{database.name}.load_*"], user=cdc_user
    )
    load = MysqlLoad(database, tables)
    kills = 3
    with running_worker(write_manifest(tmp_path, manifest), env=ENV) as worker:
        wait_for_checkpoint(worker, tmp_path / "checkpoint.json")
        load.start()
        try:
            for _ in range(kills):
                time.sleep(1.0)
                threads: list[int] = []
                deadline = time.monotonic() + 30
                while not threads and time.monotonic() < deadline:
                    threads = dump_threads(database, cdc_user)
                    time.sleep(0.1)
                assert len(threads) == 1, f"expected one binlog connection of {cdc_user}, found {threads}"
                kill(database, threads[0])
            time.sleep(1.0)
        finally:
            load.stop()
        rows = committed(database, tables)
        records = consume(
            kafka_server.kafka_bootstrap, [f"{prefix}.{t}" for t in tables], expected_changes(rows)
        )
        _, body = worker.get("/metrics")
        log = worker.log()

    report = check_delivery(records, rows)
    assert report.ok, str(report)
    assert report.duplicates == 0, f"a reconnect must not replay what was emitted: {report}"
    assert report.distinct == expected_changes(rows)
    assert metric(body, "deltaforge_source_reconnects_total") >= kills, log[-3000:]
    assert log.count('"source_reconnecting"') >= kills


def test_sigkill_storm_loses_nothing_and_replays_exactly(
    mariadb_database: MysqlDatabase, kafka_server: Settings, tmp_path: Path, fault_report: FaultReport
) -> None:
    """The at-least-once storm of tests/integration/test_postgres_faults.py, from MariaDB: the
    position is in the checkpoint file, so a killed worker replays at most the batches it wrote
    but had not checkpointed."""
    seed = fault_report.seed
    database, bootstrap = mariadb_database, kafka_server.kafka_bootstrap
    create_load_tables(database, STORM_TABLES)
    with fault_topics(bootstrap, "my", STORM_TABLES) as (prefix, topics):
        spec = mysql_manifest(database, bootstrap, prefix, tables=[f"{database.name}.load_*"])
        # Batches wait up to 200 ms: most kills and stops then find read, undelivered transactions.
        spec["spec"]["batch"]["maxDelay"] = "200ms"
        manifest = write_manifest(tmp_path, spec)
        pin_start_position(
            manifest, ENV, lambda worker: wait_for_checkpoint(worker, tmp_path / "checkpoint.json")
        )
        writer = LoadWriter(
            mariadb_target(database), STORM_TABLES, seed=seed, rows_per_second=300, large_every=2.0
        )
        report, peak = storm_and_drain(
            manifest,
            writer,
            random.Random(seed),
            STORM_KILLS,
            env=ENV,
            read=kafka_reader(bootstrap, topics),
            positions=MARIADB_POSITIONS,
            rolling_restart=True,
        )
    fault_report(
        report,
        peak_rss_mib=peak,
        notes=[f"{STORM_KILLS} SIGKILLs, a SIGTERM under load; writer {writer.stats}"],
    )
    assert_at_least_once(report, seed)


def test_a_misconfigured_worker_exits_1_naming_the_setting(
    mariadb_database: MysqlDatabase, kafka_server: Settings, tmp_path: Path
) -> None:
    database = mariadb_database
    manifest = mysql_manifest(
        database, kafka_server.kafka_bootstrap, unique_name("my"), tables=[f"{database.name}.missing_*"]
    )
    worker = start_worker(write_manifest(tmp_path, manifest), env=ENV)
    try:
        code = worker.process.wait(timeout=60)
    finally:
        if worker.process.poll() is None:
            worker.kill()
    assert code == 1, worker.log()[-3000:]
    assert "spec.source.mysql.tables" in worker.log()
    assert f"{database.name}.missing_*" in worker.log()
