"""Which lifecycle actions a reconciliation performs, and how each is announced. Pure.

Actions are derived by comparing what runs (the Deployment as it is) with what the spec asks for,
never from which kopf event arrived, so an operator restart, a missed event or a resync names the
same actions for the same change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deltaforge_operator.metrics import Action
from deltaforge_operator.render import CONFIG_HASH, RESTART_REQUEST, STATE
from deltaforge_operator.status import WorkerReport

_STATE_ACTIONS = {"running": Action.RESUME, "paused": Action.PAUSE, "stopped": Action.STOP}

MESSAGES: Mapping[Action, tuple[str, str]] = {
    Action.CREATE: ("Created", "created the worker's Deployment, ConfigMap, Secret, RBAC and Service"),
    Action.UPDATE: (
        "Updated",
        "the worker's configuration changed (the spec or a referenced Secret); rolling the worker",
    ),
    Action.PAUSE: (
        "Paused",
        "spec.state is paused: the worker scales to zero; its Deployment and the rest stay for a quick "
        "resume, and it keeps its position",
    ),
    Action.STOP: (
        "Stopped",
        "spec.state is stopped: the worker stops, then its Deployment, Service, RBAC, config and "
        "credentials Secret are removed; the checkpoint and the slot keep its position",
    ),
    Action.RESUME: ("Resumed", "spec.state is running: the worker starts from its last position"),
    Action.RESTART: ("Restarted", f"the {RESTART_REQUEST} annotation asked for it: rolling the worker"),
    Action.RESTORE: ("Restored", "re-created missing children"),
    Action.DELETE: (
        "Deleted",
        "the worker and its children are garbage-collected; the replication "
        "slot and the checkpoint follow slot.reclaimPolicy",
    ),
}


def restart_requested(pipeline: Mapping[str, Any]) -> bool:
    return RESTART_REQUEST in (pipeline.get("metadata", {}).get("annotations") or {})


def wake_key(pipeline: Mapping[str, Any]) -> tuple[object, ...]:
    """What a change of a Pipeline must touch to need a reconciliation.

    The spec (its generation), annotations (a restart request, the cleanup escape hatch), deletion
    and finalizers, and the parts of the worker's report that can change a condition. The
    operator's own status writes and the worker's periodic heartbeats, positions and lag do not
    count: with them, every Pipeline would be reconciled every few seconds for nothing.
    """
    metadata = pipeline.get("metadata", {})
    return (
        metadata.get("generation"),
        tuple(sorted((metadata.get("annotations") or {}).items())),
        metadata.get("deletionTimestamp"),
        tuple(metadata.get("finalizers") or ()),
        WorkerReport.of(pipeline.get("status") or {}).wake_key(),
    )


def actions(
    *,
    deployment: Mapping[str, Any] | None,
    status: Mapping[str, Any],
    state: str,
    config_hash: str,
    restart: bool,
    created: Sequence[str] = (),
) -> list[Action]:
    """The actions of one pass; `created` lists the kinds the apply had to create.

    A stopped Pipeline has no Deployment, so without one the phase the operator last wrote tells a
    resume from a stopped state apart from a Deployment someone deleted.
    """
    found: list[Action] = []
    if deployment is None:
        if status.get("observedGeneration") is None:
            found.append(Action.CREATE)
        elif status.get("phase") == "Stopped":
            if state != "stopped":
                found.append(_STATE_ACTIONS[state])
        elif state != "stopped":
            found.append(Action.RESTORE)
    else:
        before = (deployment.get("metadata", {}).get("annotations") or {}).get(STATE)
        if before is not None and before != state:
            found.append(_STATE_ACTIONS[state])
        template = deployment.get("spec", {}).get("template", {}).get("metadata", {})
        if (template.get("annotations") or {}).get(CONFIG_HASH) not in (None, config_hash):
            found.append(Action.UPDATE)
        if created:
            found.append(Action.RESTORE)
    if restart:
        found.append(Action.RESTART)
    return found


def message(action: Action, created: Sequence[str] = ()) -> tuple[str, str]:
    """(Event reason, message) of an action."""
    reason, text = MESSAGES[action]
    if action is Action.RESTORE and created:
        text = f"re-created missing {', '.join(created)}"
    return reason, text
