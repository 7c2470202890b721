"""Scenario `pg-latency`: end-to-end latency of the worker at a steady write rate.

A writer commits `--rate` rows per second into PostgreSQL, in transactions of `--tx-rows`, for
`--seconds`, while the worker (started and ready before the first write, with the defaults a user
gets: `batch.maxDelay` 50 ms, linger 5 ms) streams them into a fresh Kafka topic whose records
carry the broker's append time (`message.timestamp.type=LogAppendTime`). Latency of one change =
the record's append time minus the transaction's commit time (`source.commitTime` in the event,
set by PostgreSQL); both clocks are this machine's. The table shows p50/p90/p99/max over every
change after the first second (connection warm-up), the worker's CPU per 100k events and its
peak RSS, and whether the writer held the rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.procstat import cpu_seconds, peak_rss_mib
from hack.stack.config import HOST, PG_ADMIN_PASSWORD, PG_ADMIN_USER, PG_CDC_PASSWORD, PG_CDC_USER, Settings
from hack.stack.process import free_ports

SCRIPT = Path(sys.executable).with_name("deltaforge")
WARM_UP_SECONDS = 1.0
TARGET_P99_MS = 100.0


@dataclass(frozen=True)
class LatencyOptions:
    rate: int  # rows per second
    seconds: float
    tx_rows: int
    timeout: float


@dataclass
class LatencyResult:
    rows: int
    achieved_rate: float
    latencies_ms: list[float]
    worker_cpu_per_100k: float
    worker_peak_rss_mib: float

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _admin_dsn(settings: Settings, database: str) -> str:
    return (
        f"host={HOST} port={settings.postgres_port} dbname={database} "
        f"user={PG_ADMIN_USER} password={PG_ADMIN_PASSWORD}"
    )


def _prepare(settings: Settings, name: str) -> None:
    with psycopg.connect(_admin_dsn(settings, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(_admin_dsn(settings, name), autocommit=True) as admin:
        admin.execute(
            "CREATE TABLE steady (id bigint PRIMARY KEY, qty int, note text, amount numeric(12,2), "
            "created_at timestamptz DEFAULT clock_timestamp())"
        )
        admin.execute(f"GRANT SELECT ON steady TO {PG_CDC_USER}")
        admin.execute(f'CREATE PUBLICATION "{name}" FOR TABLE steady')
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [name])


def _drop(settings: Settings, name: str) -> None:
    with psycopg.connect(_admin_dsn(settings, "postgres"), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            [name],
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _topic(bootstrap: str, name: str, *, create: bool) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            config = {"message.timestamp.type": "LogAppendTime"}
            await admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
        else:
            await admin.delete_topics([name])
    finally:
        await admin.close()


def _manifest(settings: Settings, name: str, topic: str) -> dict[str, Any]:
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "bench-latency", "namespace": "bench"},
        "spec": {
            "source": {
                "postgres": {
                    "host": HOST,
                    "port": settings.postgres_port,
                    "database": name,
                    "user": PG_CDC_USER,
                    "password": "${PG_PASSWORD}",
                    "tables": ["public.steady"],
                    "slot": {"name": name, "create": False},
                    "publication": {"name": name, "create": False},
                }
            },
            "sinks": [
                {"name": "kafka", "kafka": {"bootstrapServers": settings.kafka_bootstrap, "topic": topic}}
            ],
            "checkpoint": {"file": {"path": "checkpoint.json"}},
        },
    }


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready within {timeout:.0f} s")


def _write_steadily(dsn: str, options: LatencyOptions) -> tuple[int, float]:
    """Transactions of `tx_rows` rows on a fixed schedule; the rows written and the seconds taken."""
    interval = options.tx_rows / options.rate
    transactions = int(options.seconds * options.rate / options.tx_rows)
    with psycopg.connect(dsn, autocommit=True) as writer:
        began = time.monotonic()
        for number in range(transactions):
            due = began + number * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            first = number * options.tx_rows + 1
            writer.execute(
                "INSERT INTO steady (id, qty, note, amount) "
                "SELECT n, n %% 100, 'note ' || n, n * 0.01 FROM generate_series(%s::bigint, %s::bigint) AS n",
                [first, first + options.tx_rows - 1],
            )
        return transactions * options.tx_rows, time.monotonic() - began


async def _latencies(bootstrap: str, topic: str, rows: int, within: float) -> list[float]:
    """Append time minus commit time, in ms, of every record (waits until `rows` are there)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        latencies: list[tuple[float, float]] = []
        deadline = time.monotonic() + within
        while len(latencies) < rows and time.monotonic() < deadline:
            for record in (await consumer.getmany(partition, timeout_ms=1000)).get(partition, []):
                event = json.loads(record.value or b"{}")
                committed = datetime.fromisoformat(event["source"]["commitTime"]).timestamp() * 1000
                latencies.append((committed, record.timestamp - committed))
        if len(latencies) < rows:
            raise RuntimeError(f"only {len(latencies)} of {rows} changes reached Kafka within {within:.0f} s")
        first = min(committed for committed, _ in latencies)
        return [latency for committed, latency in latencies if committed - first >= WARM_UP_SECONDS * 1000]
    finally:
        await consumer.stop()


