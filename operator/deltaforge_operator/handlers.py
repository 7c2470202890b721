"""kopf wiring only: which watch events request a reconciliation of which Pipeline.

Every handler is a `kopf.on.event` handler: they keep no state in the objects (no progress or
last-handled annotations, no kopf finalizer), because the reconciler is level-based and reads what
it needs itself. The only finalizer is the reconciler's own, on a Pipeline whose deletion has a
slot to drop (`slot.reclaimPolicy: Delete`, see cleanup.py).

Every handler is `async` and only enqueues: kopf would run a plain function in a thread, and the
reconciler's queue may only be touched from the event loop.
"""

from __future__ import annotations

from typing import Any

import kopf

from deltaforge.spec import API_VERSION
from deltaforge_operator.reconciler import Reconciler
from deltaforge_operator.render import MANAGED_BY, OPERATOR, PIPELINE_LABEL

GROUP, VERSION = API_VERSION.split("/")
# The children whose changes (an edit, a deletion, a rollout, a pod's readiness) need a pass;
# `force` applies every child even when the rendered objects did not change (drift correction).
CHILDREN: tuple[tuple[str, str, str, bool], ...] = (
    ("apps", "v1", "deployments", True),
    ("", "v1", "configmaps", True),
    ("", "v1", "services", True),
    ("", "v1", "serviceaccounts", True),
    ("rbac.authorization.k8s.io", "v1", "roles", True),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", True),
    ("", "v1", "pods", False),
    ("batch", "v1", "jobs", False),  # the cleanup Job of a deletion
)


def build_settings(*, watch_timeout: float) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # A watch the server ends after this long is re-established, so a silently dead connection
    # costs at most this much; the client timeout catches a server that stops answering.
    settings.watching.server_timeout = int(watch_timeout)  # the API server wants whole seconds
    settings.watching.client_timeout = watch_timeout + 30
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    settings.posting.enabled = False  # the reconciler posts its own Events, one per action
    # Children are filtered by the API server: the operator never streams other workloads.
    for group, version, plural, _ in CHILDREN:
        selector = f"{MANAGED_BY}={OPERATOR}"
        settings.watching.label_selectors[group, version, plural] = selector
    return settings


def build_registry(reconciler: Reconciler) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.event(GROUP, VERSION, "pipelines", registry=registry)
    async def pipeline_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        if event["type"] == "DELETED":
            await reconciler.deleted(body)
        else:
            reconciler.pipeline_changed(body)

    for group, version, plural, force in CHILDREN:
        _watch_child(registry, reconciler, group, version, plural, force=force)

    # Secrets are watched unfiltered (the user's have none of our labels): the credentials Secret
    # the operator renders is a child; any other is checked against the references the reconciler
    # last saw, so a rotated password rolls the worker at once.
    @kopf.on.event("", "v1", "secrets", registry=registry)
    async def secret_changed(
        event: kopf.RawEvent, name: str, namespace: str | None, labels: kopf.Labels, **_: Any
    ) -> None:
        if namespace is None:
            return
        if labels.get(MANAGED_BY) == OPERATOR and PIPELINE_LABEL in labels:
            _child_event(reconciler, event, namespace, labels[PIPELINE_LABEL], force=True)
        for pipeline in reconciler.pipelines_using(namespace, name):
            reconciler.request(namespace, pipeline)

    return registry


def _watch_child(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    group: str,
    version: str,
    plural: str,
    *,
    force: bool,
) -> None:
    @kopf.on.event(group, version, plural, registry=registry, labels={PIPELINE_LABEL: kopf.PRESENT},
                   id=f"child-{plural}")  # fmt: skip
    async def child_changed(
        event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None, **_: Any
    ) -> None:
        if namespace is None:
            return
        _child_event(reconciler, event, namespace, labels[PIPELINE_LABEL], force=force)


def _child_event(
    reconciler: Reconciler, event: kopf.RawEvent, namespace: str, pipeline: str, *, force: bool
) -> None:
    """A deletion always needs a pass (to restore the child); a change only if not our own write."""
    if event["type"] == "DELETED":
        reconciler.request(namespace, pipeline, force=force)
    else:
        reconciler.child_changed(namespace, pipeline, event["object"], force=force)
