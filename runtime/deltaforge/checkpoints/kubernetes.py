"""A checkpoint in a ConfigMap of the pipeline's namespace, with coalesced writes.

The API server is not a database for per-batch writes: `save` records the newest checkpoint and
a background task writes it at most once per `interval`; `close` writes the last one. A crash can
lose at most one interval of checkpoints, which replays (never skips) those changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deltaforge.checkpoints import codec
from deltaforge.events import Checkpoint

KEY = "checkpoint.json"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NOT_FOUND, CONFLICT = 404, 409


def _api() -> client.CoreV1Api:
    """In a pod: its service account; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        # The client reads $KUBECONFIG once, at import; read it at call time instead.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


def default_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        return "default"


class KubernetesCheckpointStore:
    def __init__(self, name: str, namespace: str, *, pipeline: str, interval: float = 1.0) -> None:
        self.name, self.namespace, self.pipeline, self.interval = name, namespace, pipeline, interval
        self._api: client.CoreV1Api | None = None
        self._latest: Checkpoint | None = None
        self._written: Checkpoint | None = None
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def _core(self) -> client.CoreV1Api:
        if self._api is None:
            self._api = _api()
        return self._api

    async def load(self) -> Checkpoint | None:
        try:
            config_map = await asyncio.to_thread(
                self._core().read_namespaced_config_map, self.name, self.namespace
            )
        except ApiException as error:
            if error.status == NOT_FOUND:
                return None
            raise
        data = (config_map.data or {}).get(KEY)
        if data is None:
            return None
        self._written = codec.load(data, f"ConfigMap {self.namespace}/{self.name}")
        return self._written

    async def save(self, checkpoint: Checkpoint) -> None:
        self._latest = checkpoint
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_periodically(), name="checkpoint-configmap")
        self._wake.set()

    async def _flush_periodically(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                self.last_error = None
            except (ApiException, OSError) as error:
                # Retried at the next save; the source is still acknowledged only up to delivered data.
                self.last_error = f"writing ConfigMap {self.namespace}/{self.name}: {error}"
                self._wake.set()
            await asyncio.sleep(self.interval)

    async def flush(self) -> None:
        latest = self._latest
        if latest is None or latest == self._written:
            return
        await asyncio.to_thread(self._write, codec.dump(latest).decode())
        self._written = latest

    def _write(self, document: str) -> None:
        core = self._core()
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=self.name,
                namespace=self.namespace,
                labels={"app.kubernetes.io/part-of": "deltaforge", "deltaforge.io/pipeline": self.pipeline},
            ),
            data={KEY: document},
        )
        try:
            core.patch_namespaced_config_map(self.name, self.namespace, {"data": {KEY: document}})
        except ApiException as error:
            if error.status != NOT_FOUND:
                raise
            core.create_namespaced_config_map(self.namespace, body)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
