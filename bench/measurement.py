"""One contender's result: how many events, how long, how much CPU and memory it took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measurement:
    contender: str
    events: int
    seconds: float  # wall clock from process start until the goal was observed
    cpu_seconds: float  # user + system of the contender's own process over the same span
    peak_rss_mib: float
    server_cpu_seconds: float | None = None  # the server side of the stream (walsender, mariadbd)
    server_name: str = "server"  # names the server figures in the JSON: `<name>CpuSeconds`
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_seconds / self.events * 100_000 if self.events else 0.0

    @property
    def server_cpu_per_100k(self) -> float | None:
        if self.server_cpu_seconds is None or not self.events:
            return None
        return self.server_cpu_seconds / self.events * 100_000

    def as_json(self) -> dict[str, Any]:
        server = self.server_cpu_per_100k
        return {
            "contender": self.contender,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "eventsPerSecond": round(self.events_per_second, 1),
            "cpuSeconds": round(self.cpu_seconds, 3),
            "cpuSecondsPer100kEvents": round(self.cpu_per_100k, 3),
            "peakRssMiB": round(self.peak_rss_mib, 1),
            f"{self.server_name}CpuSeconds": None
            if self.server_cpu_seconds is None
            else round(self.server_cpu_seconds, 3),
            f"{self.server_name}CpuSecondsPer100kEvents": None if server is None else round(server, 3),
            **self.details,
        }
