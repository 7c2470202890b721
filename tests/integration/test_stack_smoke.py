"""Smoke tests that prove each server of the local stack is real and set up for CDC."""

from __future__ import annotations

import random
import select
import struct
import time

import psycopg
import redis.asyncio
import redis.utils
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg import pq
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from hack.stack.config import Settings
from tests.fixtures.data_stack import MysqlDatabase, PgDatabase, RedisNamespace

# pgoutput framing, as documented in "Streaming Replication Protocol" and "Logical Replication
# Message Formats": XLogData ('w') carries a pgoutput message after a 24-byte header.
XLOG_DATA_HEADER = struct.Struct(">cQQQ")
PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds


def _read_copy_message(pgconn: pq.abc.PGconn, deadline: float) -> bytes:
    while True:
        size, data = pgconn.get_copy_data(1)
        if size > 0:
            return bytes(data)
        if size == -1:
            raise AssertionError("the replication stream ended")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no replication message arrived in time")
        select.select([pgconn.socket], [], [], remaining)
        pgconn.consume_input()


def _standby_status(flushed_lsn: int) -> bytes:
    now_us = int(time.time() * 1_000_000) - PG_EPOCH_OFFSET_US
    return b"r" + struct.pack(">QQQqB", flushed_lsn, flushed_lsn, flushed_lsn, now_us, 0)


def _insert_values(message: bytes) -> list[str | None]:
    """Decode the new tuple of a pgoutput Insert ('I', relation id, 'N', tuple data)."""
    assert message[0:1] == b"I"
    assert message[5:6] == b"N"
    (column_count,) = struct.unpack_from(">h", message, 6)
    offset = 8
    values: list[str | None] = []
    for _ in range(column_count):
        kind = message[offset : offset + 1]
        offset += 1
        if kind == b"t":
            (length,) = struct.unpack_from(">i", message, offset)
            values.append(message[offset + 4 : offset + 4 + length].decode())
            offset += 4 + length
        else:
            values.append(None)
    return values


def test_postgres_change_is_read_through_a_logical_slot(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")
        admin.execute("CREATE PUBLICATION smoke FOR TABLE orders")
        # The CDC role logs in with its password over TCP and holds only REPLICATION.
        # psycopg cannot leave COPY BOTH mode cleanly on exit, so the stream is closed by hand.
        stream = psycopg.connect(pg_database.cdc_dsn, autocommit=True, replication="database")
        try:
            pgconn = stream.pgconn
            created = pgconn.exec_(b"CREATE_REPLICATION_SLOT smoke_slot LOGICAL pgoutput")
            assert created.status == pq.ExecStatus.TUPLES_OK, pgconn.error_message
            admin.execute("INSERT INTO orders VALUES (1, 'widget')")
            started = pgconn.exec_(
                b"START_REPLICATION SLOT smoke_slot LOGICAL 0/0 (proto_version '1', publication_names 'smoke')"
            )
            assert started.status == pq.ExecStatus.COPY_BOTH, pgconn.error_message

            deadline = time.monotonic() + 30
            inserted: list[str | None] | None = None
            commit_end_lsn = 0
            while not commit_end_lsn:
                message = _read_copy_message(pgconn, deadline)
                if message[:1] == b"k":  # primary keepalive: answer when asked
                    if message[17]:
                        pgconn.put_copy_data(_standby_status(0))
                        pgconn.flush()
                    continue
                payload = message[XLOG_DATA_HEADER.size :]
                if payload[:1] == b"I":
                    inserted = _insert_values(payload)
                elif payload[:1] == b"C" and inserted is not None:
                    (commit_end_lsn,) = struct.unpack_from(">Q", payload, 10)
            assert inserted == ["1", "widget"]

            # Confirm the commit: the server must move the slot's confirmed_flush_lsn to it.
            pgconn.put_copy_data(_standby_status(commit_end_lsn))
            pgconn.flush()
            confirmed = 0
            while confirmed < commit_end_lsn and time.monotonic() < deadline:
                row = admin.execute(
                    "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'smoke_slot'"
                ).fetchone()
                assert row is not None
                confirmed = int(row[0])
                time.sleep(0.05)
            assert confirmed >= commit_end_lsn
        finally:
            stream.close()


def test_mariadb_row_event_is_read_from_the_binlog(mariadb_database: MysqlDatabase) -> None:
    with mariadb_database.admin_connection() as admin:
        cursor = admin.cursor()
        cursor.execute("CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(64) NOT NULL)")
        cursor.execute("SHOW MASTER STATUS")
        log_file, log_position = cursor.fetchone()[:2]
        cursor.execute("INSERT INTO orders VALUES (1, 'widget')")

    stream = BinLogStreamReader(
        connection_settings={
            "host": mariadb_database.host,
            "port": mariadb_database.port,
            "user": mariadb_database.cdc_user,
            "password": mariadb_database.cdc_password,
        },
        server_id=random.randint(100_000, 2**31 - 1),
        log_file=log_file,
        log_pos=log_position,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent],
        only_schemas=[mariadb_database.name],
    )
    try:
        rows = [(event.table, row["values"]) for event in stream for row in event.rows]
    finally:
        stream.close()
    # Column names travel in the binlog only with binlog_row_metadata=FULL.
    assert rows == [("orders", {"id": 1, "item": "widget"})]


async def test_redis_stream_xadd_and_xread(redis_namespace: RedisNamespace) -> None:
    assert redis.utils.HIREDIS_AVAILABLE, "redis-py should parse replies with hiredis"
    stream = redis_namespace.key("events")
    client = redis.asyncio.Redis.from_url(redis_namespace.url)
    async with client:
        first = await client.xadd(stream, {"event_id": "e1", "op": "c"})
        await client.xadd(stream, {"event_id": "e2", "op": "u"})
        replies = await client.xread({stream: "0-0"}, count=10, block=1000)
    assert isinstance(replies, list), "RESP2 replies to XREAD are lists"
    [(name, entries)] = replies
    assert name.decode() == stream
    assert entries[0][0] == first
    assert [fields[b"event_id"] for _, fields in entries] == [b"e1", b"e2"]


async def test_kafka_produce_and_consume_with_an_idempotent_producer(
    kafka_server: Settings, kafka_topic: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_server.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            kafka_topic, b'{"op":"c"}', key=b"order-1", headers=[("event_id", b"e1")]
        )
        # aiokafka exposes the broker-assigned producer id only on its transaction manager.
        assert producer._txn_manager is not None
        assert producer._txn_manager.producer_id >= 0, "the broker should assign a producer id"
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_server.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.offset, record.key, record.value) == (metadata.offset, b"order-1", b'{"op":"c"}')
    assert record.headers == (("event_id", b"e1"),)
