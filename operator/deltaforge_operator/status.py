"""From observed facts to a Pipeline's status: phase and conditions. Pure, no I/O.

Ready is never taken from what the operator did, only from what it saw: the Deployment's rollout
and availability, the worker pod's readiness (the worker's own `/readyz`), and the worker's own
report in the status (`deltaforge.status_report`): a heartbeat written by the current worker and
not older than HEARTBEAT_STALE_SECONDS, with no error. A pod can pass its probe while the worker
cannot reach the API server or has wedged after answering it; only the heartbeat shows that.
Conditions have the `metav1.Condition` shape, and a condition whose status did not change keeps
its `lastTransitionTime`, so `kubectl describe` shows since when a pipeline has been Ready, not
when the operator last looked.

The operator owns `observedGeneration`, `phase`, `conditions`, `source.kind` and
`worker.restarts`; the worker owns the rest (its heartbeat, last error, position, lag, sinks).
Both merge-patch only their own fields, so neither overwrites the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Paused")
# The worker reports every 20 s (deltaforge.status_report.REPORT_INTERVAL): three missed reports
# mean it cannot write, or no longer runs its loop.
HEARTBEAT_STALE_SECONDS = 60.0
Condition = tuple[str, str, str, str]  # type, status, reason, message


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp from the API server (`...Z`), or None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeploymentFacts:
    replicas: int
    generation: int
    observed_generation: int
    updated: int
    available: int
    current: int  # pods that exist, old or new (scaling down is done when this is 0)

    @classmethod
    def of(cls, deployment: Mapping[str, Any]) -> DeploymentFacts:
        spec, status = deployment.get("spec", {}), deployment.get("status", {})
        return cls(
            replicas=int(spec.get("replicas", 1)),
            generation=int(deployment["metadata"].get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
            current=int(status.get("replicas", 0)),
        )

    @property
    def rolled_out(self) -> bool:
        """The controller acted on the newest template and every replica runs it."""
        return self.observed_generation >= self.generation and self.updated >= self.replicas

    @property
    def available_now(self) -> bool:
        return self.rolled_out and self.replicas > 0 and self.available >= self.replicas


@dataclass(frozen=True)
class PodFacts:
    ready: bool
    restarts: int
    waiting_reason: str
    waiting_message: str
    last_exit_code: int | None
    last_exit_message: str
    started_at: datetime | None = None  # when the running container started

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> PodFacts:
        status = pod.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
        )
        containers = status.get("containerStatuses") or [{}]
        worker = containers[0]
        waiting = worker.get("state", {}).get("waiting", {})
        last = (
            worker.get("lastState", {}).get("terminated") or worker.get("state", {}).get("terminated") or {}
        )
        return cls(
            ready=ready,
            restarts=int(worker.get("restartCount", 0)),
            waiting_reason=str(waiting.get("reason", "")),
            waiting_message=str(waiting.get("message", "")),
            last_exit_code=int(last["exitCode"]) if "exitCode" in last else None,
            last_exit_message=str(last.get("message", "")).strip(),
            started_at=parse_time(worker.get("state", {}).get("running", {}).get("startedAt")),
        )

    @property
    def failing(self) -> bool:
        """Not ready after the worker already failed: a crash loop, a wrong config or a missing key."""
        return not self.ready and (
            self.restarts > 0 or (self.last_exit_code or 0) != 0 or self.waiting_reason.endswith("Error")
        )

    @property
    def last_error(self) -> str | None:
        if self.waiting_reason.endswith("Error") and self.waiting_message:
            return f"{self.waiting_reason}: {self.waiting_message}"
        if self.last_exit_code:
            detail = f": {self.last_exit_message}" if self.last_exit_message else "; see the worker's log"
            return f"the worker exited with code {self.last_exit_code}{detail}"
        return None


@dataclass(frozen=True)
class SinkReport:
    name: str
    connected: bool
    error: str | None


@dataclass(frozen=True)
class WorkerReport:
    """What the worker last wrote into the status about itself."""

    heartbeat: datetime | None
    error: str | None
    sinks: tuple[SinkReport, ...] = ()

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> WorkerReport:
        worker = status.get("worker") or {}
        error = worker.get("lastError")
        return cls(
            heartbeat=parse_time(worker.get("lastHeartbeatTime")),
            error=str(error) if error else None,
            sinks=tuple(
                SinkReport(str(sink.get("name", "")), bool(sink.get("connected")), sink.get("lastError"))
                for sink in status.get("sinks") or []
            ),
        )

    def wake_key(self) -> tuple[object, ...]:
        """The part of the report that can change a condition: what a report must differ in to be
        worth a reconciliation. Heartbeat times, positions and lag change with every report and
        are left out, so a fleet of reporting workers does not keep the operator busy."""
        return self.heartbeat is None, self.error, tuple((sink.name, sink.connected) for sink in self.sinks)


@dataclass(frozen=True)
class Observed:
    """Everything the status is computed from, gathered by one reconciliation."""

    generation: int
    state: str  # running | paused | stopped
    source_kind: str | None
    invalid: str | None = None  # the InvalidSpec message
    missing_secrets: Sequence[str] = ()
    deployment: DeploymentFacts | None = None
    pod: PodFacts | None = None
    report: WorkerReport | None = None


def _condition(kind: str, ok: bool, reason: str, message: str) -> Condition:
    return kind, "True" if ok else "False", reason, message


_NOT_RUNNING = {
    "paused": "spec.state is paused: the worker is scaled to zero and keeps its position; its Deployment "
    "and the rest stay for a quick resume",
    "stopped": "spec.state is stopped: no worker runs and its Deployment, Service, RBAC, config and "
    "credentials Secret are removed; the checkpoint ConfigMap and the slot keep its position",
}


def _paused(state: str) -> Condition:
    if state == "running":
        return _condition("Paused", False, "Running", "spec.state is running")
    return _condition("Paused", True, state.capitalize(), f"spec.state is {state}")


def _current_report(report: WorkerReport | None, pod: PodFacts | None) -> WorkerReport | None:
    """The report if the running worker wrote it: one from before its start is a predecessor's."""
    if report is None or report.heartbeat is None:
        return None
    started = pod.started_at if pod is not None else None
    return report if started is None or report.heartbeat >= started else None


