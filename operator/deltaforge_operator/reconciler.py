"""The reconciliation loop: a work queue of Pipelines, one level-based pass per Pipeline at a time.

kopf's watch events, child and Secret changes, retries and the periodic resync all only *request*
a pass for a Pipeline; requests for a Pipeline that is queued or being reconciled coalesce into
one more pass. A pass reads everything it needs (the Pipeline, its Secrets, Deployment and pod),
so it does not matter which event asked for it. Failed passes are retried with capped exponential
backoff and jitter a bounded number of times; after that the next event or resync tries again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from deltaforge.spec import Pipeline, SpecError, parse_pipeline
from deltaforge_operator import cleanup, lifecycle, render
from deltaforge_operator.deletion import Cleaner
from deltaforge_operator.kube import Kube
from deltaforge_operator.metrics import KIND, Action, OperatorMetrics
from deltaforge_operator.reporting import Reporter
from deltaforge_operator.status import (
    DeploymentFacts,
    Observed,
    PodFacts,
    WorkerReport,
)

Json = dict[str, Any]
Key = tuple[str, str]  # namespace, name
T = TypeVar("T")
log = logging.getLogger("deltaforge.operator")
UNPROCESSABLE = 422


@dataclass(frozen=True)
class ReconcilerSettings:
    worker: render.WorkerSettings = field(default_factory=render.WorkerSettings)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    resync_seconds: float = 60.0
    # Passes wait on the API server far more than they compute: more of them than cores pays off.
    workers: int = 8
    max_retries: int = 8
    max_backoff_seconds: float = 60.0
    # How long deleting a Pipeline may take to drop its slot before the operator gives up on it.
    cleanup_timeout_seconds: float = cleanup.DEFAULT_TIMEOUT_SECONDS


def _now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    def __init__(self, kube: Kube, settings: ReconcilerSettings, metrics: OperatorMetrics) -> None:
        self.kube, self.settings, self.metrics = kube, settings, metrics
        self.last_activity = time.monotonic()
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._again: set[Key] = set()
        self._force: set[Key] = set()
        self._attempts: dict[Key, int] = {}
        self._lock = threading.Lock()  # guards what passes (in threads) share below
        # Passes get threads of their own, not the loop's default executor, which is small on a
        # small node (cores + 4) and which kopf uses too.
        self._threads = ThreadPoolExecutor(max_workers=settings.workers + 2, thread_name_prefix="reconcile")
        self._applied: dict[Key, str] = {}
        self._secrets: dict[Key, frozenset[str]] = {}
        self._seen: dict[Key, tuple[object, ...]] = {}  # lifecycle.wake_key of each Pipeline's last event
        # (kind, name) -> (resourceVersion, generation) of what this operator wrote last
        self._written: dict[Key, dict[tuple[str, str], tuple[str, object]]] = {}
        self.reporter = Reporter(kube, metrics)
        self.cleaner = Cleaner(
            kube, settings.worker, settings.cleanup_timeout_seconds, metrics, post=self.reporter.post
        )

    # --- requests (event loop) ---------------------------------------------------------------
    def request(self, namespace: str, name: str, *, force: bool = False) -> None:
        """Ask for a pass; `force` applies every child even when nothing rendered changed."""
        key = (namespace, name)
        if force:
            self._force.add(key)
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def pipeline_changed(self, body: Mapping[str, Any]) -> None:
        """A watch event of a Pipeline: a pass only when it changed something that matters."""
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        wake = lifecycle.wake_key(body)
        if self._seen.get(key) != wake:
            self._seen[key] = wake
            self.request(*key)

    def child_changed(self, namespace: str, pipeline: str, child: Mapping[str, Any], *, force: bool) -> None:
        """A child changed. The watch echo of the operator's own apply (the resourceVersion it got
        back) needs no pass: without this, every apply would be followed by a second full one. A
        change of status only (the generation it wrote, as when a Deployment rolls out) needs a
        pass for the facts, not a re-apply."""
        metadata = child.get("metadata", {})
        with self._lock:
            written = self._written.get((namespace, pipeline), {}).get(
                (str(child.get("kind")), metadata.get("name"))
            )
        if written is not None and written[0] == metadata.get("resourceVersion"):
            return
        generation = metadata.get("generation")
        status_only = written is not None and generation is not None and written[1] == generation
        self.request(namespace, pipeline, force=force and not status_only)

    def pipelines_using(self, namespace: str, secret: str) -> list[str]:
        with self._lock:
            return [name for (ns, name), used in self._secrets.items() if ns == namespace and secret in used]

    async def deleted(self, body: Mapping[str, Any]) -> None:
        """A Pipeline is gone: drop its memory and series, count and announce it."""
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        with self._lock:
            self._applied.pop(key, None)
            self._secrets.pop(key, None)
            self._written.pop(key, None)
        self._attempts.pop(key, None)
        self._seen.pop(key, None)
        self.metrics.forget(*key)
        self.metrics.action(key[0], Action.DELETE)
        await self._in_thread(self.reporter.announce, body, Action.DELETE)

    # --- running -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Work the queue and resync until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(self.settings.workers):
                    group.create_task(self._work(), name=f"reconcile-{number}")
                group.create_task(self._resync(), name="resync")
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, function: Callable[..., T], *arguments: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *arguments)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            force = key in self._force
            self._force.discard(key)
            try:
                await self._pass(key, force)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.request(*key)

    async def _pass(self, key: Key, force: bool) -> None:
        started = time.perf_counter()
        self.metrics.reconciliations.labels(KIND, key[0]).inc()
        try:
            await self._in_thread(self.reconcile, key, force)
            self._attempts.pop(key, None)
        except (ApiException, HTTPError, OSError) as error:
            self.metrics.failures.labels(KIND, key[0]).inc()
            attempt = self._attempts.get(key, 0) + 1
            if attempt > self.settings.max_retries:
                self._attempts.pop(key, None)
                log.error(
                    "reconcile %s/%s failed %d times, waiting for the next resync: %s", *key, attempt, error
                )
            else:
                self._attempts[key] = attempt
                delay = min(2.0 ** (attempt - 1), self.settings.max_backoff_seconds) * random.uniform(
                    0.8, 1.2
                )
                log.warning(
                    "reconcile %s/%s failed (attempt %d), retrying in %.1f s: %s", *key, attempt, delay, error
                )
                asyncio.get_running_loop().call_later(delay, lambda: self.request(*key, force=True))
        finally:
            self.metrics.duration.labels(KIND, key[0]).observe(time.perf_counter() - started)
            self._alive()

    async def _resync(self) -> None:
        """Level-based safety net: every interval, every Pipeline gets a pass.

        It re-reads everything and recomputes the status (a heartbeat that went stale shows up
        here), but applies only what rendered differently: a child someone changed has already
        forced a full apply through its watch event, or through kopf's re-listing after a watch
        reconnected (whose resourceVersions are not the ones the operator wrote). Forcing every
        apply here would cost a thousand Pipelines eight thousand requests per interval.
        """
        while True:
            try:
                with self._lock:  # known before the listing started, so a brand-new one is never "gone"
                    known = set(self._applied)
                found = await self._in_thread(self._list_pipelines)
                gone = known - found
                for namespace, name in found:
                    self.request(namespace, name)
                for namespace, name in gone:  # deleted while a watch was down
                    await self.deleted({"metadata": {"namespace": namespace, "name": name}})
                self._alive()
            except (ApiException, HTTPError, OSError) as error:
                log.warning("resync listing failed: %s", error)
            await asyncio.sleep(self.settings.resync_seconds)

    def _list_pipelines(self) -> set[Key]:
        namespaces: tuple[str | None, ...] = self.settings.namespaces or (None,)
        return {
            (item["metadata"]["namespace"], item["metadata"]["name"])
            for namespace in namespaces
            for item in self.kube.list("Pipeline", namespace)
        }

    def _alive(self) -> None:
        self.last_activity = time.monotonic()
        self.metrics.last_pass.set(time.time())

    # --- one pass (in a thread) --------------------------------------------------------------
    def reconcile(self, key: Key, force: bool) -> None:
        namespace, name = key
        body = self.kube.get("Pipeline", namespace, name)
        if body is None:
            return  # deletion is announced by the watch (or the resync)
        pods = self._worker_pods(namespace, name)
        if body["metadata"].get("deletionTimestamp"):
            self.cleaner.delete(body, pods)  # the garbage collector does the rest
            return
        status: Mapping[str, Any] = body.get("status") or {}
        try:
            pipeline = parse_pipeline(body, source_name=f"Pipeline {namespace}/{name}")
            self.cleaner.keep_finalizer(body, pipeline)
            references = render.secret_references(pipeline)
            with self._lock:
                self._secrets[key] = frozenset(references)
            secrets = {
                secret: self._secret_keys(namespace, secret, keys) for secret, keys in references.items()
            }
            deployment = self.kube.get("Deployment", namespace, render.child_name(name))
            restart = lifecycle.restart_requested(body)
            rendered = render.render(
                pipeline, uid=body["metadata"]["uid"], settings=self.settings.worker, secrets=secrets,
                restarted_at=_stamp() if restart else _restarted_at(deployment),
            )  # fmt: skip
        except SpecError as error:
            self.reporter.invalid(body, status, error)
            return
        state = pipeline.spec.state.value
        objects = rendered.objects
        if state == "stopped" and (deployment is None or not pods):
            objects = self._release(pipeline, objects, deployment)
        fingerprint = hashlib.sha256(render.canonical(objects)).hexdigest()
        with self._lock:
            unchanged = self._applied.get(key) == fingerprint
        created: list[str] = []
        # The Deployment as it is now, for the facts: as applied, or gone when released.
        current = None if objects is not rendered.objects else deployment
        if force or restart or not unchanged:
            for obj in objects:
                new, stored = self._apply(obj)
                created += [obj["kind"]] if new else []
                current = stored if obj["kind"] == "Deployment" else current
                with self._lock:  # at once: the watch event of this write may be on its way
                    written = self._written.setdefault(key, {})
                    stamp = stored["metadata"]
                    written[obj["kind"], stamp["name"]] = (stamp["resourceVersion"], stamp.get("generation"))
            with self._lock:
                self._applied[key] = fingerprint
        if restart:
            self.kube.merge_patch(
                "Pipeline", namespace, name, {"metadata": {"annotations": {render.RESTART_REQUEST: None}}}
            )
        for action in lifecycle.actions(
            deployment=deployment, status=status, state=state, config_hash=rendered.config_hash,
            restart=restart, created=created,
        ):  # fmt: skip
            self.metrics.action(namespace, action)
            self.reporter.announce(body, action, created)
        facts = Observed(
            generation=int(body["metadata"].get("generation", 0)),
            state=state,
            source_kind=pipeline.spec.source.kind,
            missing_secrets=[f"Secret {s}" for s, data in secrets.items() if data is None]
            + [f"key {k} of Secret {s}" for s, keys in references.items() if secrets[s] is not None
               for k in keys if k not in (secrets[s] or {})],
            deployment=DeploymentFacts.of(current) if current else None,
            pod=_newest(pods),
            report=WorkerReport.of(status),
        )  # fmt: skip
        self.reporter.status(body, status, facts, tenant=pipeline.tenant)

    def _secret_keys(self, namespace: str, secret: str, keys: list[str]) -> dict[str, bytes] | None:
        """The referenced keys of a Secret (decoded), or None when the Secret does not exist."""
        found = self.kube.get("Secret", namespace, secret)
        if found is None:
            return None
        data = found.get("data") or {}
        return {key: base64.b64decode(data[key]) for key in keys if key in data}

    def _apply(self, obj: Json) -> tuple[bool, Json]:
        """Server-side apply; a Service that still has a virtual IP (rendered before they became
        headless) is replaced, since `clusterIP` cannot change in place."""
        try:
            return self.kube.apply_object(obj)
        except ApiException as error:
            if obj["kind"] != "Service" or error.status != UNPROCESSABLE:
                raise
        self.kube.delete("Service", obj["metadata"]["namespace"], obj["metadata"]["name"])
        return self.kube.apply_object(obj)

    def _worker_pods(self, namespace: str, name: str) -> list[Json]:
        """The worker's pods, terminating ones too: until they are gone, a worker may hold the slot."""
        selector = ",".join(f"{k}={v}" for k, v in render.selector(name).items())
        return self.kube.list("Pod", namespace, selector)

    def _release(self, pipeline: Pipeline, objects: list[Json], deployment: Json | None) -> list[Json]:
        """A stopped Pipeline whose worker is gone keeps only its checkpoint ConfigMap.

        The rest is deleted only after the worker stopped: it needs its Role to write its last
        checkpoint on the way out.
        """
        if deployment is not None:
            for kind, child in render.released(pipeline.name):
                self.kube.delete(kind, pipeline.namespace, child)
        checkpoint = render.checkpoint_config_map(pipeline)
        return [obj for obj in objects if (obj["kind"], obj["metadata"]["name"]) == ("ConfigMap", checkpoint)]


def _newest(pods: list[Json]) -> PodFacts | None:
    """The facts of the newest pod that is not terminating (the one a rollout leads to)."""
    running = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    if not running:
        return None
    return PodFacts.of(max(running, key=lambda pod: str(pod["metadata"].get("creationTimestamp", ""))))


def _stamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _restarted_at(deployment: Mapping[str, Any] | None) -> str | None:
    """The last restart request the running Deployment carries, kept so it is not undone."""
    if deployment is None:
        return None
    template = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    value = (template.get("annotations") or {}).get(render.RESTARTED_AT)
    return str(value) if value else None
