"""Checking what a pipeline delivered to Kafka (or to Redis streams, read back as the same
records by tests/support/redis_streams.py) against what the source database committed.

Fault tests (worker kills, sink outages) end with the same question: did every committed change
arrive, and is everything extra a harmless replay? Counting records cannot answer it, so the
verifier reads every record and checks the delivery contract:

- zero loss: every committed row version is in Kafka;
- at-least-once only: a duplicate is a byte-identical replay (key, value, headers) of its first
  copy, with the same `event_id`, so a consumer can drop it by id;
- deterministic identity: the `event_id` header equals the JSON `id`, which equals the id derived
  from (source id, commit position, index in transaction);
- per-key order: after dropping replays, the changes of one row appear in commit order, all in
  one partition;
- the last delivered version of a row equals the row the source holds.

The workload contract (see tests/support/load.py): rows have an integer key column and a
`version` column that is 0 on insert and incremented by every update, so the versions a row went
through are known from its final state alone, without a log of what the writer did. Records use
the native envelope.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deltaforge.events import event_id as derive_event_id

Row = dict[str, Any]
SAMPLES = 10  # problems listed per kind in a report; the counts are always complete


@dataclass(frozen=True)
class Delivered:
    """One Kafka record, as read back from the topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # CreateTime or, on topics configured for it, LogAppendTime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> Delivered:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((name, bytes(value)) for name, value in record.headers),
        )

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def lsn_order(position: str) -> int:
    """A PostgreSQL commit position ("16/B374D848") as a number that sorts like the WAL."""
    high, low = position.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _whole(position: str) -> str:
    return position


@dataclass(frozen=True)
class Positions:
    """What the verifier must know of a source's commit positions: how they sort (`order`; None
    skips the commit-order check, the version order is still checked), and which part of a
    position event ids derive from (`identity`: the whole PostgreSQL LSN, a MariaDB GTID)."""

    order: Callable[[str], Any] | None = lsn_order
    identity: Callable[[str], str] = _whole


POSTGRES_POSITIONS = Positions()


@dataclass(frozen=True)
class Change:
    """The parts of a native-envelope record the checks need."""

    event_id: str
    op: str
    table: str
    key: Any
    version: int | None
    after: Row | None
    position: str
    index: int