def _reported_readiness(report: WorkerReport | None, pod: PodFacts | None, now: datetime) -> Condition:
    """Ready once the Deployment and its pod are available: decided by the worker's own report."""
    current = _current_report(report, pod)
    if current is None or current.heartbeat is None:
        started = pod.started_at if pod is not None else None
        waited = (now - started).total_seconds() if started is not None else 0.0
        if waited <= HEARTBEAT_STALE_SECONDS:
            return _condition(
                "Ready", False, "WorkerNotReady", "waiting for the worker's first status report"
            )
        return _condition(
            "Ready", False, "WorkerHeartbeatStale",
            f"the worker has not reported its status in the {waited:.0f} s since it started (limit "
            f"{HEARTBEAT_STALE_SECONDS:.0f} s): it must reach the API server and patch its Pipeline's status",
        )  # fmt: skip
    age = (now - current.heartbeat).total_seconds()
    if age > HEARTBEAT_STALE_SECONDS:
        return _condition(
            "Ready", False, "WorkerHeartbeatStale",
            f"the worker's last status report is {age:.0f} s old (limit {HEARTBEAT_STALE_SECONDS:.0f} s)",
        )  # fmt: skip
    if current.error:
        return _condition("Ready", False, "WorkerNotReady", current.error)
    return _condition(
        "Ready", True, "Streaming", "the worker reports its source connected and its required sinks writing"
    )


def _failing_sinks(report: WorkerReport | None, pod: PodFacts | None) -> str | None:
    current = _current_report(report, pod)
    failing = [sink for sink in current.sinks if not sink.connected] if current is not None else []
    if not failing:
        return None
    return "; ".join(f"sink {sink.name}: {sink.error or 'not connected'}" for sink in failing)


