"""The finalizer's I/O: keeping it where a slot will need dropping, and running the cleanup.

Each pass reads what it needs (the Pipeline, the worker's pods, the cleanup Job) and takes the one
step `cleanup.next_step` decides, so a pass after an operator restart picks up where the last one
stopped. Pods and Jobs of ours are watched, so each step's outcome wakes the next pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from deltaforge.spec import Pipeline, SpecError, parse_pipeline
from deltaforge_operator import cleanup, render
from deltaforge_operator.cleanup import Step
from deltaforge_operator.kube import Kube
from deltaforge_operator.metrics import Action, OperatorMetrics, Result
from deltaforge_operator.status import PodFacts, deleting_status, parse_time

Json = dict[str, Any]
Post = Callable[..., None]  # (body, *, warning, reason, message)
log = logging.getLogger("deltaforge.operator")


class Cleaner:
    def __init__(
        self, kube: Kube, worker: render.WorkerSettings, timeout: float, metrics: OperatorMetrics, post: Post
    ) -> None:
        self.kube, self.worker, self.timeout, self.metrics, self.post = kube, worker, timeout, metrics, post

    def keep_finalizer(self, body: Json, pipeline: Pipeline) -> None:
        """The finalizer exactly while deleting the Pipeline would leave a slot to drop.

        Called before the worker's Deployment is applied, so the slot a new worker creates is
        never there without the finalizer that will drop it.
        """
        patch = cleanup.finalizer_patch(body["metadata"], wanted=cleanup.needed(pipeline))
        if patch is not None:
            metadata = body["metadata"]
            self.kube.merge_patch("Pipeline", metadata["namespace"], metadata["name"], patch)

    def delete(self, body: Json, worker_pods: list[Json]) -> None:
        """One step of deleting a Pipeline that is marked for deletion."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        pipeline: Pipeline | None = None
        problem = ""
        try:
            pipeline = parse_pipeline(body, source_name=f"Pipeline {namespace}/{name}")
        except SpecError as error:
            problem = "; ".join(error.lines())
        found = self.kube.get("Job", namespace, cleanup.job_name(name))
        requested = parse_time(metadata.get("deletionTimestamp")) or datetime.now(UTC)
        step = cleanup.next_step(
            finalizer=cleanup.FINALIZER in (metadata.get("finalizers") or []),
            skip=cleanup.SKIP_ANNOTATION in (metadata.get("annotations") or {}),
            valid=pipeline is not None,
            elapsed=(datetime.now(UTC) - requested).total_seconds(),
            timeout=self.timeout,
            workers=len(worker_pods),
            job=cleanup.JobFacts.of(found) if found is not None else None,
        )
        if step in (Step.NOTHING, Step.WAIT):
            return
        if step is Step.STOP_WORKER:
            self._stop_worker(namespace, name)
            return
        if pipeline is None:  # INVALID, or SKIP with a spec that does not say which slot
            fix = "drop the slot by hand if a worker created one"
            if step is Step.SKIP:
                self._finish(body, Result.SKIPPED, f"{cleanup.SKIP_ANNOTATION} is set; {fix}")
            else:
                failure = cleanup.failure_message(step, detail=problem, fix=fix, timeout=self.timeout)
                self._finish(body, Result.ERROR, failure, failure=failure)
            return
        slot, publication = cleanup.slot_and_publication(pipeline)
        fix = cleanup.manual_fix(slot, publication, cleanup.where(pipeline))
        if step is Step.START_JOB:
            self._start_job(body, pipeline, slot, publication)
        elif step is Step.DONE:
            dropped = f"dropped {cleanup.what(slot, publication)} on {cleanup.where(pipeline)}"
            self._finish(body, Result.SUCCESS, dropped)
        elif step is Step.SKIP:
            self._finish(body, Result.SKIPPED, f"{cleanup.SKIP_ANNOTATION} is set: {fix}")
        else:  # FAILED, TIMED_OUT
            if step is Step.FAILED:
                detail = self._job_error(namespace, name, found)
            else:
                detail = "the worker did not stop" if worker_pods else "the cleanup Job did not finish"
            failure = cleanup.failure_message(step, detail=detail, fix=fix, timeout=self.timeout)
            self._finish(body, Result.ERROR, failure, failure=failure)

    def _stop_worker(self, namespace: str, name: str) -> None:
        """The slot is in use while the worker runs: scale it to zero (the garbage collector may
        have removed its Deployment already, in a foreground deletion)."""
        deployment = self.kube.get("Deployment", namespace, render.child_name(name))
        if deployment is not None and deployment.get("spec", {}).get("replicas", 1) != 0:
            self.kube.merge_patch("Deployment", namespace, render.child_name(name), {"spec": {"replicas": 0}})

    def _start_job(self, body: Json, pipeline: Pipeline, slot: str, publication: str | None) -> None:
        elapsed = datetime.now(UTC) - (parse_time(body["metadata"]["deletionTimestamp"]) or datetime.now(UTC))
        job = cleanup.job(
            pipeline, settings=self.worker, deadline_seconds=self.timeout - elapsed.total_seconds()
        )
        _, stored = self.kube.apply_object(job)
        for manifest in cleanup.job_inputs(pipeline, job_uid=stored["metadata"]["uid"]):
            self.kube.apply(manifest)
        message = (
            f"the worker stopped; dropping {cleanup.what(slot, publication)} on {cleanup.where(pipeline)} "
            f"with Job {cleanup.job_name(pipeline.name)} (at most {self.timeout:.0f} s)"
        )
        self._write_status(body, message, failure=None)
        self.post(body, warning=False, reason="CleaningUp", message=message)

    def _job_error(self, namespace: str, name: str, found: Mapping[str, Any] | None) -> str:
        """Why the Job failed: its condition's reason and its newest pod's error."""
        reason = cleanup.JobFacts.of(found).reason if found is not None else ""
        selector = f"batch.kubernetes.io/job-name={cleanup.job_name(name)}"
        pods = sorted(self.kube.list("Pod", namespace, selector),
                      key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))  # fmt: skip
        messages = [facts.last_exit_message for facts in map(PodFacts.of, pods) if facts.last_exit_message]
        detail = (
            messages[-1] if messages else f"see `kubectl logs -n {namespace} job/{cleanup.job_name(name)}`"
        )
        return f"{reason or 'Failed'}: {detail}"

    def _finish(self, body: Json, result: Result, message: str, *, failure: str | None = None) -> None:
        """Announce the outcome, remove the Job and the finalizer: the deletion goes on."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        if failure is not None:  # the write moves the resourceVersion the finalizer patch needs
            metadata = self._write_status(body, "the cleanup failed", failure=failure)["metadata"]
        reason = {
            Result.SUCCESS: "CleanedUp",
            Result.SKIPPED: "CleanupSkipped",
            Result.ERROR: "CleanupFailed",
        }
        self.post(body, warning=result is not Result.SUCCESS, reason=reason[result], message=message)
        log.info("%s %s/%s: %s", reason[result], namespace, name, message)
        self.metrics.action(namespace, Action.CLEANUP, result)
        self.kube.delete("Job", namespace, cleanup.job_name(name))
        patch = cleanup.finalizer_patch(metadata, wanted=False)
        if patch is not None:
            self.kube.merge_patch("Pipeline", namespace, name, patch)

    def _write_status(self, body: Json, message: str, *, failure: str | None) -> Json:
        metadata = body["metadata"]
        state = (body.get("spec") or {}).get("state", "running")
        status = deleting_status(
            body.get("status") or {}, generation=int(metadata.get("generation", 0)),
            state=state if state in ("running", "paused", "stopped") else "running",
            message=message, failure=failure, now=datetime.now(UTC),
        )  # fmt: skip
        return self.kube.merge_patch("Pipeline", metadata["namespace"], metadata["name"], {"status": status},
                                     subresource="status")  # fmt: skip
