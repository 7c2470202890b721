"""status.py and lifecycle.py: observed facts to conditions and phase, and spec changes to actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from deltaforge_operator.lifecycle import actions, message
from deltaforge_operator.metrics import Action
from deltaforge_operator.status import (
    DeploymentFacts,
    Observed,
    PodFacts,
    changed,
    compute_status,
    ready_of,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
EARLIER = "2026-05-01T11:00:00Z"
AVAILABLE = DeploymentFacts(
    replicas=1, generation=2, observed_generation=2, updated=1, available=1, current=1
)
READY_POD = PodFacts(ready=True, restarts=0, waiting_reason="", waiting_message="", last_exit_code=None,
                     last_exit_message="")  # fmt: skip


def _status(facts: Observed, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    return compute_status(facts, previous or {}, now=NOW)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_ready_needs_an_available_deployment_and_a_ready_worker() -> None:
    status = _status(
        Observed(generation=3, state="running", source_kind="postgres", deployment=AVAILABLE, pod=READY_POD)
    )
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
    status = _status(
        Observed(generation=3, state="running", source_kind="postgres", deployment=rolling, pod=READY_POD)
    )
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
    status = _status(
        Observed(generation=1, state="running", source_kind="postgres", deployment=AVAILABLE, pod=pod)
    )
    assert _conditions(status)["Ready"] == ("False", "WorkerFailing")
    assert _conditions(status)["Degraded"] == ("True", "WorkerFailing")
    assert status["phase"] == "Failed"
    assert status["worker"] == {
        "restarts": 3,
        "lastError": "the worker exited with code 1: wal_level is replica",
    }


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


def test_invalid_spec() -> None:
    status = _status(Observed(generation=4, state="running", source_kind=None, invalid="spec.x: bad"))
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", "spec.x: bad")
    assert status["phase"] == "Failed"
    assert "source" not in status


def test_transition_time_is_kept_while_the_status_does_not_change() -> None:
    facts = Observed(
        generation=2, state="running", source_kind="postgres", deployment=AVAILABLE, pod=READY_POD
    )
    previous = {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Streaming", "message": "m", "lastTransitionTime": EARLIER},
        {"type": "Paused", "status": "True", "reason": "Paused", "message": "m", "lastTransitionTime": EARLIER},
    ]}  # fmt: skip
    times = {c["type"]: c["lastTransitionTime"] for c in _status(facts, previous)["conditions"]}
    assert times["Ready"] == EARLIER
    assert times["Paused"] == "2026-05-01T12:00:00Z"


def test_an_unchanged_status_is_not_written_again() -> None:
    facts = Observed(
        generation=2, state="running", source_kind="postgres", deployment=AVAILABLE, pod=READY_POD
    )
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
