"""The `kubernetes` checkpoint store keeps the position in a ConfigMap of the real API server."""

from __future__ import annotations

import asyncio

import pytest

from deltaforge.checkpoints.kubernetes import KEY, KubernetesCheckpointStore
from deltaforge.events import Checkpoint
from tests.fixtures.control_plane import ControlPlane


def test_checkpoint_round_trips_through_a_configmap_with_coalesced_writes(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", control_plane.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def scenario() -> tuple[Checkpoint | None, Checkpoint | None]:
        store = KubernetesCheckpointStore("orders-checkpoint", namespace, pipeline="orders", interval=0.2)
        empty = await store.load()
        for index in range(50):  # many saves in a burst become a few writes
            await store.save(Checkpoint("0/16B6C50", index, 0))
        await store.save(Checkpoint("0/16B7000", -1, 0x16B7100))
        await store.close()
        again = KubernetesCheckpointStore("orders-checkpoint", namespace, pipeline="orders")
        return empty, await again.load()

    empty, loaded = asyncio.run(scenario())
    assert empty is None
    assert loaded == Checkpoint("0/16B7000", -1, 0x16B7100)
    stored = control_plane.get_json("configmap", "orders-checkpoint", "-n", namespace)
    assert stored["metadata"]["labels"]["deltaforge.io/pipeline"] == "orders"
    assert '"position":"0/16B7000"' in stored["data"][KEY]
