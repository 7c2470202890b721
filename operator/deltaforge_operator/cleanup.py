"""Deleting a Pipeline whose slot is reclaimed (`slot.reclaimPolicy: Delete`). Pure, no I/O.

Only such a Pipeline gets the finalizer, and only while its policy says so: a Pipeline with
nothing to clean up is deleted by the garbage collector at once. On deletion the operator stops the
worker (a replication slot in use cannot be dropped), then runs a short Job with the worker's
image, manifest and credentials, which drops the slot and, when the Pipeline manages it
(`publication.create: true`), the publication (`python -m deltaforge.reclaim`).

Deletion never hangs on an unreachable database: the whole cleanup is bounded by a timeout from
the deletion request (the Job's `activeDeadlineSeconds` is what is left of it). When it fails or
times out the operator says so (a Warning Event and the Degraded condition, naming the slot and
the SQL to drop it by hand) and lets the deletion finish. The annotation SKIP_ANNOTATION skips the
cleanup at once, for a database that is gone for good.

The Job and the copies of the config and literal credentials it mounts are not owned by the
Pipeline: a foreground deletion (`kubectl delete --cascade=foreground`, Argo CD) removes the
Pipeline's children before its finalizers run, and would take the Job's inputs with them. They are
owned by the Job instead, and the operator deletes the Job when it is done (its TTL is a backstop).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge.spec import Pipeline
from deltaforge_operator.render import (
    CONFIG_DIR,
    CONFIG_KEY,
    GROUP,
    MANAGED_BY,
    OPERATOR,
    PART_OF,
    PIPELINE_LABEL,
    WorkerSettings,
    child_name,
    config_volumes,
    container_security,
    pod_security,
    worker_manifest,
)

Json = dict[str, Any]
FINALIZER: Final = f"{GROUP}/slot-cleanup"
SKIP_ANNOTATION: Final = f"{GROUP}/skip-cleanup"
"""Set on a Pipeline (any value) to delete it without dropping its slot."""
DEFAULT_TIMEOUT_SECONDS: Final = 300.0
_MIN_JOB_SECONDS: Final = 10
_JOB_TTL_SECONDS: Final = 3600
_APP: Final = "deltaforge-cleanup"


def needed(pipeline: Pipeline) -> bool:
    """Whether deleting `pipeline` leaves something to clean up: a slot to drop."""
    postgres = pipeline.spec.source.postgres
    return postgres is not None and postgres.slot.reclaim_policy.value == "Delete"


def finalizer_patch(metadata: Mapping[str, Any], *, wanted: bool) -> Json | None:
    """The merge patch that adds or removes FINALIZER, or None when it is as wanted.

    A merge patch replaces the whole list, so it carries the resourceVersion the list was read
    at: a finalizer someone else added in between makes it fail (409) and retry, never vanish.
    """
    finalizers = list(metadata.get("finalizers") or [])
    if (FINALIZER in finalizers) == wanted:
        return None
    updated = [*finalizers, FINALIZER] if wanted else [f for f in finalizers if f != FINALIZER]
    return {"metadata": {"finalizers": updated, "resourceVersion": metadata["resourceVersion"]}}


def job_name(pipeline: str) -> str:
    return child_name(pipeline, "cleanup")


def slot_and_publication(pipeline: Pipeline) -> tuple[str, str | None]:
    """The slot to drop, and the publication too when the Pipeline manages it."""
    postgres = pipeline.spec.source.postgres
    assert postgres is not None, "needed() first"
    # The spec model fills in the default names, so both are set.
    slot, publication = postgres.slot.name or "", postgres.publication.name or ""
    return slot, publication if postgres.publication.create else None


def _labels(pipeline: str) -> dict[str, str]:
    """Labelled as ours (the operator watches it, the pod runner runs it) but not as a worker, so
    neither the worker's Deployment, its Service nor the operator's worker lookups select it."""
    return {"app.kubernetes.io/name": _APP, "app.kubernetes.io/instance": pipeline,
            PART_OF: "deltaforge", MANAGED_BY: OPERATOR, PIPELINE_LABEL: pipeline}  # fmt: skip


def job(pipeline: Pipeline, *, settings: WorkerSettings, deadline_seconds: float) -> Json:
    """The cleanup Job; its inputs (`job_inputs`) are created next, owned by it.

    Credentials come from Secrets mounted as for the worker: the user's Secrets as they are, and
    a copy of the literal ones in a Secret of the Job's own; none is in the Job's spec.
    """
    name = pipeline.name
    _, literals = worker_manifest(pipeline)
    volumes, mounts = config_volumes(
        pipeline, sorted(literals), config_map=job_name(name), credentials=job_name(name)
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(name), "namespace": pipeline.namespace, "labels": _labels(name)},
        "spec": {
            "activeDeadlineSeconds": max(int(deadline_seconds), _MIN_JOB_SECONDS),
            # Failed attempts are retried with the Job controller's backoff until the deadline.
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": _JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [{
                        "name": "cleanup",
                        "image": settings.image,
                        "imagePullPolicy": settings.image_pull_policy,
                        "command": ["python", "-m", "deltaforge.reclaim", f"{CONFIG_DIR}/{CONFIG_KEY}"],
                        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"},
                                      "limits": {"memory": "256Mi"}},
                        "securityContext": container_security(),
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }  # fmt: skip


def job_inputs(pipeline: Pipeline, *, job_uid: str) -> list[Json]:
    """The ConfigMap with the worker's manifest and the Secret with its literal credentials."""
    name = pipeline.name
    manifest, literals = worker_manifest(pipeline)
    metadata = {
        "name": job_name(name), "namespace": pipeline.namespace, "labels": _labels(name),
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name(name),
                             "uid": job_uid, "controller": True}],
    }  # fmt: skip
    config = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    inputs: list[Json] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {CONFIG_KEY: config}}
    ]
    if literals:
        inputs.append({
            "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(literals.items())},
        })  # fmt: skip
    return inputs


