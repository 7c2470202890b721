"""What every scenario shares: the options, the order of a run, the printed summary, the JSON.

A run is always the same: check that the servers answer, prepare the change set before any
reader starts, create a fresh destination for each contender that writes one (our worker,
Debezium: a Kafka topic, or a Redis stream for the worker in `pg-redis`), run the contenders one
after the other on that change set, clean up whatever happened, then print the table and the
ratios and write the JSON. A scenario module supplies the server-specific parts as a
`Scenario`: how to prepare and drop the workload, how to run its reference reader, what the
worker's manifest source and sink and Debezium's connector are, and its targets.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from bench import debezium_engine, delivery, report, sampler, worker
from bench.measurement import Measurement
from bench.workload import new_name
from hack.stack.config import HOST, Settings
from hack.stack.kafka import Kafka

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PRODUCERS = (worker.NAME, debezium_engine.NAME)  # the contenders that write to a topic of their own
PROFILE_SUFFIXES = {
    "sample": "samples.json",
    "cprofile": "pstats",
    "pyinstrument": "pyisession",
    "memray": "memray.bin",
}


@dataclass(frozen=True)
class Options:
    contenders: tuple[str, ...]
    rows: int = 200_000
    tx_rows: int = 1000
    shape: str = "narrow"  # bench.shapes: the table's columns
    batch_events: int = 5000
    partitions: int = 1
    timeout: float = 900.0
    profile: str | None = None
    results_dir: Path = RESULTS_DIR
    keep_logs: bool = False


@dataclass(frozen=True)
class Target:
    """A scenario's target: `goal` in words, whether it was `met`, the `measured` figure in words,
    and the same as JSON."""

    goal: str
    met: bool
    measured: str
    document: dict[str, Any]


class Workload(Protocol):
    @property
    def rows(self) -> int: ...

    def as_json(self) -> dict[str, object]: ...


W = TypeVar("W", bound=Workload)


class Scenario(ABC, Generic[W]):
    """The server-specific half of a scenario; `run()` is the other half."""

    name: str  # as on the command line: pg-kafka
    reference: str  # the contender the worker is compared with: the ceiling
    server_title: str  # what the server CPU line measures
    debezium_target: float  # the worker's goal against Debezium: this multiple of its events/s

    @property
    def contenders(self) -> tuple[str, ...]:
        return (self.reference, worker.NAME, debezium_engine.NAME)

    service: str  # the local stack's database server: `python3 -m hack.stack up <service> kafka`

    @abstractmethod
    def unreachable(self, settings: Settings) -> str | None:
        """Why the database server does not answer, or None when it does."""

    @abstractmethod
    def prepare(self, settings: Settings, name: str, options: Options) -> W:
        """A fresh database called `name` holding the change set, written before any reader starts."""

    @abstractmethod
    def written(self, workload: W) -> str:
        """One line on what `prepare` wrote."""

    @abstractmethod
    def drop(self, settings: Settings, name: str) -> None:
        """Remove the database `name` and whatever holds server resources for it."""

    @abstractmethod
    def run_reference(
        self, settings: Settings, workload: W, *, log_path: Path, timeout: float
    ) -> Measurement:
        """Run the reference reader on the change set, from spawn to exit."""

    @abstractmethod
    def worker_source(self, settings: Settings, workload: W) -> worker.Source:
        """What the worker's manifest reads, and how to watch the server side of it."""

    @abstractmethod
    def target(self, measurements: list[Measurement]) -> Target:
        """The scenario's target against its reference and whether this run met it."""

    sink_service = "kafka"  # the local stack's service the worker writes to

    def sink_unreachable(self, settings: Settings) -> str | None:
        """Why the worker's sink does not answer, or None when it does."""
        try:
            socket.create_connection((HOST, settings.kafka_port), timeout=5).close()
        except OSError as error:
            return f"Kafka at {settings.kafka_bootstrap} is not reachable ({error})"
        return None

    def destination(
        self, settings: Settings, name: str, contender: str, options: Options
    ) -> delivery.Destination:
        """Where `contender` writes: a fresh Kafka topic called `name`."""
        return delivery.Topic(
            bootstrap=settings.kafka_bootstrap,
            name=name,
            partitions=options.partitions,
            timeout=options.timeout,
            broker_pid=_broker_pid(settings),
        )

    def debezium_connector(self, settings: Settings, workload: W) -> debezium_engine.Connector:
        """Debezium's connector on the change set, starting where the other contenders start."""
        raise NotImplementedError(f"{self.name} has no Debezium contender")

    def target_debezium(self, measurements: list[Measurement]) -> Target | None:
        """The worker's throughput against Debezium's; None unless both ran."""
        ours, theirs = report.find(measurements, worker.NAME), report.find(measurements, debezium_engine.NAME)
        if ours is None or theirs is None:
            return None
        throughput = ours.events_per_second / theirs.events_per_second
        return Target(
            goal=f"{self.debezium_target:.1f}x Debezium's events/s",
            met=throughput >= self.debezium_target,
            measured=f"{throughput:.2f}x: {ours.events_per_second:,.0f}/s against {theirs.events_per_second:,.0f}/s",
            document={"throughputRatio": self.debezium_target, "measured": throughput},
        )


