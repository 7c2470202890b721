"""`make demo`: the README's main job, on the local real stack.

It runs the example Pipeline (examples/postgres-to-kafka.yaml) with the real worker: rows written
to PostgreSQL arrive in Kafka and Redis as change events, and the worker's /status and /metrics
show it. The operator, the CRD and the Helm chart are not built yet; the demo says so rather than
pretending, and will run them on the local control plane once they exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import redis
from aiokafka import AIOKafkaConsumer
from psycopg import sql

import hack.stack
from hack.stack.config import PG_CDC_PASSWORD, Settings
from hack.stack.process import free_ports

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "examples" / "postgres-to-kafka.yaml"
DATABASE = "shop"
TABLES = """
CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(12, 2),
                                   status text NOT NULL DEFAULT 'new', placed_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS order_items (order_id bigint, line int, sku text, qty int, PRIMARY KEY (order_id, line));
"""

NOT_YET = """\
Not built yet, and so not shown here: the operator, its Pipeline CRD and Helm chart. When they
land, `make demo` installs the chart on the local control plane (running now, see above),
applies the examples/ Pipelines and shows `kubectl get pipelines` turning Ready."""

LOOK_AROUND = """\
Look around:
  eval "$(python3 -m hack.stack env)"                  # connection settings as variables
  PG_PASSWORD=deltaforge .venv/bin/deltaforge run examples/postgres-to-kafka.yaml --log-format console
  psql "postgresql://postgres:postgres@127.0.0.1:25432/shop"   # then INSERT INTO orders ...
  redis-cli -p 26379 XRANGE cdc:orders - +             # the events, as the Redis sink wrote them
  "$DELTAFORGE_KUBECTL" get namespaces                 # the local Kubernetes API server
Tear down:
  make stack-down      # stop the servers, keep their data
  make stack-clean     # stop them and delete their data"""


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _prepare_database(settings: Settings) -> None:
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(settings.postgres_dsn(DATABASE), autocommit=True) as admin:
        admin.execute(TABLES)
        if not admin.execute("SELECT 1 FROM pg_publication WHERE pubname = 'df_orders_cdc'").fetchone():
            admin.execute("CREATE PUBLICATION df_orders_cdc FOR TABLE orders, order_items")
        lost = admin.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'df_orders_cdc' AND wal_status = 'lost'"
        ).fetchone()
        if lost:
            # Other work on this shared server outran max_slot_wal_keep_size while no worker ran.
            # A production pipeline refuses such a slot; the demo's own data is disposable.
            print("    the demo's slot df_orders_cdc was invalidated while idle: dropping it to start afresh")
            admin.execute("SELECT pg_drop_replication_slot('df_orders_cdc')")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except OSError as error:
        return 0, str(error)


def _wait_ready(worker: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(
                f"the worker exited with {worker.returncode}; its log:\n{log.read_text()[-3000:]}"
            )
        if _get(port, "/readyz")[0] == 200:
            return
        time.sleep(0.3)
    raise SystemExit(f"the worker was not ready within 60 s: {_get(port, '/readyz')}")


def _write_rows(settings: Settings) -> None:
    with psycopg.connect(settings.postgres_dsn(DATABASE)) as writer:
        order = writer.execute(
            "INSERT INTO orders (customer, total) VALUES ('ada', 42.50) RETURNING id"
        ).fetchone()
        assert order is not None
        writer.execute(
            "INSERT INTO order_items VALUES (%s, 1, 'book', 2), (%s, 2, 'pen', 5)", [order[0], order[0]]
        )
        writer.commit()
        writer.execute("UPDATE orders SET status = 'paid' WHERE id = %s", [order[0]])
        writer.commit()
        writer.execute("DELETE FROM order_items WHERE order_id = %s AND line = 2", [order[0]])
        writer.commit()


async def _kafka_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every event of `topic` from the start (the demo's topics are small)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    events: list[dict[str, Any]] = []
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


def main() -> int:
    lines, all_running = hack.stack.status()
    print("DeltaForge demo: the local real stack\n")
    print("\n".join("  " + line for line in lines))
    if not all_running:
        print("\nSome servers are not running: start them with `make stack-up`.", file=sys.stderr)
        return 1
    settings = Settings.from_environment()

    _step(f"PostgreSQL: database '{DATABASE}', tables orders and order_items, publication df_orders_cdc")
    _prepare_database(settings)

    work = settings.stack_dir / "demo"
    work.mkdir(exist_ok=True)
    [port], log = free_ports(1), work / "worker.log"
    _step(f"starting the worker: deltaforge run {MANIFEST.relative_to(REPO)} (log: {log})")
    deltaforge = Path(sys.executable).with_name("deltaforge")
    with open(log, "ab") as output:
        worker = subprocess.Popen(
            [str(deltaforge), "run", str(MANIFEST), "--http-host", "127.0.0.1", "--http-port", str(port)],
            cwd=work, env={**os.environ, "PG_PASSWORD": PG_CDC_PASSWORD},
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_ready(worker, port, log)
        print(f"    ready: GET http://127.0.0.1:{port}/readyz -> 200")

        _step("writing rows: an order with two items, then an update and a delete, in three transactions")
        _write_rows(settings)
        time.sleep(2)

        _step("the events, as the Redis sink wrote them (stream cdc:orders and cdc:order_items, newest 5)")
        client = redis.Redis.from_url(settings.redis_url(), decode_responses=True)
        with client:
            for stream in ("cdc:orders", "cdc:order_items"):
                newest: Any = client.xrevrange(stream, count=5)
                for _, fields in newest[::-1]:
                    event = json.loads(fields["data"])
                    print(
                        f"    {stream:<16} op={event['op']} key={json.dumps(event['key'])} after={json.dumps(event['after'])}"
                    )

        events = asyncio.run(_kafka_events(settings.kafka_bootstrap, "shop.orders"))
        print(f"\n    Kafka topic shop.orders holds {len(events)} events (Debezium envelope); the newest:")
        print("    " + json.dumps(events[-1])[:400])

        _step(f"the worker's /status (http://127.0.0.1:{port}/status)")
        print("    " + _get(port, "/status")[1])
        metrics = [
            line
            for line in _get(port, "/metrics")[1].splitlines()
            if line.startswith("deltaforge_source_events_total")
        ]
        print("    " + "\n    ".join(metrics))
    finally:
        _step("stopping the worker with SIGTERM (it delivers, checkpoints and exits 0)")
        worker.send_signal(signal.SIGTERM)
        print(f"    exit code {worker.wait(timeout=60)}")
    print()
    print(NOT_YET)
    print()
    print(LOOK_AROUND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