def conditions_for(facts: Observed, *, now: datetime) -> list[Condition]:
    """(type, status, reason, message) for each condition type, in CONDITION_TYPES order."""
    deployment, pod = facts.deployment, facts.pod
    running = facts.state == "running"
    ready = _condition("Ready", False, "Starting", "waiting for the worker's Deployment to be created")
    progressing = _condition("Progressing", True, "Deploying", "creating the worker's Deployment")
    degraded = _condition("Degraded", False, "AsExpected", "nothing is failing")
    paused = _paused(facts.state)
    if facts.invalid is not None:
        ready = _condition("Ready", False, "InvalidSpec", facts.invalid)
        progressing = _condition("Progressing", False, "InvalidSpec", "fix the spec; nothing is rolled out")
        return [ready, progressing, degraded, paused]
    if not running:
        scaled_down = deployment is None or deployment.current == 0
        ready = _condition("Ready", False, facts.state.capitalize(), _NOT_RUNNING[facts.state])
        progressing = (
            _condition("Progressing", False, "ScaledDown", "no worker runs")
            if scaled_down
            else _condition("Progressing", True, "ScalingDown", "stopping the worker")
        )
        return [ready, progressing, degraded, paused]
    if facts.missing_secrets:
        names = ", ".join(facts.missing_secrets)
        ready = _condition("Ready", False, "SecretNotFound", f"referenced but missing: {names}")
        degraded = _condition("Degraded", True, "SecretNotFound", f"the worker cannot start without {names}")
    if deployment is not None:
        if deployment.rolled_out:
            progressing = _condition("Progressing", False, "Deployed", "the worker runs the current spec")
        else:
            progressing = _condition("Progressing", True, "Deploying", "rolling out the current spec")
        if pod is not None and pod.failing:
            message = pod.last_error or "the worker is not ready"
            degraded = _condition("Degraded", True, "WorkerFailing", f"{message} (restarts: {pod.restarts})")
            ready = _condition("Ready", False, "WorkerFailing", message)
        elif deployment.available_now:
            ready = _reported_readiness(facts.report, pod, now)
        elif not facts.missing_secrets:
            current = _current_report(facts.report, pod)
            reported = current.error if current is not None else None
            ready = _condition(
                "Ready", False, "WorkerNotReady", reported or "the worker is starting or its /readyz fails"
            )
        failing_sinks = _failing_sinks(facts.report, pod)
        if ready[1] == "True" and failing_sinks:
            degraded = _condition("Degraded", True, "SinkFailing", failing_sinks)
    return [ready, progressing, degraded, paused]


def phase_for(facts: Observed, conditions: Sequence[Condition]) -> str:
    ready, degraded = conditions[0], conditions[2]
    if facts.invalid is not None or ready[2] in ("WorkerFailing", "SecretNotFound"):
        return "Failed"
    if facts.state != "running":
        return facts.state.capitalize()
    if ready[1] == "True":
        return "Degraded" if degraded[1] == "True" else "Running"
    return "Pending"


def merge_conditions(
    new: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
    *,
    generation: int,
    now: datetime,
) -> list[Json]:
    """metav1.Conditions: `lastTransitionTime` is kept unless the status changed."""
    before = {str(c.get("type")): c for c in previous}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = []
    for kind, status, reason, message in new:
        old = before.get(kind)
        kept = old is not None and old.get("status") == status and old.get("lastTransitionTime")
        result.append({
            "type": kind, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": old["lastTransitionTime"] if kept and old is not None else stamp,
        })  # fmt: skip
    return result


def compute_status(facts: Observed, previous: Mapping[str, Any], *, now: datetime) -> Json:
    """The status to write (a merge patch: fields the worker writes are left alone)."""
    conditions = conditions_for(facts, now=now)
    pod = facts.pod
    status: Json = {
        "observedGeneration": facts.generation,
        "phase": phase_for(facts, conditions),
        "conditions": merge_conditions(
            conditions, previous.get("conditions") or [], generation=facts.generation, now=now
        ),
        "worker": {"restarts": pod.restarts if pod else 0},
    }
    if facts.source_kind is not None:
        status["source"] = {"kind": facts.source_kind}
    return status


def ready_of(status: Mapping[str, Any]) -> str | None:
    """The Ready condition's status ("True", "False", "Unknown"), or None before the first write."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return None


def changed(new: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Whether merge-patching `new` would change anything (so an idle resync writes nothing).

    One level of objects is merged as the API server merges them: keys `new` does not name (the
    worker's own fields) are left alone, and a None removes a key.
    """
    for key, value in new.items():
        old = previous.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if any(old.get(field) != item for field, item in value.items()):
                return True
        elif old != value:
            return True
    return False


def deleting_status(
    previous: Mapping[str, Any],
    *,
    generation: int,
    state: str,
    message: str,
    failure: str | None,
    now: datetime,
) -> Json:
    """The status while a Pipeline with a slot to drop is being deleted, or when that failed."""
    conditions = [
        _condition("Ready", False, "Deleting", message),
        _condition(
            "Progressing", failure is None, "CleaningUp" if failure is None else "CleanupFailed", message
        ),
        _condition("Degraded", True, "CleanupFailed", failure)
        if failure is not None
        else _condition("Degraded", False, "AsExpected", "nothing is failing"),
        _paused(state),
    ]
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(
            conditions, previous.get("conditions") or [], generation=generation, now=now
        ),
    }