def ceiling_target(measurements: list[Measurement], reference: str, share: float) -> Target:
    """A target of `share` of the ceiling's (`reference`'s) events/s for the worker, in this run."""
    ratio = report.ratios(measurements, worker.NAME, reference)
    ours = report.find(measurements, worker.NAME)
    throughput = None if ratio is None else ratio["throughput"]
    rate = "" if ours is None else f" at {ours.events_per_second:,.0f}/s"
    return Target(
        goal=f"{share:.0%} of the {reference} ceiling",
        met=throughput is not None and throughput >= share,
        measured=("ceiling not measured" if throughput is None else f"{throughput:.0%}") + rate,
        document={"throughputRatio": share, "measured": throughput},
    )


def rate_target(measurements: list[Measurement], goal: int, route: str) -> Target:
    """A target of `goal` events/s for the worker on `route`, end to end: start-up included."""
    ours = report.find(measurements, worker.NAME)
    rate = 0.0 if ours is None else ours.events_per_second
    return Target(
        goal=f"{route}: at least {goal // 1000}k events/s",
        met=rate >= goal,
        measured=f"{rate:,.0f}/s",
        document={"eventsPerSecond": goal},
    )


def run(scenario: Scenario[W], options: Options) -> int:
    settings = Settings.from_environment()
    _check_servers(scenario, settings)
    if debezium_engine.NAME in options.contenders:  # before the others run, not after
        debezium_engine.require()
    started_at = datetime.now(UTC)
    this = _Run(
        options=options,
        settings=settings,
        name=new_name("bench"),
        stamp=started_at.strftime("%Y%m%dT%H%M%SZ"),
        started_at=started_at,
        host=_host(),
    )
    workload, measurements = _contend(scenario, this)
    _summarize(scenario, this, measurements)
    path = options.results_dir / f"{scenario.name}-{this.stamp}.json"
    report.write_json(path, _document(scenario, this, workload, measurements))
    print(f"results: {path}")
    return 0


def _check_servers(scenario: Scenario[W], settings: Settings) -> None:
    """Fail at once, saying how to start the stack, when the database or Kafka does not answer."""
    problem = scenario.unreachable(settings) or scenario.sink_unreachable(settings)
    if problem is not None:
        raise SystemExit(
            f"bench: {problem}; start the local stack first: "
            f"python3 -m hack.stack up {scenario.service} {scenario.sink_service} (docs/local-stack.md)"
        )


def _host() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadAverage": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _broker_pid(settings: Settings) -> int | None:
    """The local stack's Kafka broker, whose CPU during the worker's run is worth knowing on 2 cores."""
    broker = Kafka(settings)
    return broker.pid() if broker.running() else None


@dataclass
class _Run:
    options: Options
    settings: Settings
    name: str
    stamp: str
    started_at: datetime
    host: dict[str, Any]

    def destination_name(self, contender: str) -> str:
        return f"{self.name}.{contender}"

    def profile_path(self, scenario: str) -> Path | None:
        if not self.options.profile:
            return None
        suffix = PROFILE_SUFFIXES[self.options.profile]
        return self.options.results_dir / f"{scenario}-{self.stamp}-worker.{suffix}"


def _measure(
    scenario: Scenario[W],
    this: _Run,
    contender: str,
    workload: W,
    destination: delivery.Destination | None,
) -> Measurement:
    options = this.options
    with tempfile.TemporaryDirectory(prefix=f"bench-{contender}-") as scratch:
        directory = Path(scratch)
        try:
            if contender == scenario.reference:
                return scenario.run_reference(
                    this.settings, workload, log_path=directory / "contender.log", timeout=options.timeout
                )
            assert destination is not None, f"{contender} writes to a destination"
            if contender == debezium_engine.NAME:
                assert isinstance(destination, delivery.Topic), "Debezium's harness writes to Kafka"
                return debezium_engine.run(
                    scenario.debezium_connector(this.settings, workload),
                    destination,
                    batch_events=options.batch_events,
                    cache_dir=this.settings.cache_dir,
                    directory=directory,
                )
            profile_path = this.profile_path(scenario.name)
            if profile_path is not None:
                profile_path.parent.mkdir(parents=True, exist_ok=True)
            worker_options = worker.WorkerOptions(
                destination=destination,
                batch_events=options.batch_events,
                profile=options.profile,
                profile_path=profile_path,
            )
            return worker.run(
                scenario.worker_source(this.settings, workload), worker_options, directory=directory
            )
        finally:
            if options.keep_logs:
                for log in directory.glob("*.log"):
                    options.results_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copy(log, options.results_dir / f"{scenario.name}-{this.stamp}-{contender}.log")


