"""The demo's side of the databases, Kafka and Redis: tables to capture, rows to write, events to show."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pymysql
import redis
from aiokafka import AIOKafkaConsumer
from psycopg import sql

from hack.stack import config
from hack.stack.config import HOST, Settings

Event = dict[str, Any]
PG_TABLES = """
CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(12, 2),
                                   status text NOT NULL DEFAULT 'new', placed_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS order_items (order_id bigint, line int, sku text, qty int, PRIMARY KEY (order_id, line));
"""
MARIADB_TABLE = """CREATE TABLE IF NOT EXISTS inventory.products (
    id int AUTO_INCREMENT PRIMARY KEY, sku varchar(32) NOT NULL, name varchar(100), stock int NOT NULL)"""


def prepare_postgres(settings: Settings, database: str, publication: str, slot: str) -> None:
    """The database, its tables and the publication (an admin's job: the CDC user owns no table)."""
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(settings.postgres_dsn(database), autocommit=True) as admin:
        admin.execute(PG_TABLES)
        if not admin.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [publication]).fetchone():
            statement = sql.SQL("CREATE PUBLICATION {} FOR TABLE orders, order_items")
            admin.execute(statement.format(sql.Identifier(publication)))
        lost = admin.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND wal_status = 'lost'", [slot]
        ).fetchone()
        if lost:
            # Other work on this shared server outran max_slot_wal_keep_size while no worker ran.
            # A production pipeline refuses such a slot; the demo's own data is disposable.
            print(f"    the demo's slot {slot} was invalidated while idle: dropping it to start afresh")
            admin.execute("SELECT pg_drop_replication_slot(%s)", [slot])


def drop_slot(settings: Settings, database: str, slot: str) -> bool:
    """Drop the slot if it exists (no worker may hold it any more); whether there was one."""
    with psycopg.connect(settings.postgres_dsn(database), autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            [slot],
        ).fetchall()
    return bool(dropped)


def _mariadb(settings: Settings) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=HOST, port=settings.mariadb_port, user=config.MYSQL_ADMIN_USER,
        password=config.MYSQL_ADMIN_PASSWORD, autocommit=True,
    )  # fmt: skip


def prepare_mariadb(settings: Settings) -> None:
    with _mariadb(settings) as admin, admin.cursor() as cursor:
        cursor.execute("CREATE DATABASE IF NOT EXISTS inventory")
        cursor.execute(MARIADB_TABLE)


def write_postgres(settings: Settings, database: str) -> int:
    """An order with two items, then an update and a delete, in three transactions; the order id."""
    with psycopg.connect(settings.postgres_dsn(database)) as writer:
        row = writer.execute(
            "INSERT INTO orders (customer, total) VALUES ('ada', 42.50) RETURNING id"
        ).fetchone()
        assert row is not None
        order = int(row[0])
        writer.execute("INSERT INTO order_items VALUES (%s, 1, 'book', 2), (%s, 2, 'pen', 5)", [order, order])
        writer.commit()
        writer.execute("UPDATE orders SET status = 'paid' WHERE id = %s", [order])
        writer.commit()
        writer.execute("DELETE FROM order_items WHERE order_id = %s AND line = 2", [order])
        writer.commit()
    return order


def write_mariadb(settings: Settings) -> int:
    """A product, then a change of its stock; the product id."""
    with _mariadb(settings) as admin, admin.cursor() as cursor:
        cursor.execute("INSERT INTO inventory.products (sku, name, stock) VALUES ('book-1', 'A book', 10)")
        product = int(cursor.lastrowid)
        cursor.execute("UPDATE inventory.products SET stock = stock - 2 WHERE id = %s", [product])
    return product


async def _kafka_events(bootstrap: str, topic: str) -> list[Event]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    events: list[Event] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            if not batches and events:
                break
            events += [
                json.loads(record.value) for batch in batches.values() for record in batch if record.value
            ]
    finally:
        await consumer.stop()
    return events


def kafka_events(bootstrap: str, topic: str) -> list[Event]:
    """Every event of `topic` from the start (the demo's topics are small)."""
    return asyncio.run(_kafka_events(bootstrap, topic))


def row(event: Event) -> dict[str, Any]:
    """The row an event is about: its after image, or its before image for a delete."""
    return dict(event.get("after") or event.get("before") or {})


def describe(event: Event) -> str:
    """op, and the row images the event carries (PostgreSQL sends no before image of an update
    unless the table's REPLICA IDENTITY is FULL)."""
    images = [f"{image}={json.dumps(event[image])}" for image in ("before", "after") if event.get(image)]
    return " ".join([f"op={event['op']}", *images])


def wait_for_events(
    bootstrap: str, expected: dict[str, Callable[[dict[str, Any]], bool]]
) -> dict[str, list[Event]]:
    """Each topic's events whose row `expected[topic]` picks (those of the rows just written, not
    of earlier runs), once every topic has some."""
    deadline = time.monotonic() + 60
    found: dict[str, list[Event]] = {}
    while set(found) != set(expected):
        for topic, ours in expected.items():
            if events := [event for event in kafka_events(bootstrap, topic) if ours(row(event))]:
                found[topic] = events
        if set(found) != set(expected) and time.monotonic() > deadline:
            raise SystemExit(f"no events in {sorted(set(expected) - set(found))} after 60 s")
    return found


def redis_events(settings: Settings, stream: str, ours: Callable[[dict[str, Any]], bool]) -> list[Event]:
    """The events of the newest entries of `stream` whose row `ours` picks, oldest first."""
    with redis.Redis.from_url(settings.redis_url(), decode_responses=True) as client:
        newest: Any = client.xrevrange(stream, count=20)
    events = [json.loads(fields["data"]) for _, fields in newest[::-1]]
    return [event for event in events if ours(row(event))]