@dataclass(frozen=True)
class JobFacts:
    succeeded: bool
    failed: bool
    reason: str  # of the Failed condition: BackoffLimitExceeded, DeadlineExceeded

    @classmethod
    def of(cls, found: Mapping[str, Any]) -> JobFacts:
        conditions = {c.get("type"): c for c in found.get("status", {}).get("conditions") or []
                      if c.get("status") == "True"}  # fmt: skip
        failed = conditions.get("Failed") or {}
        return cls(
            succeeded="Complete" in conditions, failed=bool(failed), reason=str(failed.get("reason", ""))
        )


class Step(StrEnum):
    """What a deletion pass does next."""

    NOTHING = "nothing"  # no finalizer of ours: the garbage collector deletes everything
    SKIP = "skip"  # the escape hatch is set
    INVALID = "invalid"  # the spec does not say which slot: nothing can be dropped
    TIMED_OUT = "timed_out"
    STOP_WORKER = "stop_worker"  # a worker still runs and holds the slot
    START_JOB = "start_job"
    WAIT = "wait"  # the Job runs
    DONE = "done"
    FAILED = "failed"


def next_step(
    *,
    finalizer: bool,
    skip: bool,
    valid: bool,
    elapsed: float,
    timeout: float,
    workers: int,
    job: JobFacts | None,
) -> Step:
    """Decided from what a pass observed, so any pass (after an operator restart too) continues."""
    if not finalizer:
        return Step.NOTHING
    if skip:
        return Step.SKIP
    if not valid:
        return Step.INVALID
    if job is not None and job.succeeded:
        return Step.DONE
    if job is not None and job.failed:
        return Step.FAILED
    if elapsed > timeout:
        return Step.TIMED_OUT
    if workers:
        return Step.STOP_WORKER
    return Step.START_JOB if job is None else Step.WAIT


def what(slot: str, publication: str | None) -> str:
    """What the cleanup drops, in words (a publication only when the Pipeline's role owns it)."""
    managed = f" and the publication '{publication}' if the Pipeline's role owns it" if publication else ""
    return f"the replication slot '{slot}'{managed}"


def manual_fix(slot: str, publication: str | None, where: str) -> str:
    """What to run by hand when the operator could not clean up."""
    sql = f"SELECT pg_drop_replication_slot('{slot}')"
    if publication:
        sql += f'; DROP PUBLICATION "{publication}"'
    return f"the replication slot '{slot}' on {where} is left and retains WAL: drop it with {sql}"


def failure_message(step: Step, *, detail: str, fix: str, timeout: float) -> str:
    """The CleanupFailed message: what went wrong, then what is left and how to remove it."""
    why = {
        Step.INVALID: f"the spec is invalid, so the slot to drop is unknown ({detail})",
        Step.TIMED_OUT: f"not done within {timeout:.0f} s ({detail})",
        Step.FAILED: f"the cleanup Job failed ({detail})",
    }[step]
    return f"{why}; {fix}"


def where(pipeline: Pipeline) -> str:
    postgres = pipeline.spec.source.postgres
    assert postgres is not None
    return f"{postgres.host}:{postgres.port}/{postgres.database}"
