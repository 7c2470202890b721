"""Many Pipelines applied at once are all reconciled: the time it takes and the operator's memory.

The Pipelines are paused, so reconciling one (its eight children applied, its status written)
needs no running worker and the figure is the operator's alone. The operator runs as its own
process for this module, so its memory is not that of earlier tests. $DELTAFORGE_SCALE_PIPELINES
sets the count (default 200; `DELTAFORGE_SCALE_PIPELINES=1000 pytest tests/k8s/test_operator_scale.py -s`
measures issue 8's thousand).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from hack.operator_process import OperatorProcess, paused_pipeline, running_operator
from tests.fixtures.control_plane import ControlPlane, wait_for

COUNT = int(os.environ.get("DELTAFORGE_SCALE_PIPELINES", "200"))
PIPELINES = "pipelines.deltaforge.io"


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, pipeline_crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    # The default resync (60 s), not the other e2e tests' 10 s: resyncs cost passes, as in production.
    directory = tmp_path_factory.mktemp("operator-scale")
    with running_operator(control_plane.kubeconfig, directory, resync_seconds=60) as process:
        yield process


def _reconciled(control_plane: ControlPlane, namespace: str) -> int:
    """How many Pipelines have their Deployment and a status for their current generation."""
    deployments = {
        item["metadata"]["name"] for item in control_plane.get_json("deployments", "-n", namespace)["items"]
    }
    return sum(
        1
        for item in control_plane.get_json(PIPELINES, "-n", namespace)["items"]
        if item.get("status", {}).get("observedGeneration") == item["metadata"]["generation"]
        and item["status"].get("phase") == "Paused"
        and f"deltaforge-{item['metadata']['name']}" in deployments
    )


def test_many_pipelines_applied_at_once_are_all_reconciled(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    items = [paused_pipeline(f"p-{number:04d}") for number in range(COUNT)]
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    started = time.monotonic()
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input_text=document)
    applied = time.monotonic() - started
    wait_for(lambda: _reconciled(control_plane, namespace) == COUNT, timeout=60 + COUNT * 0.6, interval=2,
             what=f"{COUNT} Pipelines to be reconciled")  # fmt: skip
    took = time.monotonic() - started
    resident, peak = operator.memory_mib()
    failures = operator.metric("deltaforge_operator_reconciliation_failures_total", namespace=namespace)
    passes = operator.metric("deltaforge_operator_reconciliations_total", namespace=namespace)
    busy = operator.metric("deltaforge_operator_reconcile_duration_seconds_sum", namespace=namespace)
    print(
        f"\n{COUNT} Pipelines: applied in {applied:.1f} s, all reconciled after {took:.1f} s "
        f"({passes:.0f} passes of {busy / passes:.2f} s on average, {failures:.0f} failed and retried); "
        f"operator RSS {resident:.0f} MiB (peak {peak:.0f} MiB)"
    )
    assert operator.metric("deltaforge_operator_pipelines", namespace=namespace, phase="Paused") == COUNT
    assert operator.metric("deltaforge_operator_pipelines_paused", namespace=namespace) == COUNT
