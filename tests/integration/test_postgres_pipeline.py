"""A real worker streams PostgreSQL changes into Kafka and Redis, typed and in commit order."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import psycopg
import redis

from hack.stack.config import PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.data_stack import PgDatabase, RedisNamespace, unique_name
from tests.support.worker import consume, running_worker, values, write_manifest

SCHEMA = """
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    qty int NOT NULL,
    price numeric(20, 5),
    note text,
    code varchar(16),
    paid boolean,
    placed_at timestamptz,
    local_at timestamp,
    due date,
    ref uuid,
    attrs jsonb,
    blob bytea,
    tags text[],
    scores int[],
    big text
);
ALTER TABLE orders ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE order_items (order_id bigint, line int, sku text, PRIMARY KEY (order_id, line));
ALTER TABLE order_items REPLICA IDENTITY FULL;
"""


def _manifest(
    database: PgDatabase, settings: Settings, topic_prefix: str, namespace: RedisNamespace
) -> dict[str, Any]:
    name = database.name.replace("_", "-")
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": "tests"},
        "spec": {
            "source": {
                "postgres": {
                    "host": "127.0.0.1",
                    "port": settings.postgres_port,
                    "database": database.name,
                    "user": PG_CDC_USER,
                    "password": "${PG_PASSWORD}",
                    "tables": ["public.order*"],
                    "slot": {"name": database.name},
                    "publication": {"name": database.name, "create": False},
                    "heartbeat": {"interval": "1s"},
                }
            },
            "sinks": [
                {
                    "name": "events",
                    "kafka": {
                        "bootstrapServers": settings.kafka_bootstrap,
                        "topic": f"{topic_prefix}.${{source.table}}",
                    },
                },
                {
                    "name": "cache",
                    "required": False,
                    "redis": {"url": settings.redis_url(), "stream": f"{namespace.prefix}:${{source.table}}"},
                },
            ],
            "batch": {"maxEvents": 100, "maxDelay": "20ms"},
            "checkpoint": {"file": {"path": "checkpoint.json"}},
        },
    }


def test_changes_arrive_in_kafka_and_redis_typed_and_in_order(
    pg_database: PgDatabase, redis_namespace: RedisNamespace, kafka_server: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute(SCHEMA)
        admin.execute(f"CREATE PUBLICATION {pg_database.name} FOR TABLE orders, order_items")
    topic_prefix = unique_name("pg")
    manifest = write_manifest(tmp_path, _manifest(pg_database, kafka_server, topic_prefix, redis_namespace))
    big = "x" * 20_000
    with running_worker(manifest, env={"PG_PASSWORD": PG_CDC_PASSWORD}) as worker:
        with psycopg.connect(pg_database.admin_dsn) as writer:
            writer.execute(
                "INSERT INTO orders VALUES (1, 2, 12345678901234.56789, 'first', 'A1', true, "
                "'2024-03-01 10:00:00.5+02', '2024-03-01 10:00:00', '2024-03-02', "
                "'b2f3c1de-1111-4aaa-8bbb-0123456789ab', '{\"vip\": true, \"n\": [1, 2]}', '\\x00ff10', "
                "'{\"a b\",c,NULL}', '{1,2,3}', %s)",
                [big],
            )
            writer.execute("INSERT INTO order_items VALUES (1, 1, 'sku-1'), (1, 2, 'sku-2')")
            writer.commit()
            writer.execute("UPDATE orders SET qty = 3 WHERE id = 1")  # big stays TOASTed: unchanged
            writer.execute("UPDATE order_items SET sku = 'sku-2b' WHERE order_id = 1 AND line = 2")
            writer.commit()
            writer.execute("DELETE FROM order_items WHERE order_id = 1 AND line = 1")
            writer.execute("DELETE FROM orders WHERE id = 1")
            writer.commit()
            writer.execute("TRUNCATE order_items")
            writer.commit()

        order_records = consume(kafka_server.kafka_bootstrap, [f"{topic_prefix}.orders"], 3)
        orders = values(order_records)
        items = values(consume(kafka_server.kafka_bootstrap, [f"{topic_prefix}.order_items"], 5))
        status, body = worker.get("/metrics")
        assert status == 200

    assert [event["op"] for event in orders] == ["c", "u", "d"]
    created = orders[0]["after"]
    assert created == {
        "id": 1,
        "qty": 2,
        "price": "12345678901234.56789",
        "note": "first",
        "code": "A1",
        "paid": True,
        "placed_at": "2024-03-01T08:00:00.500000Z",
        "local_at": "2024-03-01T10:00:00",
        "due": "2024-03-02",
        "ref": "b2f3c1de-1111-4aaa-8bbb-0123456789ab",
        "attrs": {"vip": True, "n": [1, 2]},
        "blob": base64.b64encode(b"\x00\xff\x10").decode(),
        "tags": ["a b", "c", None],
        "scores": [1, 2, 3],
        "big": big,
    }
    assert orders[0]["key"] == {"id": 1}
    assert order_records[0].key == b'{"id":1}', "the default Kafka key is the primary key"
    headers = dict(order_records[0].headers)
    assert headers["event_id"].decode() == orders[0]["id"]
    assert headers["position"].decode() == orders[0]["source"]["position"]
    updated = orders[1]
    assert updated["after"]["qty"] == 3
    assert updated["after"]["big"] == {"__unchanged__": True}, (
        "an unchanged TOAST value is a marker, never null"
    )
    assert updated["before"] is None, "REPLICA IDENTITY DEFAULT sends no old row when the key is unchanged"
    assert orders[2]["before"] == {"id": 1}, "a DEFAULT identity delete carries the key only"

    assert [event["op"] for event in items] == ["c", "c", "u", "d", "t"]
    assert items[2]["before"] == {"order_id": 1, "line": 2, "sku": "sku-2"}, (
        "REPLICA IDENTITY FULL: the old row"
    )
    assert items[2]["after"]["sku"] == "sku-2b"
    assert items[4]["source"]["table"] == "order_items"
    # The two inserts share a transaction: same position, consecutive indexes, last one flagged.
    assert items[0]["source"]["position"] == items[1]["source"]["position"] == orders[0]["source"]["position"]
    assert [items[0]["tx"], items[1]["tx"]] == [{"index": 1, "last": False}, {"index": 2, "last": True}]
    assert len({event["id"] for event in orders + items}) == 8

    client = redis.Redis.from_url(redis_namespace.url, decode_responses=True)
    with client:
        streamed: Any = client.xrange(redis_namespace.key("orders"))
    assert [fields["op"] for _, fields in streamed] == ["c", "u", "d"]
    assert streamed[0][1]["event_id"] == orders[0]["id"]
    assert "deltaforge_source_events_total" in body


def test_worker_creates_its_publication_for_the_matching_tables(
    pg_database: PgDatabase, redis_namespace: RedisNamespace, kafka_server: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE order_a (id int PRIMARY KEY); CREATE TABLE order_b (id int PRIMARY KEY)")
        admin.execute("CREATE TABLE invoices (id int PRIMARY KEY)")
        # Creating a publication takes CREATE on the database and ownership of the tables.
        admin.execute(f"GRANT CREATE ON DATABASE {pg_database.name} TO {PG_CDC_USER}")
        for table in ("order_a", "order_b", "invoices"):
            admin.execute(f"ALTER TABLE {table} OWNER TO {PG_CDC_USER}")
    manifest = _manifest(pg_database, kafka_server, unique_name("pg"), redis_namespace)
    manifest["spec"]["source"]["postgres"]["tables"] = ["public.order_*"]
    manifest["spec"]["source"]["postgres"]["publication"]["create"] = True
    topic_prefix = manifest["spec"]["sinks"][0]["kafka"]["topic"].split(".")[0]
    with running_worker(write_manifest(tmp_path, manifest), env={"PG_PASSWORD": PG_CDC_PASSWORD}):
        with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
            published = admin.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1",
                [pg_database.name],
            ).fetchall()
            admin.execute("INSERT INTO order_b VALUES (7)")
        records = values(consume(kafka_server.kafka_bootstrap, [f"{topic_prefix}.order_b"], 1))
    assert [name for (name,) in published] == ["order_a", "order_b"]
    assert [record["after"] for record in records] == [{"id": 7}]
