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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from deltaforge.spec import SpecError, parse_pipeline
from deltaforge_operator import lifecycle, render
from deltaforge_operator.kube import Kube
from deltaforge_operator.metrics import KIND, Action, OperatorMetrics
from deltaforge_operator.status import (
    DeploymentFacts,
    Observed,
    PodFacts,
    changed,
    compute_status,
    ready_of,
)

Json = dict[str, Any]
Key = tuple[str, str]  # namespace, name
log = logging.getLogger("deltaforge.operator")
_MESSAGE_LIMIT = 4000


@dataclass(frozen=True)
class ReconcilerSettings:
    worker: render.WorkerSettings = field(default_factory=render.WorkerSettings)
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    resync_seconds: float = 60.0
    workers: int = 4
    max_retries: int = 8
    max_backoff_seconds: float = 60.0


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
        self._applied: dict[Key, str] = {}
        self._secrets: dict[Key, frozenset[str]] = {}

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
        self._attempts.pop(key, None)
        self.metrics.forget(*key)
        self.metrics.action(key[0], Action.DELETE)
        await asyncio.to_thread(self._announce, body, Action.DELETE)

    # --- running -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Work the queue and resync until cancelled."""
        async with asyncio.TaskGroup() as group:
            for number in range(self.settings.workers):
                group.create_task(self._work(), name=f"reconcile-{number}")
            group.create_task(self._resync(), name="resync")

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
            await asyncio.to_thread(self.reconcile, key, force)
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
        """Level-based safety net: every interval, every Pipeline gets a full pass."""
        while True:
            try:
                with self._lock:  # known before the listing started, so a brand-new one is never "gone"
                    known = set(self._applied)
                found = await asyncio.to_thread(self._list_pipelines)
                gone = known - found
                for namespace, name in found:
                    self.request(namespace, name, force=True)
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
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # deletion is announced by the watch (or the resync) and done by the garbage collector
        status: Mapping[str, Any] = body.get("status") or {}
        try:
            pipeline = parse_pipeline(body, source_name=f"Pipeline {namespace}/{name}")
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
            self._report_invalid(body, status, error)
            return
        fingerprint = hashlib.sha256(render.canonical(rendered.objects)).hexdigest()
        with self._lock:
            unchanged = self._applied.get(key) == fingerprint
        created: list[str] = []
        if force or restart or not unchanged:
            created = [obj["kind"] for obj in rendered.objects if self.kube.apply(obj)]
            with self._lock:
                self._applied[key] = fingerprint
        if restart:
            self.kube.merge_patch(
                "Pipeline", namespace, name, {"metadata": {"annotations": {render.RESTART_REQUEST: None}}}
            )
        state = pipeline.spec.state.value
        for action in lifecycle.actions(
            deployment=deployment, status=status, state=state, config_hash=rendered.config_hash,
            restart=restart, created=created,
        ):  # fmt: skip
            self.metrics.action(namespace, action)
            self._announce(body, action, created)
        if created:  # what was just created has no status yet; read it back for the facts
            deployment = self.kube.get("Deployment", namespace, render.child_name(name))
        facts = Observed(
            generation=int(body["metadata"].get("generation", 0)),
            state=state,
            source_kind=pipeline.spec.source.kind,
            missing_secrets=[f"Secret {s}" for s, data in secrets.items() if data is None]
            + [f"key {k} of Secret {s}" for s, keys in references.items() if secrets[s] is not None
               for k in keys if k not in (secrets[s] or {})],
            deployment=DeploymentFacts.of(deployment) if deployment else None,
            pod=self._current_pod(namespace, name),
        )  # fmt: skip
        self._write_status(body, status, facts, tenant=pipeline.tenant)

    def _secret_keys(self, namespace: str, secret: str, keys: list[str]) -> dict[str, bytes] | None:
        """The referenced keys of a Secret (decoded), or None when the Secret does not exist."""
        found = self.kube.get("Secret", namespace, secret)
        if found is None:
            return None
        data = found.get("data") or {}
        return {key: base64.b64decode(data[key]) for key in keys if key in data}

    def _current_pod(self, namespace: str, name: str) -> PodFacts | None:
        selector = ",".join(f"{k}={v}" for k, v in render.selector(name).items())
        pods = [
            p
            for p in self.kube.list("Pod", namespace, selector)
            if not p["metadata"].get("deletionTimestamp")
        ]
        if not pods:
            return None
        newest = max(pods, key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))
        return PodFacts.of(newest)

    def _report_invalid(self, body: Json, status: Mapping[str, Any], error: SpecError) -> None:
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
            self._post(body, warning=True, reason="InvalidSpec", message=message)
        self._write_status(
            body, status, facts, tenant=str(spec.get("tenant") or body["metadata"]["namespace"])
        )

    def _write_status(self, body: Json, status: Mapping[str, Any], facts: Observed, *, tenant: str) -> None:
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        new = compute_status(facts, status, now=_now())
        if changed(new, status):
            self.kube.merge_patch("Pipeline", namespace, name, {"status": new}, subresource="status")
        before, after = ready_of(status), ready_of(new)
        ready_condition = new["conditions"][0]
        if before != after and (before is not None or after == "True"):
            self.metrics.transitions.labels(namespace, "ready" if after == "True" else "not_ready").inc()
            if after == "True":
                self._post(body, warning=False, reason="Ready", message=ready_condition["message"])
            else:
                self._post(body, warning=True, reason="NotReady",
                           message=f"{ready_condition['reason']}: {ready_condition['message']}")  # fmt: skip
        self.metrics.observe(
            namespace,
            name,
            tenant,
            phase=new["phase"],
            ready=after == "True",
            paused=facts.state != "running",
        )

    def _announce(self, body: Mapping[str, Any], action: Action, created: list[str] | None = None) -> None:
        reason, text = lifecycle.message(action, created or [])
        self._post(body, warning=action is Action.RESTORE, reason=reason, message=text)
        log.info("%s %s/%s: %s", reason, body["metadata"]["namespace"], body["metadata"]["name"], text)

    def _post(self, body: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
        try:
            self.kube.post_event(dict(body), warning=warning, reason=reason, message=message)
        except (ApiException, HTTPError, OSError) as error:  # an Event is worth a log line, not a retry
            log.warning("posting Event %s failed: %s", reason, error)


def _stamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _restarted_at(deployment: Mapping[str, Any] | None) -> str | None:
    """The last restart request the running Deployment carries, kept so it is not undone."""
    if deployment is None:
        return None
    template = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    value = (template.get("annotations") or {}).get(render.RESTARTED_AT)
    return str(value) if value else None
