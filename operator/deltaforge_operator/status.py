"""From observed facts to a Pipeline's status: phase and conditions. Pure, no I/O.

Ready is never taken from what the operator did, only from what it saw: the Deployment's rollout
and availability and the worker pod's readiness, which is the worker's own `/readyz` (source
connected, required sinks writing). The worker's heartbeat in `status.worker` joins these facts
once the worker writes it. Conditions have the `metav1.Condition` shape, and a condition whose
status did not change keeps its `lastTransitionTime`, so `kubectl describe` shows since when a
pipeline has been Ready, not when the operator last looked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Json = dict[str, Any]
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Paused")


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
class Observed:
    """Everything the status is computed from, gathered by one reconciliation."""

    generation: int
    state: str  # running | paused | stopped
    source_kind: str | None
    invalid: str | None = None  # the InvalidSpec message
    missing_secrets: Sequence[str] = ()
    deployment: DeploymentFacts | None = None
    pod: PodFacts | None = None


def _condition(kind: str, ok: bool, reason: str, message: str) -> tuple[str, str, str, str]:
    return kind, "True" if ok else "False", reason, message


def conditions_for(facts: Observed) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) for each condition type, in CONDITION_TYPES order."""
    deployment, pod = facts.deployment, facts.pod
    running = facts.state == "running"
    ready = _condition("Ready", False, "Starting", "waiting for the worker's Deployment to be created")
    progressing = _condition("Progressing", True, "Deploying", "creating the worker's Deployment")
    degraded = _condition("Degraded", False, "AsExpected", "nothing is failing")
    paused = (
        _condition("Paused", False, "Running", "spec.state is running")
        if running
        else _condition("Paused", True, facts.state.capitalize(), f"spec.state is {facts.state}")
    )
    if facts.invalid is not None:
        ready = _condition("Ready", False, "InvalidSpec", facts.invalid)
        progressing = _condition("Progressing", False, "InvalidSpec", "fix the spec; nothing is rolled out")
        return [ready, progressing, degraded, paused]
    if not running:
        scaled_down = deployment is None or deployment.current == 0
        ready = _condition("Ready", False, facts.state.capitalize(),
                           f"spec.state is {facts.state}: the worker is scaled to zero and keeps its position")  # fmt: skip
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
            ready = _condition("Ready", True, "Streaming", "the worker is available and its /readyz passes")
        elif not facts.missing_secrets:
            ready = _condition(
                "Ready", False, "WorkerNotReady", "the worker is starting or its /readyz fails"
            )
    return [ready, progressing, degraded, paused]


def phase_for(facts: Observed, conditions: Sequence[tuple[str, str, str, str]]) -> str:
    ready = conditions[0]
    if facts.invalid is not None or ready[2] in ("WorkerFailing", "SecretNotFound"):
        return "Failed"
    if facts.state != "running":
        return facts.state.capitalize()
    return "Running" if ready[1] == "True" else "Pending"


def merge_conditions(
    new: Sequence[tuple[str, str, str, str]],
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
    conditions = conditions_for(facts)
    pod = facts.pod
    status: Json = {
        "observedGeneration": facts.generation,
        "phase": phase_for(facts, conditions),
        "conditions": merge_conditions(
            conditions, previous.get("conditions") or [], generation=facts.generation, now=now
        ),
        "worker": {
            "restarts": pod.restarts if pod else 0,
            "lastError": pod.last_error if pod else None,
        },
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
