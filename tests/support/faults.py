"""The source-independent parts of the fault tests: the seed, the pipelines' Kafka sink and
topics, random SIGKILLs of the worker, watching an outage, the drain that waits for every
committed change and then verifies what the sink holds, and the two delivery contracts a report
is held to (at-least-once, exactly-once).

A scenario's random choices come from one seed; it is printed, and DELTAFORGE_FAULT_SEED replays
a run. The drain works on any sink whose records can be read back as `Delivered` (Kafka topics,
Redis streams): it gets a `Reader` for it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest

from tests.fixtures.data_stack import unique_name
from tests.support.load import LoadWriter, committed_rows
from tests.support.verify import (
    POSTGRES_POSITIONS,
    Coverage,
    Delivered,
    DeliveryReport,
    Positions,
    create_topics,
    delete_topics,
    read_topics,
    verify_delivery,
)
from tests.support.worker import Worker, start_worker

Until = Callable[[Sequence[Delivered]], bool]
BATCH_EVENTS = 100  # spec.batch.maxEvents of the fault tests' pipelines


class Reader(Protocol):
    """Reads a sink's records from the beginning: with `until`, until it returns True for the new
    records and then to the end of that moment; the flag says whether that happened in time."""

    def __call__(self, *, until: Until | None = None, within: float = 60) -> tuple[list[Delivered], bool]: ...


def kafka_reader(bootstrap: str, topics: Sequence[str], *, read_committed: bool = False) -> Reader:
    def read(*, until: Until | None = None, within: float = 60) -> tuple[list[Delivered], bool]:
        return read_topics(bootstrap, topics, until=until, within=within, read_committed=read_committed)

    return read


@contextmanager
def fault_topics(bootstrap: str, tag: str, tables: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """Fresh topics `<prefix>.<table>` with three partitions each, so per-key order is checked
    across partitions (auto-created topics would have one); deleted afterwards, with the
    `<prefix>.checkpoints` topic an exactly-once pipeline may have made."""
    prefix = unique_name(tag)
    topics = [f"{prefix}.{table}" for table in tables]
    create_topics(bootstrap, topics, partitions=3)
    try:
        yield prefix, topics
    finally:
        delete_topics(bootstrap, [*topics, f"{prefix}.checkpoints"])


def kafka_sink(bootstrap: str, topic_prefix: str) -> dict[str, Any]:
    """A Kafka sink writing each table to the topic `<topic_prefix>.<table>`."""
    return {"kafka": {"bootstrapServers": bootstrap, "topic": f"{topic_prefix}.${{source.table}}"}}


def fault_seed() -> int:
    configured = os.environ.get("DELTAFORGE_FAULT_SEED")
    seed = int(configured) if configured else random.SystemRandom().randrange(2**32)
    print(f"fault seed: {seed} (DELTAFORGE_FAULT_SEED={seed} replays this schedule)")
    return seed


def fail(message: str, worker: Worker | None = None) -> NoReturn:
    log = f"\nworker log (tail):\n{worker.log()[-6000:]}" if worker is not None else ""
    pytest.fail(f"{message}{log}", pytrace=False)


def exactly_once(manifest: dict[str, Any], checkpoint_topic: str) -> dict[str, Any]:
    """`manifest` (one Kafka sink, a file checkpoint) turned exactly-once: the position then
    lives in `checkpoint_topic`, committed with each batch (docs/guarantees.md)."""
    spec = manifest["spec"]
    spec.pop("checkpoint")
    spec["sinks"][0]["kafka"].update(exactlyOnce=True, checkpointTopic=checkpoint_topic)
    return manifest


def assert_at_least_once(report: DeliveryReport, seed: int) -> None:
    """Every committed change arrived, and the duplicates are exact replays, bounded: a fault
    makes the next worker (or connection) send again at most the batch it wrote but had not
    checkpointed, so a batch sent k+1 times (a worker killed again before it stored that batch's
    checkpoint) makes runs of at most k batches in a partition."""
    assert report.ok, f"delivery contract broken (seed {seed}):\n{report.summary()}"
    assert report.unique_events == report.expected_changes
    bound = BATCH_EVENTS * max(report.max_copies - 1, 0)
    assert report.max_duplicated_run <= bound, (
        f"replays longer than one batch ({BATCH_EVENTS} events) per repeat (seed {seed}):\n{report.summary()}"
    )


def assert_exactly_once(report: DeliveryReport, seed: int) -> None:
    """What a read_committed consumer of an exactly-once pipeline sees: each change once."""
    assert report.ok, f"delivery contract broken (seed {seed}):\n{report.summary()}"
    assert report.duplicate_records == 0, (
        f"exactly-once delivered duplicates (seed {seed}):\n{report.summary()}"
    )
    assert report.unique_events == report.expected_changes


def drain_and_verify(
    writer: LoadWriter,
    read: Reader,
    worker: Worker,
    *,
    positions: Positions = POSTGRES_POSITIONS,
    on_stopped: Callable[[Worker], None] | None = None,
) -> tuple[DeliveryReport, list[Delivered]]:
    """Stop the writer, wait until every committed row version is in the sink, SIGTERM the
    worker (it must exit 0; `on_stopped` then checks what a graceful stop promises), and verify
    everything the sink holds against the rows the source holds."""
    stats = writer.stop()
    print(f"writer: {stats}")
    committed = committed_rows(writer.target, writer.tables)
    started = time.monotonic()
    _, drained = read(until=Coverage(committed).add, within=60)
    if worker.process.poll() is not None:
        fail(f"the worker exited with {worker.process.returncode} while draining", worker)
    if not drained:
        records, _ = read(within=60)
        report = verify_delivery(committed, records, positions=positions)
        fail(f"committed rows did not all reach the sink within 60 s:\n{report.summary()}", worker)
    print(f"drained in {time.monotonic() - started:.1f} s")
    if (code := worker.stop(timeout=30)) != 0:
        fail(f"the worker exited with {code} on SIGTERM, not 0", worker)
    if on_stopped is not None:
        on_stopped(worker)
    records, complete = read(within=60)
    if not complete:
        fail(f"could not read the sink to its end within 60 s ({len(records)} records read)")
    return verify_delivery(committed, records, positions=positions), records


def kill_at_random(worker: Worker, writer: LoadWriter, rng: random.Random, label: str) -> None:
    """SIGKILL during start-up (one time in four) or while streaming, at a random moment."""
    spawned = time.monotonic()
    during_startup = rng.random() < 0.25
    if during_startup:
        delay = rng.uniform(0.2, 1.5)
    else:
        worker.wait_ready(timeout=30)
        delay = rng.uniform(0.1, 3.0)
    time.sleep(delay)
    if worker.process.poll() is not None:
        fail(f"before kill {label} the worker exited by itself with {worker.process.returncode}", worker)
    if not writer.alive:
        writer.stop()  # raises the writer's error
    worker.kill()
    print(
        f"kill {label}: SIGKILL {delay:.2f} s {'after spawn' if during_startup else 'after ready'} "
        f"(worker lived {time.monotonic() - spawned:.2f} s, {writer.rows_so_far()} rows written so far)"
    )


def cleanup(writer: LoadWriter, worker: Worker | None) -> None:
    try:
        if writer.alive:
            writer.stop()
    finally:
        if worker is not None and worker.process.poll() is None:
            worker.kill()


def sigkill_storm(
    manifest: Path, writer: LoadWriter, rng: random.Random, kills: int, *, env: Mapping[str, str]
) -> float:
    """Start a worker and SIGKILL it at a random moment, `kills` times over; returns the highest
    peak RSS of those workers, in MiB."""
    peak = 0.0
    for kill in range(1, kills + 1):
        worker = start_worker(manifest, env=dict(env), log_name=f"worker-{kill}.log")
        try:
            kill_at_random(worker, writer, rng, f"{kill:2}/{kills}")
        finally:
            if worker.process.poll() is None:
                worker.kill()
            peak = max(peak, worker.peak_rss_mib)
    return peak


def storm_and_drain(
    manifest: Path,
    writer: LoadWriter,
    rng: random.Random,
    kills: int,
    *,
    env: Mapping[str, str],
    read: Reader,
    positions: Positions = POSTGRES_POSITIONS,
    rolling_restart: bool = False,
    on_stopped: Callable[[Worker], None] | None = None,
) -> tuple[DeliveryReport, float]:
    """Start the writer, SIGKILL `kills` workers at random moments, let a last one drain, and
    verify what `read` reads. `rolling_restart`: before the last worker, one more is stopped with
    SIGTERM under load; it must exit 0, and `on_stopped` checks what a graceful stop promises
    (also after the drain). Returns the report and the highest peak RSS of the workers, in MiB."""
    writer.start()
    worker: Worker | None = None
    try:
        peak = sigkill_storm(manifest, writer, rng, kills, env=env)
        if rolling_restart:
            worker = start_worker(manifest, env=dict(env), log_name="worker-sigterm.log")
            worker.wait_ready(timeout=30)
            time.sleep(rng.uniform(0.5, 2.0))
            if (code := worker.stop(timeout=30)) != 0:
                fail(f"the worker exited with {code} on SIGTERM under load, not 0", worker)
            if on_stopped is not None:
                on_stopped(worker)
            peak = max(peak, worker.peak_rss_mib)
        worker = start_worker(manifest, env=dict(env))
        worker.wait_ready(timeout=60)
        time.sleep(1.0)  # the survivor also streams live rows, not only the backlog
        report, _ = drain_and_verify(writer, read, worker, positions=positions, on_stopped=on_stopped)
    finally:
        cleanup(writer, worker)
    return report, max(peak, worker.peak_rss_mib)


def exactly_once_storm(
    manifest: Path,
    writer: LoadWriter,
    rng: random.Random,
    kills: int,
    *,
    env: Mapping[str, str],
    bootstrap: str,
    topics: Sequence[str],
    positions: Positions = POSTGRES_POSITIONS,
) -> tuple[DeliveryReport, float, list[str]]:
    """`storm_and_drain` for an exactly-once pipeline, verified as a read_committed consumer
    reads. Returns the report, the highest peak RSS of the workers, and lines for the fault
    report."""
    report, peak = storm_and_drain(
        manifest,
        writer,
        rng,
        kills,
        env=env,
        read=kafka_reader(bootstrap, topics, read_committed=True),
        positions=positions,
    )
    everything, _ = read_topics(bootstrap, topics, within=60)
    return (
        report,
        peak,
        [
            f"{kills} SIGKILLs, read_committed; writer {writer.stats}",
            f"records of aborted transactions (seen only by read_uncommitted): {len(everything) - report.records}",
        ],
    )


@dataclass
class Unready:
    """When /readyz first answered 503 during an outage (seconds into it), and why."""

    after: float | None = None
    reason: str = ""


def watch_outage(
    worker: Worker,
    writer: LoadWriter,
    seconds: float,
    what: str,
    sample: Callable[[float], None] | None = None,
    *,
    began: float | None = None,
) -> Unready:
    """Watch an outage of `what` until `seconds` after it `began` (monotonic; default: now) while
    the writer goes on: the worker must stay up, `sample(seconds into the outage)` checks what the
    scenario promises besides (every quarter second), and /readyz is expected to turn 503."""
    unready = Unready()
    began = time.monotonic() if began is None else began
    while (elapsed := time.monotonic() - began) < seconds:
        if worker.process.poll() is not None:
            fail(f"the worker exited with {worker.process.returncode} while {what} was down", worker)
        if not writer.alive:
            writer.stop()  # raises the writer's error
        if sample is not None:
            sample(elapsed)
        status, body = worker.get("/readyz")
        if status == 503 and unready.after is None:
            unready.after, unready.reason = round(elapsed, 1), json.loads(body)["reason"]
        time.sleep(0.25)
    return unready


def wait_reconnects(worker: Worker, at_least: int, within: float, what: str) -> int:
    """Wait until the worker's source counted `at_least` reconnects; returns the count."""
    deadline = time.monotonic() + within
    while (count := int(worker.metric("deltaforge_source_reconnects_total"))) < at_least:
        if worker.process.poll() is not None:
            fail(f"{what}: the worker exited with {worker.process.returncode}", worker)
        if time.monotonic() > deadline:
            fail(f"{what}: the worker counted {count} reconnects within {within:.0f} s", worker)
        time.sleep(0.25)
    return count
