"""The operator's own metrics, served on its `/metrics` (a registry of its own, not the default one).

Reconciliations total, failed and their duration by kind and namespace; pipelines by phase and
paused; lifecycle actions and readiness transitions by namespace. The only per-pipeline series,
`deltaforge_operator_pipeline_ready`, is removed when its Pipeline is deleted, so a fleet that
churns pipelines does not grow the operator's memory or the scrape.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

KIND = "Pipeline"
PHASES = ("Pending", "Running", "Paused", "Stopped", "Degraded", "Failed")


class Action(StrEnum):
    """Values of the `action` label: what the operator did to a Pipeline's worker."""

    CREATE = "create"
    UPDATE = "update"
    PAUSE = "pause"
    STOP = "stop"
    RESUME = "resume"
    RESTART = "restart"
    RESTORE = "restore"
    DELETE = "delete"
    CLEANUP = "cleanup"  # dropping the slot on deletion (reclaimPolicy: Delete)


class Result(StrEnum):
    """Values of the `result` label."""

    SUCCESS = "success"
    ERROR = "error"
    SKIPPED = "skipped"  # a cleanup the escape-hatch annotation skipped


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(f"deltaforge_operator_{name}", text, labels, registry=self.registry)

        def gauge(name: str, text: str, *labels: str) -> Gauge:
            return Gauge(f"deltaforge_operator_{name}", text, labels, registry=self.registry)

        self.reconciliations = counter("reconciliations", "Reconciliation passes.", "kind", "namespace")
        self.failures = counter(
            "reconciliation_failures", "Reconciliation passes that failed (retried with backoff).",
            "kind", "namespace",
        )  # fmt: skip
        self.duration = Histogram(
            "deltaforge_operator_reconcile_duration_seconds", "Time of one reconciliation pass.",
            ["kind", "namespace"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )  # fmt: skip
        self.actions = counter(
            "lifecycle_actions", "Lifecycle actions on pipelines by outcome.", "namespace", "action", "result"
        )
        self.transitions = counter(
            "readiness_transitions", "Changes of a Pipeline's Ready condition.", "namespace", "to"
        )
        self.pipelines = gauge("pipelines", "Pipelines by phase.", "namespace", "phase")
        self.paused = gauge(
            "pipelines_paused", "Pipelines whose spec.state is paused or stopped.", "namespace"
        )
        self.ready = gauge(
            "pipeline_ready", "1 while a Pipeline is Ready; removed with the Pipeline.",
            "namespace", "pipeline", "tenant",
        )  # fmt: skip
        self.last_pass = gauge(
            "last_reconcile_timestamp_seconds",
            "When the operator last completed a reconciliation or resync pass (Unix time).",
        )
        self._lock = threading.Lock()  # reconciliation passes run in threads
        self._phases: dict[tuple[str, str], tuple[str, bool]] = {}
        self._tenants: dict[tuple[str, str], str] = {}

    def action(self, namespace: str, action: Action, result: Result = Result.SUCCESS) -> None:
        self.actions.labels(namespace, action.value, result.value).inc()

    def observe(
        self, namespace: str, name: str, tenant: str, *, phase: str, ready: bool, paused: bool
    ) -> None:
        """Record one Pipeline's latest phase and readiness, and refresh the per-phase gauges."""
        key = (namespace, name)
        with self._lock:
            previous_tenant = self._tenants.get(key)
            if previous_tenant is not None and previous_tenant != tenant:
                self.ready.remove(namespace, name, previous_tenant)
            self._tenants[key] = tenant
            self.ready.labels(namespace, name, tenant).set(1 if ready else 0)
            self._phases[key] = (phase, paused)
            self._refresh(namespace)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted Pipeline's series."""
        key = (namespace, name)
        with self._lock:
            tenant = self._tenants.pop(key, None)
            if tenant is not None:
                self.ready.remove(namespace, name, tenant)
            if self._phases.pop(key, None) is not None:
                self._refresh(namespace)

    def _refresh(self, namespace: str) -> None:
        entries = [entry for (ns, _), entry in self._phases.items() if ns == namespace]
        counts = Tally(phase for phase, _ in entries)
        for phase in PHASES:
            self.pipelines.labels(namespace, phase).set(counts.get(phase, 0))
        self.paused.labels(namespace).set(sum(1 for _, paused in entries if paused))
