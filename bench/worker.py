"""Our worker: `deltaforge run` on a Postgres -> Kafka manifest, timed until Kafka holds every row.

The clock starts just before the process is spawned and stops when the topic's end offsets
reach the number of rows: interpreter start-up, preflight, connecting to Kafka and the last
acknowledgements from the broker are all inside the figure. Nothing is subtracted. CPU seconds
(utime + stime from /proc/<pid>/stat) and the peak RSS (VmHWM) are read at that same moment,
before the worker is asked to stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kafka import RecordCounter
from bench.measurement import Measurement
from bench.procstat import ProcWatch, cpu_seconds, peak_rss_mib, run_delay_seconds
from bench.workload import PgWorkload, SlotReader
from hack.stack.process import free_ports

NAME = "deltaforge"
SCRIPT = Path(sys.executable).with_name("deltaforge")
POLL_SECONDS = 0.1
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class WorkerOptions:
    bootstrap: str
    topic: str
    partitions: int
    batch_events: int
    timeout: float
    profile: str | None = None  # None, "sample", "cprofile" or "pyinstrument"
    profile_path: Path | None = None
    broker_pid: int | None = None  # the local Kafka broker, to report its CPU over the same span


def manifest(workload: PgWorkload, options: WorkerOptions) -> dict[str, Any]:
    target = workload.target
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "bench-pg-kafka", "namespace": "bench"},
        "spec": {
            "source": {
                "postgres": {
                    "host": target.host,
                    "port": target.port,
                    "database": workload.database,
                    "user": target.cdc_user,
                    "password": "${PG_PASSWORD}",
                    "sslMode": "disable",
                    "tables": [workload.table],
                    "slot": {"name": workload.slots[NAME], "create": False},
                    "publication": {"name": workload.publication, "create": False},
                }
            },
            "sinks": [
                {
                    "name": "kafka",
                    "kafka": {
                        "bootstrapServers": options.bootstrap,
                        "topic": options.topic,
                        "envelope": "native",
                        "compression": "zstd",
                    },
                }
            ],
            "batch": {"maxEvents": options.batch_events},
            "checkpoint": {"file": {"path": "checkpoint.json"}},
        },
    }


def command(manifest_path: Path, port: int, options: WorkerOptions) -> list[str]:
    run = ["run", str(manifest_path), "--http-host", "127.0.0.1", "--http-port", str(port)]
    if options.profile == "sample":
        assert options.profile_path is not None
        return [
            sys.executable,
            "-m",
            "bench.sampler",
            str(options.profile_path),
            "--",
            "-m",
            "deltaforge",
            *run,
        ]
    if options.profile == "cprofile":
        assert options.profile_path is not None
        return [sys.executable, "-m", "cProfile", "-o", str(options.profile_path), "-m", "deltaforge", *run]
    if options.profile == "pyinstrument":
        assert options.profile_path is not None
        return [
            sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(options.profile_path),
            "-m", "deltaforge", *run,
        ]  # fmt: skip
    return [str(SCRIPT), *run]


def _cpu_or_none(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, limit: int = 3000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else ""


@dataclass
class _Observed:
    """What was read at the moment the topic reached the goal."""

    count: int
    seconds: float
    cpu: float
    rss: float
    waiting: float
    server_cpu: float | None
    broker_cpu: float | None
    first_record: float | None
    first_count: int

    @property
    def streaming_rate(self) -> int | None:
        """Events per second after the first record arrived: how the total splits, not a substitute."""
        if self.first_record is None or self.seconds <= self.first_record:
            return None
        return round((self.count - self.first_count) / (self.seconds - self.first_record))


def run(workload: PgWorkload, options: WorkerOptions, *, directory: Path) -> Measurement:
    manifest_path = directory / "pipeline.json"
    manifest_path.write_text(json.dumps(manifest(workload, options), indent=2))
    log_path = directory / "worker.log"
    argv = command(manifest_path, free_ports(1)[0], options)
    env = {**os.environ, "PG_PASSWORD": workload.target.cdc_password}
    if options.profile == "sample":  # bench.sampler runs from the checkout, whatever the cwd
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        observed, returncode, final = asyncio.run(
            _drive(workload, options, argv=argv, env=env, directory=directory, log=log.fileno())
        )
    if returncode != 0:
        raise RuntimeError(f"the worker exited with {returncode} on SIGTERM:\n{_tail(log_path)}")
    if final != workload.rows:
        raise RuntimeError(
            f"the topic holds {final} records after the worker stopped, expected {workload.rows}"
        )
    return Measurement(
        contender=NAME,
        events=observed.count,
        seconds=observed.seconds,
        cpu_seconds=observed.cpu,
        peak_rss_mib=observed.rss,
        server_cpu_seconds=observed.server_cpu,
        details={
            # Start-up (interpreter, imports, preflight, connections, first batch) is inside
            # `seconds`; these two show how the time splits, they replace nothing.
            "firstRecordSeconds": None if observed.first_record is None else round(observed.first_record, 3),
            "streamingEventsPerSecond": observed.streaming_rate,
            "waitingForCpuSeconds": round(observed.waiting, 3),
            "brokerCpuSeconds": None if observed.broker_cpu is None else round(observed.broker_cpu, 3),
            "batchMaxEvents": options.batch_events,
            "envelope": "native",
            "compression": "zstd",
            "topic": options.topic,
            "partitions": options.partitions,
            "profile": options.profile,
            "command": " ".join(argv),
        },
    )


async def _drive(
    workload: PgWorkload,
    options: WorkerOptions,
    *,
    argv: list[str],
    env: dict[str, str],
    directory: Path,
    log: int,
) -> tuple[_Observed, int | None, int]:
    """Start the worker, wait for the goal, stop it; the final record count comes after the stop."""
    log_path = directory / "worker.log"
    async with RecordCounter(options.bootstrap, options.topic, options.partitions) as counter:
        if await counter.count():
            raise RuntimeError(f"topic {options.topic} is not empty before the worker starts")
        broker_before = _cpu_or_none(options.broker_pid)
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            observed = await _wait_for_goal(
                process, counter, workload=workload, options=options, started=started, log_path=log_path
            )
            if broker_before is not None and observed.broker_cpu is not None:
                observed.broker_cpu -= broker_before
        finally:
            await _stop(process)
        final = await counter.count()
    return observed, process.returncode, final


async def _wait_for_goal(
    process: asyncio.subprocess.Process,
    counter: RecordCounter,
    *,
    workload: PgWorkload,
    options: WorkerOptions,
    started: float,
    log_path: Path,
) -> _Observed:
    goal, deadline = workload.rows, started + options.timeout
    reader = SlotReader(workload.target, workload.slots[NAME])
    walsender = ProcWatch(reader, interval=1.0, close=reader.close).start()
    first_record: float | None = None
    first_count = 0
    try:
        while True:
            count = await counter.count()
            now = time.perf_counter()
            if count and first_record is None:
                first_record, first_count = now - started, count
            if count >= goal:
                # Read everything at this moment, before the worker is asked to stop.
                return _Observed(
                    count=count,
                    seconds=now - started,
                    cpu=cpu_seconds(process.pid),
                    rss=peak_rss_mib(process.pid),
                    waiting=run_delay_seconds(process.pid),
                    server_cpu=walsender.sample(),
                    broker_cpu=_cpu_or_none(options.broker_pid),
                    first_record=first_record,
                    first_count=first_count,
                )
            if process.returncode is not None:
                raise RuntimeError(
                    f"the worker exited with {process.returncode} after {count} of {goal} records:\n"
                    f"{_tail(log_path)}"
                )
            if now > deadline:
                raise RuntimeError(
                    f"only {count} of {goal} records in Kafka after {options.timeout:.0f} s:\n{_tail(log_path)}"
                )
            await asyncio.sleep(POLL_SECONDS)
    finally:
        walsender.stop()


async def _stop(process: asyncio.subprocess.Process, grace: float = 120.0) -> None:
    """SIGTERM (the worker delivers what it read, checkpoints and exits 0), SIGKILL after `grace`."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()
