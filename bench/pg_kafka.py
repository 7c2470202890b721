"""Scenario `pg-kafka`: PostgreSQL -> Kafka, the worker against pg_recvlogical on one change set.

1. A fresh database with a narrow table, a publication and one slot per contender at one
   position; then `rows` inserts in transactions of `tx_rows`, before any reader starts.
2. The contenders one after the other, each on its own slot: pg_recvlogical (decode and
   discard: the ceiling), then the worker (decode, convert, encode, produce to Kafka with zstd, the default).
3. A table and the ratio worker/pg_recvlogical, printed and written as JSON to bench/results/.
4. Slots, publication, database and topic are dropped whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import kafka, recvlogical, report, sampler, worker
from bench.measurement import Measurement
from bench.workload import PgTarget, PgWorkload, drop, new_name, prepare
from hack.stack.config import HOST, Settings

SCENARIO = "pg-kafka"
CONTENDERS = (recvlogical.NAME, worker.NAME)
TARGET_EVENTS_PER_SECOND = 30_000  # the worker's goal, end to end, on this workload
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RATIO_NAME = f"{worker.NAME}/{recvlogical.NAME}"
PROFILE_SUFFIXES = {"sample": "samples.json", "cprofile": "pstats", "pyinstrument": "pyisession"}


@dataclass(frozen=True)
class Options:
    rows: int = 200_000
    tx_rows: int = 1000
    batch_events: int = 5000
    partitions: int = 1
    timeout: float = 900.0
    contenders: tuple[str, ...] = CONTENDERS
    profile: str | None = None
    results_dir: Path = RESULTS_DIR
    keep_logs: bool = False


def _check_servers(settings: Settings, target: PgTarget) -> None:
    hint = "start the local stack first: python3 -m hack.stack up postgres kafka (docs/local-stack.md)"
    try:
        psycopg.connect(target.dsn(), connect_timeout=5).close()
    except psycopg.Error as error:
        raise SystemExit(
            f"bench: PostgreSQL at {HOST}:{settings.postgres_port} is not reachable ({error}); {hint}"
        ) from None
    try:
        socket.create_connection((HOST, settings.kafka_port), timeout=5).close()
    except OSError as error:
        raise SystemExit(
            f"bench: Kafka at {settings.kafka_bootstrap} is not reachable ({error}); {hint}"
        ) from None


def _host() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadAverage": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _measure(
    contender: str, workload: PgWorkload, *, options: Options, settings: Settings, topic: str, stamp: str
) -> Measurement:
    with tempfile.TemporaryDirectory(prefix=f"bench-{contender}-") as scratch:
        directory = Path(scratch)
        try:
            if contender == recvlogical.NAME:
                return recvlogical.run(
                    workload, log_path=directory / "contender.log", timeout=options.timeout
                )
            profile_path = None
            if options.profile:
                options.results_dir.mkdir(parents=True, exist_ok=True)
                profile_path = (
                    options.results_dir / f"{SCENARIO}-{stamp}-worker.{PROFILE_SUFFIXES[options.profile]}"
                )
            worker_options = worker.WorkerOptions(
                bootstrap=settings.kafka_bootstrap,
                topic=topic,
                partitions=options.partitions,
                batch_events=options.batch_events,
                timeout=options.timeout,
                profile=options.profile,
                profile_path=profile_path,
                broker_pid=_broker_pid(settings),
            )
            return worker.run(workload, worker_options, directory=directory)
        finally:
            if options.keep_logs:
                for log in directory.glob("*.log"):
                    options.results_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copy(log, options.results_dir / f"{SCENARIO}-{stamp}-{contender}.log")


def _broker_pid(settings: Settings) -> int | None:
    """The local stack's Kafka broker, whose CPU during the worker's run is worth knowing on 2 cores."""
    try:
        return int((settings.service_dir("kafka") / "kafka.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Run:
    options: Options
    settings: Settings
    target: PgTarget
    name: str
    stamp: str
    started_at: datetime
    host: dict[str, Any]

    @property
    def topic(self) -> str:
        return f"{self.name}.events"

    @property
    def profile_path(self) -> Path | None:
        if not self.options.profile:
            return None
        suffix = PROFILE_SUFFIXES[self.options.profile]
        return self.options.results_dir / f"{SCENARIO}-{self.stamp}-worker.{suffix}"


def run(options: Options) -> int:
    settings = Settings.from_environment()
    target = PgTarget(port=settings.postgres_port)
    _check_servers(settings, target)
    started_at = datetime.now(UTC)
    this = _Run(
        options=options,
        settings=settings,
        target=target,
        name=new_name("bench"),
        stamp=started_at.strftime("%Y%m%dT%H%M%SZ"),
        started_at=started_at,
        host=_host(),
    )
    workload, measurements = _contend(this)
    _summarize(this, measurements)
    path = options.results_dir / f"{SCENARIO}-{this.stamp}.json"
    report.write_json(path, _document(this, workload, measurements))
    print(f"results: {path}")
    return 0


def _contend(this: _Run) -> tuple[PgWorkload, list[Measurement]]:
    """Prepare the change set, run each contender on it, and clean up whatever happened."""
    options, name = this.options, this.name
    measurements: list[Measurement] = []
    topic_created = False
    try:
        print(f"[{SCENARIO}] preparing {options.rows:,} rows in transactions of {options.tx_rows:,} "
              f"(database {name})", flush=True)  # fmt: skip
        workload = prepare(
            this.target,
            name=name,
            contenders=list(options.contenders),
            rows=options.rows,
            tx_rows=options.tx_rows,
        )
        print(
            f"[{SCENARIO}] written in {workload.write_seconds:.1f} s: {workload.transactions} transactions, "
            f"{workload.wal_bytes / 2**20:.1f} MiB of WAL, {workload.start_lsn} .. {workload.end_lsn}",
            flush=True,
        )
        if worker.NAME in options.contenders:
            asyncio.run(kafka.create_topic(this.settings.kafka_bootstrap, this.topic, options.partitions))
            topic_created = True
        for contender in options.contenders:
            print(f"[{SCENARIO}] running {contender} ...", flush=True)
            measurement = _measure(
                contender,
                workload,
                options=options,
                settings=this.settings,
                topic=this.topic,
                stamp=this.stamp,
            )
            measurements.append(measurement)
            print(
                f"[{SCENARIO}]   {measurement.events:,} events in {measurement.seconds:.2f} s "
                f"({measurement.events_per_second:,.0f}/s)",
                flush=True,
            )
    finally:
        if topic_created:
            try:
                asyncio.run(kafka.delete_topic(this.settings.kafka_bootstrap, this.topic))
            except Exception as error:
                print(f"[{SCENARIO}] could not delete topic {this.topic}: {error}", file=sys.stderr)
        try:
            drop(this.target, name, name)
        except Exception as error:
            print(f"[{SCENARIO}] could not drop database {name} and its slots: {error}", file=sys.stderr)
    return workload, measurements


def _ours(measurements: list[Measurement]) -> Measurement | None:
    return next((m for m in measurements if m.contender == worker.NAME), None)


def _summarize(this: _Run, measurements: list[Measurement]) -> None:
    print()
    print(report.table(measurements))
    print()
    print(report.ratio_line(RATIO_NAME, report.ratios(measurements, worker.NAME, recvlogical.NAME)))
    for line in (report.server_line(measurements), report.waiting_line(measurements)):
        if line:
            print(line)
    ours = _ours(measurements)
    if ours is not None:
        verdict = "met" if ours.events_per_second >= TARGET_EVENTS_PER_SECOND else "NOT met"
        streaming = ours.details.get("streamingEventsPerSecond")
        print(
            f"target {TARGET_EVENTS_PER_SECOND:,} events/s end to end: {verdict} "
            f"({ours.events_per_second:,.0f}/s; first record in Kafka after "
            f"{ours.details.get('firstRecordSeconds')} s, then {streaming or 0:,}/s)"
        )
    profile_path = this.profile_path
    if profile_path is not None:
        print("note: the worker ran under a profiler; its figures are not comparable to plain runs")
        print(f"profile: {profile_path}")
        if this.options.profile == "sample" and profile_path.exists():
            text = sampler.report(profile_path)
            profile_path.with_name(profile_path.name.replace(".samples.json", ".txt")).write_text(text + "\n")
            print(text)


def _document(this: _Run, workload: PgWorkload, measurements: list[Measurement]) -> dict[str, Any]:
    options = this.options
    ratio = report.ratios(measurements, worker.NAME, recvlogical.NAME)
    ours = _ours(measurements)
    return {
        "scenario": SCENARIO,
        "startedAt": this.started_at.isoformat(timespec="seconds"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {**this.host, "loadAverageAfter": [round(value, 2) for value in os.getloadavg()]},
        "parameters": {
            "rows": options.rows,
            "rowsPerTransaction": options.tx_rows,
            "batchMaxEvents": options.batch_events,
            "partitions": options.partitions,
            "contenders": list(options.contenders),
            "profile": options.profile,
        },
        "workload": workload.as_json(),
        "results": [measurement.as_json() for measurement in measurements],
        "ratio": {"name": RATIO_NAME, **ratio} if ratio else None,
        "target": {
            "eventsPerSecond": TARGET_EVENTS_PER_SECOND,
            "met": bool(ours and ours.events_per_second >= TARGET_EVENTS_PER_SECOND),
        },
    }
