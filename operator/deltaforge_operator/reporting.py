"""What the operator says about a Pipeline: its status, its Events and its metrics.

A status is written only when it changed, so an idle resync writes nothing; a change of the Ready
condition is also an Event (`Ready`, or the Warning `NotReady` with the reason) and a count. An
Event that cannot be posted is a log line, never a retry: it must not hold up reconciliation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from deltaforge.spec import SpecError
from deltaforge_operator import lifecycle
from deltaforge_operator.kube import Kube
from deltaforge_operator.metrics import Action, OperatorMetrics
from deltaforge_operator.status import Observed, changed, compute_status, ready_of

Json = dict[str, Any]
log = logging.getLogger("deltaforge.operator")
_MESSAGE_LIMIT = 4000


class Reporter:
    def __init__(self, kube: Kube, metrics: OperatorMetrics) -> None:
        self.kube, self.metrics = kube, metrics

    def invalid(self, body: Json, status: Mapping[str, Any], error: SpecError) -> None:
        """InvalidSpec: a condition and one Warning Event per distinct problem; no retry, no storm.

        The children are left as they are: a worker that runs the last valid spec keeps running.
        """
        message = "; ".join(error.lines())[:_MESSAGE_LIMIT]
        spec = body.get("spec") or {}
        state = spec.get("state") if spec.get("state") in ("running", "paused", "stopped") else "running"
        facts = Observed(
            generation=int(body["metadata"].get("generation", 0)), state=str(state), source_kind=None,
            invalid=message,
        )  # fmt: skip
        previous: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        if previous.get("reason") != "InvalidSpec" or previous.get("message") != message:
            self.post(body, warning=True, reason="InvalidSpec", message=message)
        self.status(body, status, facts, tenant=str(spec.get("tenant") or body["metadata"]["namespace"]))

    def status(self, body: Json, status: Mapping[str, Any], facts: Observed, *, tenant: str) -> None:
        """Writes the status when it changed; a Ready flip is an Event and a count."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        new = compute_status(facts, status, now=datetime.now(UTC))
        if changed(new, status):
            self.kube.merge_patch("Pipeline", namespace, name, {"status": new}, subresource="status")
        before, after = ready_of(status), ready_of(new)
        ready_condition = new["conditions"][0]
        if before != after and (before is not None or after == "True"):
            self.metrics.transitions.labels(namespace, "ready" if after == "True" else "not_ready").inc()
            if after == "True":
                self.post(body, warning=False, reason="Ready", message=ready_condition["message"])
            else:
                message = f"{ready_condition['reason']}: {ready_condition['message']}"
                self.post(body, warning=True, reason="NotReady", message=message)
        self.metrics.observe(
            namespace,
            name,
            tenant,
            phase=new["phase"],
            ready=after == "True",
            paused=facts.state != "running",
        )

    def announce(self, body: Mapping[str, Any], action: Action, created: list[str] | None = None) -> None:
        reason, text = lifecycle.message(action, created or [])
        self.post(body, warning=action is Action.RESTORE, reason=reason, message=text)
        log.info("%s %s/%s: %s", reason, body["metadata"]["namespace"], body["metadata"]["name"], text)

    def post(self, body: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
        try:
            self.kube.post_event(dict(body), warning=warning, reason=reason, message=message)
        except (ApiException, HTTPError, OSError) as error:  # an Event is worth a log line, not a retry
            # A Pipeline deleted with its namespace: nothing new may be created there any more.
            terminating = isinstance(error, ApiException) and "being terminated" in str(error.reason)
            log.log(
                logging.DEBUG if terminating else logging.WARNING,
                "posting Event %s failed: %s",
                reason,
                error,
            )
