"""The printed table and the JSON file of one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.measurement import Measurement

HEADERS = ("contender", "events", "seconds", "events/s", "CPU s/100k ev", "peak RSS MiB")


def _row(measurement: Measurement) -> tuple[str, ...]:
    return (
        measurement.contender,
        f"{measurement.events:,}",
        f"{measurement.seconds:.2f}",
        f"{measurement.events_per_second:,.0f}",
        f"{measurement.cpu_per_100k:.2f}",
        f"{measurement.peak_rss_mib:.1f}",
    )


def table(measurements: list[Measurement]) -> str:
    rows = [HEADERS, *(_row(measurement) for measurement in measurements)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADERS))]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
        ]
        return "  ".join(cells)

    return "\n".join([line(rows[0]), "  ".join("-" * width for width in widths), *map(line, rows[1:])])


def find(measurements: list[Measurement], contender: str) -> Measurement | None:
    return next((measurement for measurement in measurements if measurement.contender == contender), None)


def first_record(measurement: Measurement) -> str:
    """How a contender's time splits: start-up until its first record in its destination (Kafka,
    Redis), then its rate."""
    streaming = measurement.details.get("streamingEventsPerSecond")
    return (
        f"first record in {measurement.details.get('deliveredTo', 'Kafka')} after "
        f"{measurement.details.get('firstRecordSeconds')} s, "
        f"then {streaming or 0:,}/s"
    )


def ratios(measurements: list[Measurement], contender: str, reference: str) -> dict[str, float] | None:
    """The contender against the reference, both from this run: >1 time means slower."""
    by_name = {measurement.contender: measurement for measurement in measurements}
    if contender not in by_name or reference not in by_name:
        return None
    ours, theirs = by_name[contender], by_name[reference]
    return {
        "time": ours.seconds / theirs.seconds,
        "throughput": ours.events_per_second / theirs.events_per_second,
        "cpuPerEvent": ours.cpu_per_100k / theirs.cpu_per_100k if theirs.cpu_per_100k else float("inf"),
        "peakRss": ours.peak_rss_mib / theirs.peak_rss_mib if theirs.peak_rss_mib else float("inf"),
    }


def ratio_line(name: str, values: dict[str, float] | None) -> str:
    if values is None:
        return f"ratio {name}: not measured (a contender was skipped)"
    return (
        f"ratio {name}: time {values['time']:.2f}x, throughput {values['throughput']:.2f}x, "
        f"CPU per event {values['cpuPerEvent']:.1f}x, peak RSS {values['peakRss']:.2f}x"
    )


def server_line(measurements: list[Measurement], title: str) -> str:
    """The server's CPU per event for each contender; `title` says which server process it is."""
    parts = [
        f"{measurement.contender} {per:.2f} s/100k ev"
        for measurement in measurements
        if (per := measurement.server_cpu_per_100k) is not None
    ]
    return f"{title} CPU: " + ", ".join(parts) if parts else ""


def waiting_line(measurements: list[Measurement]) -> str:
    """How long each contender was runnable but had no core: the neighbours' share of its time."""
    parts = [
        f"{measurement.contender} {waiting:.2f} s ({100 * waiting / measurement.seconds:.0f}% of its time)"
        for measurement in measurements
        if isinstance(waiting := measurement.details.get("waitingForCpuSeconds"), float | int)
        and measurement.seconds > 0
    ]
    return "runnable but waiting for a CPU: " + ", ".join(parts) if parts else ""


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
