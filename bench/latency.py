"""Scenarios `pg-latency` and `mysql-latency`: end-to-end latency of the worker at a steady write rate.

A writer commits `--rate` rows per second into the database, in transactions of `--tx-rows`, for
`--seconds`, while the worker (started and ready before the first write, with the defaults a user
gets: `batch.maxDelay` 50 ms, linger 5 ms) streams them into a fresh Kafka topic whose records
carry the broker's append time (`message.timestamp.type=LogAppendTime`). Latency of one change =
the record's append time minus the moment the change was written, as the database recorded it
(`Backend.written_ms`: PostgreSQL's commit time; MariaDB's binlog holds whole seconds only, so a
row timestamp there); both clocks are this machine's. The table shows p50/p90/p99/max over every
change after the first second (connection warm-up), the worker's CPU per 100k events and its
peak RSS, and whether the writer held the rate. This module is the shared half; `pg_latency` and
`mysql_latency` are the database halves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import kafka, worker
from bench.procstat import cpu_seconds, peak_rss_mib
from hack.stack.config import Settings
from hack.stack.process import free_ports

WARM_UP_SECONDS = 1.0
TARGET_P99_MS = 100.0

Insert = Callable[[int, int], None]  # writes rows first..last (inclusive) in one transaction


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


class Backend(ABC):
    """The database half of a latency scenario: its table, its writer, where a change's time is."""

    name: str  # the scenario, as on the command line: pg-latency
    database: str  # its name in the help: PostgreSQL
    written: str  # what `written_ms` reads, for the printed latency line

    @abstractmethod
    def prepare(self, settings: Settings, name: str) -> None:
        """A fresh database `name` with the table (and whatever the worker's source needs)."""

    @abstractmethod
    def drop(self, settings: Settings, name: str) -> None: ...

    @abstractmethod
    def source(self, settings: Settings, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The worker's `spec.source` and the secrets it refers to."""

    @abstractmethod
    def writer(self, settings: Settings, name: str) -> AbstractContextManager[Insert]:
        """A session that inserts one range of rows per call, each call one transaction."""

    @abstractmethod
    def written_ms(self, event: dict[str, Any]) -> float:
        """When the change was written (ms since the epoch), from its native-envelope event."""


def _manifest(source: dict[str, Any], topic: str, settings: Settings) -> dict[str, Any]:
    """The worker with the user's defaults: only the source, the topic and a checkpoint file."""
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "bench-latency", "namespace": "bench"},
        "spec": {
            "source": source,
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


def _write_steadily(session: AbstractContextManager[Insert], options: LatencyOptions) -> tuple[int, float]:
    """Transactions of `tx_rows` rows on a fixed schedule; the rows written and the seconds taken."""
    interval = options.tx_rows / options.rate
    transactions = int(options.seconds * options.rate / options.tx_rows)
    with session as insert:
        began = time.monotonic()
        for number in range(transactions):
            due = began + number * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            first = number * options.tx_rows + 1
            insert(first, first + options.tx_rows - 1)
        return transactions * options.tx_rows, time.monotonic() - began


async def _latencies(backend: Backend, bootstrap: str, topic: str, rows: int, within: float) -> list[float]:
    """Append time minus write time, in ms, of every record (waits until `rows` are there)."""
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
                written = backend.written_ms(json.loads(record.value or b"{}"))
                latencies.append((written, record.timestamp - written))
        if len(latencies) < rows:
            raise RuntimeError(f"only {len(latencies)} of {rows} changes reached Kafka within {within:.0f} s")
        first = min(written for written, _ in latencies)
        return [latency for written, latency in latencies if written - first >= WARM_UP_SECONDS * 1000]
    finally:
        await consumer.stop()


def measure(backend: Backend, settings: Settings, options: LatencyOptions) -> LatencyResult:
    name = f"bench_lat_{uuid.uuid4().hex[:10]}"
    topic = f"bench.latency.{name}"
    bootstrap = settings.kafka_bootstrap
    backend.prepare(settings, name)
    try:
        asyncio.run(kafka.create_topic(bootstrap, topic, 1, {"message.timestamp.type": "LogAppendTime"}))
        try:
            return _run_worker(backend, settings, options, name, topic)
        finally:
            asyncio.run(kafka.delete_topic(bootstrap, topic))
    finally:
        backend.drop(settings, name)


def _run_worker(
    backend: Backend, settings: Settings, options: LatencyOptions, name: str, topic: str
) -> LatencyResult:
    """Start the worker, wait until it is ready, write steadily, then read every change's latency."""
    source, secrets = backend.source(settings, name)
    port = free_ports(1)[0]
    with tempfile.TemporaryDirectory(prefix="deltaforge-latency-") as directory:
        manifest = Path(directory) / "pipeline.json"
        manifest.write_text(json.dumps(_manifest(source, topic, settings)))
        log = open(Path(directory) / "worker.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [str(worker.SCRIPT), "run", str(manifest), "--http-host", "127.0.0.1", "--http-port", str(port)],
            cwd=directory, env={**os.environ, **secrets}, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            _wait_ready(port, process, 60)
            print(
                f"[{backend.name}] writing {options.rate:,} rows/s for {options.seconds:.0f} s ...",
                flush=True,
            )
            written: list[tuple[int, float]] = []
            session = backend.writer(settings, name)
            thread = threading.Thread(target=lambda: written.append(_write_steadily(session, options)))
            cpu_before = cpu_seconds(process.pid)
            thread.start()
            thread.join()
            if not written:
                raise RuntimeError("the writer failed (see its traceback above)")
            rows, took = written[0]
            latencies = asyncio.run(
                _latencies(backend, settings.kafka_bootstrap, topic, rows, options.timeout)
            )
            cpu = cpu_seconds(process.pid) - cpu_before
            rss = peak_rss_mib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            log.close()
    return LatencyResult(rows, rows / took, latencies, cpu / rows * 100_000, rss)


def report(backend: Backend, result: LatencyResult, options: LatencyOptions) -> str:
    p99 = result.percentile(0.99)
    lines = [
        f"steady {options.rate:,} rows/s requested, {result.achieved_rate:,.0f}/s written, "
        f"transactions of {options.tx_rows}, {result.rows:,} changes",
        f"latency (Kafka append time - {backend.written}), ms: "
        f"p50 {result.percentile(0.50):.1f}  p90 {result.percentile(0.90):.1f}  p99 {p99:.1f}  "
        f"max {max(result.latencies_ms):.1f}  mean {statistics.fmean(result.latencies_ms):.1f}",
        f"worker: {result.worker_cpu_per_100k:.2f} CPU s per 100k events, peak RSS {result.worker_peak_rss_mib:.0f} MiB",
        f"target p99 under {TARGET_P99_MS:.0f} ms at {options.rate:,} events/s: "
        f"{'met' if p99 < TARGET_P99_MS else 'NOT met'} ({p99:.1f} ms)",
    ]
    return "\n".join(lines)