def decode(record: Delivered, key_column: str, version_column: str) -> Change:
    """Raises ValueError (with the reason) when the record is not a readable native envelope."""
    if record.value is None:
        raise ValueError("a record without a value (tombstone)")
    try:
        document = json.loads(record.value)
        source, tx = document["source"], document["tx"]
        after = document["after"]
        row = after if after is not None else document["before"] or {}
        key = (document["key"] or {}).get(key_column, row.get(key_column))
        version = after.get(version_column) if after is not None else None
        return Change(
            event_id=str(document["id"]),
            op=str(document["op"]),
            table=str(source["table"]),
            key=key,
            version=None if version is None else int(version),
            after=after,
            position=str(source["position"]),
            index=int(tx["index"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a native envelope ({type(error).__name__}: {error})") from error


@dataclass
class DeliveryReport:
    """What the verifier found; `ok` is the delivery contract, `summary()` the text for humans."""

    committed_rows: int = 0
    expected_changes: int = 0
    records: int = 0
    unique_events: int = 0
    duplicated_events: int = 0  # events delivered more than once
    max_copies: int = 0
    max_duplicated_run: int = 0  # longest run of consecutive replayed records in one partition
    replay_runs: int = 0  # how many such runs (roughly: how many times a batch was sent again)
    missing_count: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched_duplicates: list[str] = field(default_factory=list)
    identity_errors: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    value_mismatches: list[str] = field(default_factory=list)

    @property
    def duplicate_records(self) -> int:
        return self.records - self.unique_events

    @property
    def ok(self) -> bool:
        return not (
            self.missing_count
            or self.unexpected
            or self.mismatched_duplicates
            or self.identity_errors
            or self.order_violations
            or self.value_mismatches
        )

    def summary(self) -> str:
        lines = [
            f"committed rows {self.committed_rows}, committed changes {self.expected_changes}, "
            f"records {self.records}, unique events {self.unique_events}",
            f"loss: {self.missing_count} missing changes",
            f"duplicates: {self.duplicate_records} records ({self.duplicated_events} events, "
            f"at most {self.max_copies} copies of one), {self.replay_runs} replayed runs, "
            f"max duplicated run {self.max_duplicated_run} records",
        ]
        for title, problems in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("duplicates that differ from their first copy", self.mismatched_duplicates),
            ("identity errors", self.identity_errors),
            ("order violations", self.order_violations),
            ("final values differing from the source", self.value_mismatches),
        ):
            if problems:
                lines.append(f"{title} ({len(problems)}{'+' if len(problems) >= SAMPLES else ''}):")
                lines.extend(f"  {problem}" for problem in problems[:SAMPLES])
        lines.append("verdict: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def _note(problems: list[str], text: str) -> None:
    if len(problems) < SAMPLES:
        problems.append(text)


@dataclass
class _History:
    """The first copies of one row's changes, in the order Kafka holds them."""

    partition: tuple[str, int]
    changes: list[tuple[Change, Delivered]] = field(default_factory=list)


def verify_delivery(
    committed: Mapping[str, Sequence[Row]],
    records: Iterable[Delivered],
    *,
    key_column: str = "id",
    version_column: str = "version",
    positions: Positions = POSTGRES_POSITIONS,
) -> DeliveryReport:
    """Compare `committed` (table name -> the source's rows, read after the writer stopped) with
    every record read back from the sink; `positions` says how the source's positions compare."""
    report = DeliveryReport()
    first_copy: dict[str, Delivered] = {}
    copies: dict[str, int] = {}
    histories: dict[tuple[str, Any], _History] = {}
    run: dict[tuple[str, int], int] = {}
    ordered = sorted(records, key=lambda record: (record.topic, record.partition, record.offset))
    for record in ordered:
        report.records += 1
        partition = (record.topic, record.partition)
        try:
            change = decode(record, key_column, version_column)
        except ValueError as error:
            _note(report.identity_errors, f"{record.where}: {error}")
            continue
        header = record.header("event_id")
        if header is None or header.decode() != change.event_id:
            _note(
                report.identity_errors, f"{record.where}: header event_id {header!r} != id {change.event_id}"
            )
        seen = first_copy.get(change.event_id)
        if seen is not None:
            copies[change.event_id] += 1
            run[partition] = run.get(partition, 0) + 1
            if run[partition] == 1:
                report.replay_runs += 1
            report.max_duplicated_run = max(report.max_duplicated_run, run[partition])
            if (seen.key, seen.value, seen.headers) != (record.key, record.value, record.headers):
                _note(
                    report.mismatched_duplicates,
                    f"{record.where} repeats event {change.event_id} of {seen.where} with other bytes",
                )
            continue
        run[partition] = 0
        first_copy[change.event_id] = record
        copies[change.event_id] = 1
        source_id = json.loads(record.value or b"{}")["source"]["name"]
        if derive_event_id(source_id, positions.identity(change.position), change.index) != change.event_id:
            _note(
                report.identity_errors,
                f"{record.where}: id {change.event_id} is not derived from ({source_id}, {change.position}, {change.index})",
            )
        history = histories.setdefault((change.table, change.key), _History(partition))
        if history.partition != partition:
            _note(
                report.order_violations,
                f"{change.table} {key_column}={change.key} is in {history.partition} and {partition}",
            )
        history.changes.append((change, record))
    report.unique_events = len(first_copy)
    report.duplicated_events = sum(1 for count in copies.values() if count > 1)
    report.max_copies = max(copies.values(), default=0)
    _compare(
        report,
        committed,
        histories=histories,
        key_column=key_column,
        version_column=version_column,
        position_order=positions.order,
    )
    return report


def _compare(
    report: DeliveryReport,
    committed: Mapping[str, Sequence[Row]],
    *,
    histories: Mapping[tuple[str, Any], _History],
    key_column: str,
    version_column: str,
    position_order: Callable[[str], Any] | None,
) -> None:
    """Per row: the versions it went through, in order, each once, ending at the source's row."""
    expected_keys: set[tuple[str, Any]] = set()
    for table, rows in committed.items():
        for row in rows:
            key, final = row[key_column], int(row[version_column])
            expected_keys.add((table, key))
            report.committed_rows += 1
            report.expected_changes += final + 1
            history = histories.get((table, key))
            changes = [change for change, _ in history.changes] if history else []
            versions = [change.version for change in changes]
            absent = [version for version in range(final + 1) if version not in versions]
            report.missing_count += len(absent)
            if absent:
                _note(report.missing, f"{table} {key_column}={key}: versions {_ranges(absent)} of 0-{final}")
            extra = [v for v in versions if v is None or not 0 <= v <= final]
            if extra or len(versions) != len(set(versions)):
                _note(
                    report.unexpected,
                    f"{table} {key_column}={key}: delivered versions {versions}, source is at {final}",
                )
            for change in changes:
                wanted_op = "c" if change.version == 0 else "u"
                if change.op != wanted_op:
                    _note(report.unexpected, f"{table} {key_column}={key} v{change.version}: op {change.op}")
            if versions != sorted(versions, key=lambda version: -1 if version is None else version):
                _note(report.order_violations, f"{table} {key_column}={key}: versions arrived as {versions}")
            if position_order is not None and history is not None:
                _check_commit_order(
                    report,
                    history,
                    table=table,
                    key_column=key_column,
                    key=key,
                    position_order=position_order,
                )
            if history and changes[-1].version == final and changes[-1].after != row:
                _note(
                    report.value_mismatches,
                    f"{table} {key_column}={key}: delivered {changes[-1].after}, source has {row}",
                )
    for (table, key), history in histories.items():
        if (table, key) not in expected_keys:
            first = history.changes[0][1]
            _note(
                report.unexpected, f"{table} {key_column}={key} is not in the source (first at {first.where})"
            )


def _check_commit_order(
    report: DeliveryReport,
    history: _History,
    *,
    table: str,
    key_column: str,
    key: Any,
    position_order: Callable[[str], Any],
) -> None:
    previous: tuple[Any, int] | None = None
    for change, record in history.changes:
        current = (position_order(change.position), change.index)
        if previous is not None and current <= previous:
            _note(
                report.order_violations,
                f"{table} {key_column}={key}: {record.where} at {change.position}#{change.index} "
                "comes after a later commit",
            )
        previous = current


def _ranges(numbers: Sequence[int]) -> str:
    spans: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        spans.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ",".join(spans)


# --- reading the topics back -------------------------------------------------------------------


class Coverage:
    """Tells when every committed row version has been read, so a test waits for a drain instead
    of sleeping a guessed time."""

    def __init__(
        self, committed: Mapping[str, Sequence[Row]], key_column: str = "id", version_column: str = "version"
    ) -> None:
        self.key_column, self.version_column = key_column, version_column
        self.wanted = {
            (table, row[key_column], version)
            for table, rows in committed.items()
            for row in rows
            for version in range(int(row[version_column]) + 1)
        }

    def add(self, records: Sequence[Delivered]) -> bool:
        """Feed newly read records; True once nothing committed is missing."""
        for record in records:
            try:
                change = decode(record, self.key_column, self.version_column)
            except ValueError:
                continue
            self.wanted.discard((change.table, change.key, change.version))
        return not self.wanted


async def _read(
    bootstrap: str,
    topics: Sequence[str],
    until: Callable[[Sequence[Delivered]], bool] | None,
    within: float,
    read_committed: bool,
) -> tuple[list[Delivered], bool]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        request_timeout_ms=10_000, max_partition_fetch_bytes=4 * 1024 * 1024,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )  # fmt: skip
    deadline = time.monotonic() + within
    await consumer.start()
    try:
        partitions: list[TopicPartition] = []
        for topic in topics:
            # The consumer's public metadata calls do not refresh its partition map; the client's do.
            found = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
            while not found and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                found = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
            if not found:
                raise AssertionError(f"topic {topic} does not exist on {bootstrap}")
            partitions.extend(TopicPartition(topic, number) for number in sorted(found))
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Delivered] = []
        satisfied = until is None
        ends: dict[TopicPartition, int] | None = None
        while time.monotonic() < deadline:
            if satisfied and ends is None:
                ends = await consumer.end_offsets(partitions)
            if ends is not None and await _reached(consumer, ends):
                return records, True
            batches = await consumer.getmany(timeout_ms=250, max_records=5000)
            fresh = [Delivered.of(record) for batch in batches.values() for record in batch]
            records.extend(fresh)
            if not satisfied and until is not None:
                satisfied = until(fresh)
        return records, False
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if int(await consumer.position(partition)) < end:
            return False
    return True


def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    until: Callable[[Sequence[Delivered]], bool] | None = None,
    within: float = 60,
    read_committed: bool = False,
) -> tuple[list[Delivered], bool]:
    """Every record of `topics` from the beginning. Without `until`: up to the end offsets of the
    moment reading began. With it: until `until(new records)` returns True, then up to the end
    offsets of that moment. The flag says whether that happened within `within` seconds.
    `read_committed`: skip records of aborted transactions, as an exactly-once consumer does."""
    return asyncio.run(_read(bootstrap, topics, until, within, read_committed))


async def _admin(bootstrap: str, action: Callable[[AIOKafkaAdminClient], Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await action(admin)
    finally:
        await admin.close()


def create_topics(
    bootstrap: str, names: Sequence[str], *, partitions: int, config: Mapping[str, str] | None = None
) -> None:
    """Topics made up front with several partitions, so per-key order is checked across partitions
    (auto-created topics would have one)."""
    topics = [NewTopic(name, partitions, 1, topic_configs=dict(config or {})) for name in names]
    asyncio.run(_admin(bootstrap, lambda admin: admin.create_topics(topics)))


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    asyncio.run(_admin(bootstrap, lambda admin: admin.delete_topics(list(names))))