def _contend(scenario: Scenario[W], this: _Run) -> tuple[W, list[Measurement]]:
    """Prepare the change set, run each contender on it, and clean up whatever happened."""
    options, name, tag = this.options, this.name, f"[{scenario.name}]"
    measurements: list[Measurement] = []
    destinations: dict[str, delivery.Destination] = {}
    try:
        print(f"{tag} preparing {options.rows:,} {options.shape} rows in transactions of {options.tx_rows:,} "
              f"(database {name})", flush=True)  # fmt: skip
        workload = scenario.prepare(this.settings, name, options)
        print(f"{tag} {scenario.written(workload)}", flush=True)
        for contender in options.contenders:
            if contender in PRODUCERS:
                destination = scenario.destination(
                    this.settings, this.destination_name(contender), contender, options
                )
                destination.create()
                destinations[contender] = destination
        for contender in options.contenders:
            print(f"{tag} running {contender} ...", flush=True)
            measurement = _measure(scenario, this, contender, workload, destinations.get(contender))
            measurements.append(measurement)
            print(
                f"{tag}   {measurement.events:,} events in {measurement.seconds:.2f} s "
                f"({measurement.events_per_second:,.0f}/s)",
                flush=True,
            )
    finally:
        for destination in destinations.values():
            try:
                destination.delete()
            except Exception as error:
                print(f"{tag} could not delete {destination.label}: {error}", file=sys.stderr)
        try:
            scenario.drop(this.settings, name)
        except Exception as error:
            print(f"{tag} could not drop database {name}: {error}", file=sys.stderr)
    return workload, measurements


def _summarize(scenario: Scenario[W], this: _Run, measurements: list[Measurement]) -> None:
    print()
    print(report.table(measurements))
    print()
    for reference in (scenario.reference, debezium_engine.NAME):
        if reference not in scenario.contenders:
            continue
        ratio_name = f"{worker.NAME}/{reference}"
        print(report.ratio_line(ratio_name, report.ratios(measurements, worker.NAME, reference)))
    for line in (report.server_line(measurements, scenario.server_title), report.waiting_line(measurements)):
        if line:
            print(line)
    target, ours = scenario.target(measurements), report.find(measurements, worker.NAME)
    if ours is not None:
        print(
            f"target {target.goal}: {'met' if target.met else 'NOT met'} "
            f"({target.measured}; {report.first_record(ours)})"
        )
    debezium_target = scenario.target_debezium(measurements)
    theirs = report.find(measurements, debezium_engine.NAME)
    if debezium_target is not None and theirs is not None:
        print(
            f"target {debezium_target.goal}: {'met' if debezium_target.met else 'NOT met'} "
            f"({debezium_target.measured}; Debezium's {report.first_record(theirs)})"
        )
    profile_path = this.profile_path(scenario.name)
    if profile_path is not None:
        print("note: the worker ran under a profiler; its figures are not comparable to plain runs")
        print(f"profile: {profile_path}")
        if this.options.profile == "sample" and profile_path.exists():
            text = sampler.report(profile_path)
            profile_path.with_name(profile_path.name.replace(".samples.json", ".txt")).write_text(text + "\n")
            print(text)


def _document(
    scenario: Scenario[W], this: _Run, workload: W, measurements: list[Measurement]
) -> dict[str, Any]:
    options = this.options
    ratio = report.ratios(measurements, worker.NAME, scenario.reference)
    target = scenario.target(measurements)
    debezium_ratio = report.ratios(measurements, worker.NAME, debezium_engine.NAME)
    debezium_name = f"{worker.NAME}/{debezium_engine.NAME}"
    debezium_target = scenario.target_debezium(measurements)
    return {
        "scenario": scenario.name,
        "startedAt": this.started_at.isoformat(timespec="seconds"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {**this.host, "loadAverageAfter": [round(value, 2) for value in os.getloadavg()]},
        "parameters": {
            "rows": options.rows,
            "rowsPerTransaction": options.tx_rows,
            "shape": options.shape,
            "batchMaxEvents": options.batch_events,
            "partitions": options.partitions,
            "contenders": list(options.contenders),
            "profile": options.profile,
        },
        "workload": workload.as_json(),
        "results": [measurement.as_json() for measurement in measurements],
        "ratio": {"name": f"{worker.NAME}/{scenario.reference}", **ratio} if ratio else None,
        "target": {**target.document, "met": target.met},
        "debezium": {
            "ratio": {"name": debezium_name, **debezium_ratio} if debezium_ratio else None,
            "target": None
            if debezium_target is None
            else {**debezium_target.document, "met": debezium_target.met},
        },
    }
