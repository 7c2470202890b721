"""status.py and lifecycle.py: observed facts to conditions and phase, and spec changes to actions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deltaforge_operator.lifecycle import actions, message, wake_key
from deltaforge_operator.metrics import Action
from deltaforge_operator.status import (
    HEARTBEAT_STALE_SECONDS,
    DeploymentFacts,
    Observed,
    PodFacts,
    SinkReport,
    WorkerReport,
    changed,
    compute_status,
    deleting_status,
    ready_of,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
EARLIER = "2026-05-01T11:00:00Z"
AVAILABLE = DeploymentFacts(
    replicas=1, generation=2, observed_generation=2, updated=1, available=1, current=1
)
READY_POD = PodFacts(ready=True, restarts=0, waiting_reason="", waiting_message="", last_exit_code=None,
                     last_exit_message="", started_at=NOW - timedelta(seconds=30))  # fmt: skip
FRESH = WorkerReport(heartbeat=NOW - timedelta(seconds=5), error=None,
                     sinks=(SinkReport("events", connected=True, error=None),))  # fmt: skip


def _running(**facts: Any) -> Observed:
    """A running Pipeline whose Deployment is available, pod ready and report fresh, unless overridden."""
    arguments: dict[str, Any] = {"generation": 2, "state": "running", "source_kind": "postgres",
                                 "deployment": AVAILABLE, "pod": READY_POD, "report": FRESH} | facts  # fmt: skip
    return Observed(**arguments)


def _status(facts: Observed, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    return compute_status(facts, previous or {}, now=NOW)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_needs_an_available_deployment_a_ready_pod_and_a_fresh_report() -> None:
    status = _status(_running(generation=3))
    assert _conditions(status) == {
        "Ready": ("True", "Streaming"), "Progressing": ("False", "Deployed"),
        "Degraded": ("False", "AsExpected"), "Paused": ("False", "Running"),
    }  # fmt: skip
    assert (status["phase"], status["observedGeneration"], status["source"]) == (
        "Running",
        3,
        {"kind": "postgres"},
    )
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_a_rollout_in_progress_is_not_ready() -> None:
    rolling = DeploymentFacts(
        replicas=1, generation=3, observed_generation=2, updated=0, available=1, current=1
    )
    status = _status(_running(generation=3, deployment=rolling))
    assert _conditions(status)["Ready"] == ("False", "WorkerNotReady")
    assert _conditions(status)["Progressing"] == ("True", "Deploying")
    assert status["phase"] == "Pending"


def test_a_crashing_worker_is_degraded_and_failed_with_its_error() -> None:
    pod = PodFacts.of({
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                   "lastState": {"terminated": {"exitCode": 1, "message": "wal_level is replica\n"}}}],
        }
    })  # fmt: skip
    status = _status(_running(generation=1, pod=pod))
    assert _conditions(status)["Ready"] == ("False", "WorkerFailing")
    assert _conditions(status)["Degraded"] == ("True", "WorkerFailing")
    assert status["conditions"][0]["message"] == "the worker exited with code 1: wal_level is replica"
    assert status["phase"] == "Failed"
    # worker.lastError is the worker's own field: the operator writes only the restarts.
    assert status["worker"] == {"restarts": 3}


def test_without_a_report_from_the_current_worker_ready_waits_then_turns_stale() -> None:
    predecessor = WorkerReport(heartbeat=NOW - timedelta(seconds=40), error=None)  # before the pod started
    for report in (None, predecessor):
        ready = _status(_running(report=report))["conditions"][0]
        assert (ready["reason"], ready["message"]) == (
            "WorkerNotReady",
            "waiting for the worker's first status report",
        )
    long_ago = replace(READY_POD, started_at=NOW - timedelta(seconds=HEARTBEAT_STALE_SECONDS + 5))
    ready = _status(_running(report=None, pod=long_ago))["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "WorkerHeartbeatStale")
    assert "has not reported its status in the 65 s since it started" in ready["message"]


def test_a_stale_heartbeat_is_not_ready_even_when_the_pod_is() -> None:
    old = WorkerReport(heartbeat=NOW - timedelta(seconds=HEARTBEAT_STALE_SECONDS + 1), error=None)
    pod = replace(READY_POD, started_at=NOW - timedelta(hours=1))
    status = _status(_running(report=old, pod=pod))
    assert _conditions(status)["Ready"] == ("False", "WorkerHeartbeatStale")
    assert status["conditions"][0]["message"] == "the worker's last status report is 61 s old (limit 60 s)"
    assert status["phase"] == "Pending"


def test_the_workers_reported_error_is_the_ready_message() -> None:
    failing = WorkerReport(heartbeat=NOW, error="source: reconnecting: connection refused")
    not_ready_pod = replace(READY_POD, ready=False)
    for pod in (READY_POD, not_ready_pod):  # whichever notices first: the report or the probe
        ready = _status(_running(report=failing, pod=pod))["conditions"][0]
        assert (ready["reason"], ready["message"]) == (
            "WorkerNotReady",
            "source: reconnecting: connection refused",
        )


def test_a_failing_optional_sink_degrades_a_ready_pipeline() -> None:
    report = WorkerReport(heartbeat=NOW, error=None, sinks=(
        SinkReport("events", connected=True, error=None), SinkReport("cache", connected=False, error="timeout"),
    ))  # fmt: skip
    status = _status(_running(report=report))
    assert _conditions(status)["Ready"] == ("True", "Streaming")
    assert _conditions(status)["Degraded"] == ("True", "SinkFailing")
    assert status["conditions"][2]["message"] == "sink cache: timeout"
    assert status["phase"] == "Degraded"


def test_the_workers_report_is_read_from_the_status() -> None:
    report = WorkerReport.of({
        "worker": {"lastHeartbeatTime": "2026-05-01T11:59:55Z", "lastError": "sink events: down", "restarts": 2},
        "sinks": [{"name": "events", "connected": False, "lastError": "down"}],
    })  # fmt: skip
    assert report == WorkerReport(
        heartbeat=NOW - timedelta(seconds=5), error="sink events: down",
        sinks=(SinkReport("events", connected=False, error="down"),),
    )  # fmt: skip
    assert WorkerReport.of({}) == WorkerReport(heartbeat=None, error=None)
    assert WorkerReport.of({"worker": {"lastHeartbeatTime": "not a time"}}).heartbeat is None


def test_only_changes_that_matter_wake_the_operator() -> None:
    def body(generation: int = 1, **changes: Any) -> dict[str, Any]:
        metadata: dict[str, Any] = {"generation": generation, "annotations": changes.pop("annotations", {})}
        metadata.update(changes.pop("metadata", {}))
        worker = {"lastHeartbeatTime": "2026-05-01T11:59:55Z", **changes.pop("worker", {})}
        return {"metadata": metadata, "status": {"worker": worker, "source": {"position": "0/1"}, **changes}}

    heartbeat = body(worker={"lastHeartbeatTime": "2026-05-01T12:00:15Z"}, source={"position": "0/9"})
    assert wake_key(heartbeat) == wake_key(body())
    for changed_body in (
        body(worker={"lastError": "source: down"}),
        body(sinks=[{"name": "events", "connected": False}]),
        body(generation=2),
        body(metadata={"deletionTimestamp": EARLIER}),
        body(metadata={"finalizers": ["deltaforge.io/slot-cleanup"]}),
        body(annotations={"deltaforge.io/restart": "1"}),
    ):
        assert wake_key(changed_body) != wake_key(body()), changed_body


def test_missing_secret_is_named() -> None:
    status = _status(
        Observed(generation=1, state="running", source_kind="postgres", missing_secrets=["Secret pg"])
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("SecretNotFound", "referenced but missing: Secret pg")


@pytest.mark.parametrize("state", ["paused", "stopped"])
def test_paused_and_stopped(state: str) -> None:
    scaling = DeploymentFacts(
        replicas=0, generation=2, observed_generation=2, updated=0, available=1, current=1
    )
    status = _status(Observed(generation=2, state=state, source_kind="postgres", deployment=scaling))
    reason = state.capitalize()
    assert _conditions(status) == {
        "Ready": ("False", reason), "Progressing": ("True", "ScalingDown"),
        "Degraded": ("False", "AsExpected"), "Paused": ("True", reason),
    }  # fmt: skip
    assert status["phase"] == reason
    released = "Deployment, Service, RBAC, config and credentials Secret are removed"
    assert (released in status["conditions"][0]["message"]) == (state == "stopped")


def test_deleting_status_names_the_failure() -> None:
    previous = {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Streaming", "message": "m", "lastTransitionTime": EARLIER},
    ]}  # fmt: skip
    status = deleting_status(previous, generation=3, state="running", message="cleanup", failure="timed out",
                             now=NOW)  # fmt: skip
    assert _conditions(status) == {
        "Ready": ("False", "Deleting"), "Progressing": ("False", "CleanupFailed"),
        "Degraded": ("True", "CleanupFailed"), "Paused": ("False", "Running"),
    }  # fmt: skip
    assert status["conditions"][2]["message"] == "timed out"
    cleaning = deleting_status({}, generation=3, state="stopped", message="dropping", failure=None, now=NOW)
    assert _conditions(cleaning)["Progressing"] == ("True", "CleaningUp")
    assert _conditions(cleaning)["Degraded"] == ("False", "AsExpected")


def test_invalid_spec() -> None:
    status = _status(Observed(generation=4, state="running", source_kind=None, invalid="spec.x: bad"))
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", "spec.x: bad")
    assert status["phase"] == "Failed"
    assert "source" not in status


def test_transition_time_is_kept_while_the_status_does_not_change() -> None:
    facts = _running()
    previous = {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Streaming", "message": "m", "lastTransitionTime": EARLIER},
        {"type": "Paused", "status": "True", "reason": "Paused", "message": "m", "lastTransitionTime": EARLIER},
    ]}  # fmt: skip
    times = {c["type"]: c["lastTransitionTime"] for c in _status(facts, previous)["conditions"]}
    assert times["Ready"] == EARLIER
    assert times["Paused"] == "2026-05-01T12:00:00Z"


def test_an_unchanged_status_is_not_written_again() -> None:
    facts = _running()
    first = _status(facts)
    assert ready_of(first) == "True"
    assert not changed(_status(facts, first), first)
    assert changed(_status(Observed(generation=3, state="paused", source_kind="postgres"), first), first)
    # Fields the worker writes (its heartbeat) are neither compared nor removed.
    assert not changed(first, {**first, "worker": {**first["worker"], "lastHeartbeatTime": EARLIER}})
    assert ready_of({}) is None


def _deployment(state: str = "running", config_hash: str = "h1") -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"deltaforge.io/state": state}},
        "spec": {"template": {"metadata": {"annotations": {"deltaforge.io/config-hash": config_hash}}}},
    }


SEEN = {"observedGeneration": 1}
STOPPED = {"observedGeneration": 1, "phase": "Stopped"}  # a stopped Pipeline has no Deployment
# (running Deployment, status, spec state, rendered hash, restart requested, kinds created) -> actions
ACTION_CASES: list[tuple[dict[str, Any] | None, dict[str, Any], str, str, bool, list[str], list[Action]]] = [
    (None, {}, "running", "h1", False, ["Deployment"], [Action.CREATE]),
    (None, SEEN, "running", "h1", False, ["Deployment"], [Action.RESTORE]),
    (_deployment(), SEEN, "running", "h1", False, [], []),
    (_deployment(), SEEN, "running", "h2", False, [], [Action.UPDATE]),
    (_deployment(), SEEN, "paused", "h1", False, [], [Action.PAUSE]),
    (_deployment(), SEEN, "stopped", "h1", False, [], [Action.STOP]),
    (_deployment("paused"), SEEN, "running", "h1", True, [], [Action.RESUME, Action.RESTART]),
    (_deployment(), SEEN, "running", "h1", False, ["Service"], [Action.RESTORE]),
    (None, STOPPED, "running", "h1", False, ["Deployment"], [Action.RESUME]),
    (None, STOPPED, "paused", "h1", False, ["Deployment"], [Action.PAUSE]),
    (None, STOPPED, "stopped", "h1", False, [], []),
    (None, SEEN, "stopped", "h1", False, [], []),  # released before the Stopped phase was written
]


@pytest.mark.parametrize("case", ACTION_CASES)
def test_actions_come_from_what_runs_versus_the_spec(
    case: tuple[dict[str, Any] | None, dict[str, Any], str, str, bool, list[str], list[Action]],
) -> None:
    deployment, status, state, config_hash, restart, created, expected = case
    found = actions(deployment=deployment, status=status, state=state, config_hash=config_hash, restart=restart,
                    created=created)  # fmt: skip
    assert found == expected


def test_restore_message_names_what_came_back() -> None:
    assert message(Action.RESTORE, ["Service", "Role"]) == ("Restored", "re-created missing Service, Role")
