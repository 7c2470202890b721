"""A contender that writes the change set to a destination, timed from its spawn until it holds every row.

The destination is a Kafka topic (`Topic`) or a Redis stream (`bench.redis_stream.Stream`); it
counts its records without reading them (a topic's end offsets, a stream's XLEN). The clock
starts just before the process is spawned and stops when that count reaches the number of rows: start-up (an interpreter or a JVM), connecting, and the last
acknowledgements from the broker are all inside the figure. Nothing is subtracted. CPU seconds
(utime + stime of every thread, from /proc/<pid>/stat) and the peak RSS (VmHWM) are read at that
same moment, before the process is asked to stop. Then it gets SIGTERM, must exit 0, and the
destination must hold exactly the row count. Our worker (`bench.worker`) and Debezium
(`bench.debezium_engine`) are both measured this way.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench import kafka
from bench.kafka import RecordCounter
from bench.measurement import Measurement
from bench.procstat import ServerWatch, cpu_seconds, peak_rss_mib, run_delay_seconds

POLL_SECONDS = 0.1


class Counter(Protocol):
    async def count(self) -> int: ...


class Destination(Protocol):
    """Where a contender writes, how to count what it holds, and how long it may take to fill it."""

    @property
    def name(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def broker_pid(self) -> int | None: ...  # the server behind it, to report its CPU over the same span
    @property
    def system(self) -> str: ...  # in messages: "records in Kafka"
    @property
    def label(self) -> str: ...  # in messages: "topic <name>"

    def counter(self) -> AbstractAsyncContextManager[Counter]: ...
    def create(self) -> None: ...
    def delete(self) -> None: ...
    def sink(self) -> dict[str, Any]: ...  # the worker's `spec.sinks` entry writing here
    def as_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Topic:
    """A fresh Kafka topic, counted by its end offsets (bench.kafka)."""

    bootstrap: str
    name: str
    partitions: int
    timeout: float
    broker_pid: int | None = None  # the local Kafka broker
    system: str = "Kafka"

    @property
    def label(self) -> str:
        return f"topic {self.name}"

    def counter(self) -> RecordCounter:
        return RecordCounter(self.bootstrap, self.name, self.partitions)

    def create(self) -> None:
        asyncio.run(kafka.create_topic(self.bootstrap, self.name, self.partitions))

    def delete(self) -> None:
        asyncio.run(kafka.delete_topic(self.bootstrap, self.name))

    def sink(self) -> dict[str, Any]:
        """The worker's Kafka sink: the native envelope, zstd (the default compression)."""
        return {
            "name": "kafka",
            "kafka": {
                "bootstrapServers": self.bootstrap,
                "topic": self.name,
                "envelope": "native",
                "compression": "zstd",
            },
        }

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.name, "partitions": self.partitions}


@dataclass(frozen=True)
class ChangeSet:
    """The change set as one contender reads it: how many rows, and the server side to watch."""

    rows: int  # the goal in Kafka
    server: Callable[[], ServerWatch]  # started with the contender, sampled at its goal
    server_name: str  # how the server figures are named (Measurement.server_name)


@dataclass(frozen=True)
class Process:
    """How to start a contender: `name` is used in messages."""

    name: str
    argv: list[str]
    env: dict[str, str]
    directory: Path  # its working directory
    log_path: Path  # its stdout and stderr


@dataclass
class Observed:
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

    def measurement(
        self, contender: str, change_set: ChangeSet, destination: Destination, details: dict[str, Any]
    ) -> Measurement:
        return Measurement(
            contender=contender,
            events=self.count,
            seconds=self.seconds,
            cpu_seconds=self.cpu,
            peak_rss_mib=self.rss,
            server_cpu_seconds=self.server_cpu,
            server_name=change_set.server_name,
            details={
                # Start-up is inside `seconds`; these two show how the time splits, they replace nothing.
                "firstRecordSeconds": None if self.first_record is None else round(self.first_record, 3),
                "streamingEventsPerSecond": self.streaming_rate,
                "waitingForCpuSeconds": round(self.waiting, 3),
                "brokerCpuSeconds": None if self.broker_cpu is None else round(self.broker_cpu, 3),
                "deliveredTo": destination.system,
                **destination.as_json(),
                **details,
            },
        )


def tail(path: Path, limit: int = 3000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else ""


def measure(process: Process, change_set: ChangeSet, destination: Destination) -> Observed:
    """Run `process` until `destination` holds the change set, stop it, and check what it left behind."""
    with open(process.log_path, "wb") as log:
        observed, returncode, final = asyncio.run(_drive(process, change_set, destination, log=log.fileno()))
    if returncode != 0:
        raise RuntimeError(f"{process.name} exited with {returncode} on SIGTERM:\n{tail(process.log_path)}")
    if final != change_set.rows:
        raise RuntimeError(
            f"{destination.label} holds {final} records after {process.name} stopped, expected {change_set.rows}"
        )
    return observed


def _cpu_or_none(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


async def _drive(
    process: Process, change_set: ChangeSet, destination: Destination, *, log: int
) -> tuple[Observed, int | None, int]:
    """Start the contender, wait for the goal, stop it; the final record count comes after the stop."""
    async with destination.counter() as counter:
        if await counter.count():
            raise RuntimeError(f"{destination.label} is not empty before {process.name} starts")
        broker_before = _cpu_or_none(destination.broker_pid)
        started = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            *process.argv,
            cwd=process.directory,
            env=process.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            observed = await _wait_for_goal(child, counter, process, change_set, destination, started=started)
            if broker_before is not None and observed.broker_cpu is not None:
                observed.broker_cpu -= broker_before
        finally:
            await _stop(child)
        final = await counter.count()
    return observed, child.returncode, final


async def _wait_for_goal(
    child: asyncio.subprocess.Process,
    counter: Counter,
    process: Process,
    change_set: ChangeSet,
    destination: Destination,
    *,
    started: float,
) -> Observed:
    goal, deadline = change_set.rows, started + destination.timeout
    server = change_set.server().start()
    first_record: float | None = None
    first_count = 0
    try:
        while True:
            count = await counter.count()
            now = time.perf_counter()
            if count and first_record is None:
                first_record, first_count = now - started, count
            if count >= goal:
                # Read everything at this moment, before the contender is asked to stop.
                return Observed(
                    count=count,
                    seconds=now - started,
                    cpu=cpu_seconds(child.pid),
                    rss=peak_rss_mib(child.pid),
                    waiting=run_delay_seconds(child.pid),
                    server_cpu=server.sample(),
                    broker_cpu=_cpu_or_none(destination.broker_pid),
                    first_record=first_record,
                    first_count=first_count,
                )
            if child.returncode is not None:
                raise RuntimeError(
                    f"{process.name} exited with {child.returncode} after {count} of {goal} records:\n"
                    f"{tail(process.log_path)}"
                )
            if now > deadline:
                raise RuntimeError(
                    f"only {count} of {goal} records in {destination.system} after {destination.timeout:.0f} s "
                    f"({process.name}):\n{tail(process.log_path)}"
                )
            await asyncio.sleep(POLL_SECONDS)
    finally:
        server.stop()


async def _stop(child: asyncio.subprocess.Process, grace: float = 120.0) -> None:
    """SIGTERM (the contender delivers what it read, commits its position and exits 0), SIGKILL
    after `grace`."""
    if child.returncode is None:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), grace)
        except TimeoutError:
            child.kill()
            await child.wait()
