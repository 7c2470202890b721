"""Our worker: `deltaforge run` on a manifest source -> Kafka, timed until Kafka holds every row.

The clock starts just before the process is spawned and stops when the topic's end offsets
reach the number of rows: interpreter start-up, preflight, connecting to Kafka and the last
acknowledgements from the broker are all inside the figure. Nothing is subtracted. CPU seconds
(utime + stime from /proc/<pid>/stat) and the peak RSS (VmHWM) are read at that same moment,
before the worker is asked to stop. The source part of the manifest, the secrets it refers to,
an optional start checkpoint and the server-side process to watch come from the scenario
(`Source`).
"""

from __future__ import annotations

import asyncio
import compileall
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deltaforge
from bench import checkout_environment
from bench.kafka import RecordCounter
from bench.measurement import Measurement
from bench.procstat import ServerWatch, cpu_seconds, peak_rss_mib, run_delay_seconds
from deltaforge.checkpoints import codec
from deltaforge.events import Checkpoint
from hack.stack.process import free_ports

NAME = "deltaforge"
SCRIPT = Path(sys.executable).with_name("deltaforge")
POLL_SECONDS = 0.1
CHECKPOINT = "checkpoint.json"  # in the worker's directory, its working directory


@dataclass(frozen=True)
class Source:
    """What the worker reads, from the scenario: `spec.source` of its manifest and the rest."""

    scenario: str  # the Pipeline is named bench-<scenario>
    spec: dict[str, Any]  # spec.source
    rows: int  # the change set's rows: the goal in Kafka
    server: Callable[[], ServerWatch]  # the server side of the stream, started with the worker
    server_name: str  # how the server figures are named (Measurement.server_name)
    env: dict[str, str] = field(default_factory=dict)  # the secrets the spec refers to (${...})
    start: str | None = None  # a position to start from, handed over as the worker's checkpoint


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


def manifest(source: Source, options: WorkerOptions) -> dict[str, Any]:
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": f"bench-{source.scenario}", "namespace": "bench"},
        "spec": {
            "source": source.spec,
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
            "checkpoint": {"file": {"path": CHECKPOINT}},
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


def byte_compile_runtime() -> None:
    """Byte-compile the worker's package, as installing a wheel or building the image does.

    A checkout installed in editable mode is compiled on import, and where bytecode writing is
    off (PYTHONDONTWRITEBYTECODE) that happens again at every start: measured at about 0.15 s of
    the worker's start-up, which no deployment pays.
    """
    compileall.compile_dir(Path(deltaforge.__file__).parent, quiet=1)


def run(source: Source, options: WorkerOptions, *, directory: Path) -> Measurement:
    byte_compile_runtime()
    manifest_path = directory / "pipeline.json"
    manifest_path.write_text(json.dumps(manifest(source, options), indent=2))
    if source.start is not None:  # the checkpoint store is how a pipeline is told where to resume
        (directory / CHECKPOINT).write_bytes(codec.dump(Checkpoint(position=source.start)))
    log_path = directory / "worker.log"
    argv = command(manifest_path, free_ports(1)[0], options)
    env = {**os.environ, **source.env}
    if options.profile == "sample":  # bench.sampler runs from the checkout, whatever the cwd
        env = checkout_environment(env)
    with open(log_path, "wb") as log:
        observed, returncode, final = asyncio.run(
            _drive(source, options, argv=argv, env=env, directory=directory, log=log.fileno())
        )
    if returncode != 0:
        raise RuntimeError(f"the worker exited with {returncode} on SIGTERM:\n{_tail(log_path)}")
    if final != source.rows:
        raise RuntimeError(
            f"the topic holds {final} records after the worker stopped, expected {source.rows}"
        )
    return Measurement(
        contender=NAME,
        events=observed.count,
        seconds=observed.seconds,
        cpu_seconds=observed.cpu,
        peak_rss_mib=observed.rss,
        server_cpu_seconds=observed.server_cpu,
        server_name=source.server_name,
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
    source: Source,
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
                process, counter, source=source, options=options, started=started, log_path=log_path
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
    source: Source,
    options: WorkerOptions,
    started: float,
    log_path: Path,
) -> _Observed:
    goal, deadline = source.rows, started + options.timeout
    server = source.server().start()
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
                    server_cpu=server.sample(),
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
        server.stop()


async def _stop(process: asyncio.subprocess.Process, grace: float = 120.0) -> None:
    """SIGTERM (the worker delivers what it read, checkpoints and exits 0), SIGKILL after `grace`."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()
