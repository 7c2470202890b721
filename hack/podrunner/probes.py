"""Readiness and liveness probes with the kubelet's thresholds, and the HTTP/TCP checks they run."""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass
class Probe:
    """One probe of one container: its timing, its consecutive results and its current verdict."""

    spec: Json
    healthy: bool
    next_due: float
    successes: int = 0
    failures: int = 0

    @classmethod
    def start(cls, spec: Json, *, started_at: float, initially_healthy: bool) -> Probe:
        return cls(
            spec=spec, healthy=initially_healthy, next_due=started_at + spec.get("initialDelaySeconds", 0)
        )

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def record(self, succeeded: bool, now: float) -> bool:
        """Count one result; return True when the verdict flips (after success/failure thresholds)."""
        self.next_due = now + self.period
        if succeeded:
            self.successes, self.failures = self.successes + 1, 0
            flips = not self.healthy and self.successes >= self.spec.get("successThreshold", 1)
        else:
            self.failures, self.successes = self.failures + 1, 0
            flips = self.healthy and self.failures >= self.spec.get("failureThreshold", 3)
        if flips:
            self.healthy = not self.healthy
        return flips


def resolve_port(port: int | str, container: Json) -> int:
    if isinstance(port, int) or port.isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"container {container['name']} declares no port named {port!r}")


def check(spec: Json, pod_ip: str, container: Json, timeout: float) -> bool:
    """Run the probe's action once against the pod's address."""
    try:
        if "httpGet" in spec:
            action = spec["httpGet"]
            host = action.get("host") or pod_ip
            port = resolve_port(action["port"], container)
            headers = {header["name"]: header["value"] for header in action.get("httpHeaders", [])}
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                connection.request("GET", action.get("path", "/"), headers=headers)
                status = connection.getresponse().status
            finally:
                connection.close()
            return 200 <= status < 400
        if "tcpSocket" in spec:
            action = spec["tcpSocket"]
            port = resolve_port(action["port"], container)
            with socket.create_connection((action.get("host") or pod_ip, port), timeout=timeout):
                return True
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return False