def measure(settings: Settings, options: LatencyOptions) -> LatencyResult:
    name = f"bench_lat_{uuid.uuid4().hex[:10]}"
    topic = f"bench.latency.{name}"
    _prepare(settings, name)
    asyncio.run(_topic(settings.kafka_bootstrap, topic, create=True))
    port = free_ports(1)[0]
    try:
        with tempfile.TemporaryDirectory(prefix="deltaforge-latency-") as directory:
            manifest = Path(directory) / "pipeline.json"
            manifest.write_text(json.dumps(_manifest(settings, name, topic)))
            log = open(Path(directory) / "worker.log", "wb")  # noqa: SIM115 - closed below
            worker = subprocess.Popen(
                [str(SCRIPT), "run", str(manifest), "--http-host", "127.0.0.1", "--http-port", str(port)],
                cwd=directory, env={**os.environ, "PG_PASSWORD": PG_CDC_PASSWORD}, stdout=log, stderr=log,
            )  # fmt: skip
            try:
                _wait_ready(port, worker, 60)
                print(
                    f"[pg-latency] writing {options.rate:,} rows/s for {options.seconds:.0f} s ...",
                    flush=True,
                )
                written: list[tuple[int, float]] = []
                thread = threading.Thread(
                    target=lambda: written.append(_write_steadily(_admin_dsn(settings, name), options))
                )
                cpu_before = cpu_seconds(worker.pid)
                thread.start()
                thread.join()
                rows, took = written[0]
                latencies = asyncio.run(_latencies(settings.kafka_bootstrap, topic, rows, options.timeout))
                cpu = cpu_seconds(worker.pid) - cpu_before
                rss = peak_rss_mib(worker.pid)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
                log.close()
    finally:
        asyncio.run(_topic(settings.kafka_bootstrap, topic, create=False))
        _drop(settings, name)
    return LatencyResult(rows, rows / took, latencies, cpu / rows * 100_000, rss)


def report(result: LatencyResult, options: LatencyOptions) -> str:
    p99 = result.percentile(0.99)
    lines = [
        f"steady {options.rate:,} rows/s requested, {result.achieved_rate:,.0f}/s written, "
        f"transactions of {options.tx_rows}, {result.rows:,} changes",
        "latency (Kafka append time - commit time), ms: "
        f"p50 {result.percentile(0.50):.1f}  p90 {result.percentile(0.90):.1f}  p99 {p99:.1f}  "
        f"max {max(result.latencies_ms):.1f}  mean {statistics.fmean(result.latencies_ms):.1f}",
        f"worker: {result.worker_cpu_per_100k:.2f} CPU s per 100k events, peak RSS {result.worker_peak_rss_mib:.0f} MiB",
        f"target p99 under {TARGET_P99_MS:.0f} ms: {'met' if p99 < TARGET_P99_MS else 'NOT met'} ({p99:.1f} ms)",
    ]
    return "\n".join(lines)
