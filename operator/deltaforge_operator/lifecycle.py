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

_STATE_ACTIONS = {"running": Action.RESUME, "paused": Action.PAUSE, "stopped": Action.STOP}

MESSAGES: Mapping[Action, tuple[str, str]] = {
    Action.CREATE: ("Created", "created the worker's Deployment, ConfigMap, Secret, RBAC and Service"),
    Action.UPDATE: (
        "Updated",
        "the worker's configuration changed (the spec or a referenced Secret); rolling the worker",
    ),
    Action.PAUSE: ("Paused", "spec.state is paused: the worker scales to zero and keeps its position"),
    Action.STOP: ("Stopped", "spec.state is stopped: the worker scales to zero and keeps its position"),
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


def actions(
    *,
    deployment: Mapping[str, Any] | None,
    status: Mapping[str, Any],
    state: str,
    config_hash: str,
    restart: bool,
    created: Sequence[str] = (),
) -> list[Action]:
    """The actions of one pass; `created` lists the kinds the apply had to create."""
    found: list[Action] = []
    if deployment is None:
        first = status.get("observedGeneration") is None
        found.append(Action.CREATE if first else Action.RESTORE)
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
