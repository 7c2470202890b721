"""The operator end to end across a restart of the API server (issue 7): the operator and a
running worker outlive it, and Pipelines that change right after it converge with no duplicate
child and a status for their current generation.

This is the one test that restarts the shared stack's kube-apiserver (etcd keeps the data), with
the stack tool, so other runs on the same stack see the outage too: it is kept short (a stop and a
start, nothing in between but rows written to PostgreSQL) and bounded by OUTAGE_LIMIT_SECONDS.
Fixtures in conftest.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.control_plane import wait_for
from tests.support.operator_cluster import (
    CHILD_KINDS,
    ONE_OF_EACH,
    PIPELINES,
    Cluster,
    Source,
    delivered_ids,
    pipeline,
    secret,
)

REPO = Path(__file__).resolve().parents[2]
OUTAGE_LIMIT_SECONDS = 90  # a stop plus a start; starting takes seconds on an idle machine


def _stack(command: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "hack.stack", command, "kube-apiserver"],
        cwd=REPO, check=True, timeout=OUTAGE_LIMIT_SECONDS, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@contextmanager
def api_server_restart() -> Iterator[None]:
    """The API server stopped for the body, started again after it whatever happened."""
    started = time.monotonic()
    _stack("down")
    try:
        yield
    finally:
        _stack("up")
    outage = time.monotonic() - started
    print(f"the API server was away for {outage:.1f} s")
    assert outage < OUTAGE_LIMIT_SECONDS


def test_operator_and_worker_converge_after_the_api_server_restarts(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    live, idle = "live", [f"idle-{number}" for number in range(3)]
    manifests = [pipeline(name, source, kafka_topic) for name in (live, *idle)]
    for manifest in manifests[1:]:
        manifest["spec"]["state"] = "paused"
    cluster.apply(secret(source.role, source.password), *manifests)
    cluster.wait_ready(live)
    wait_for(lambda: all(map(cluster.converged, cluster.items(PIPELINES))), timeout=60, what="convergence")
    source.insert(1)
    assert delivered_ids(source, kafka_topic, 1) == {1}
    worker, operator = cluster.worker_pod(), cluster.operator.pid

    with api_server_restart():
        source.insert(2, 3)  # the worker streams on without the API server

    # Changes while the operator's watches are still re-established: a spec, a state, a child.
    changed, stopped = idle[0], idle[1]
    cluster.kubectl(
        "patch", PIPELINES, changed, "--type=merge", "-p", '{"spec": {"batch": {"maxEvents": 7}}}'
    )
    cluster.kubectl("patch", PIPELINES, stopped, "--type=merge", "-p", '{"spec": {"state": "stopped"}}')
    cluster.kubectl("delete", "service", f"deltaforge-{live}")

    def all_converged() -> bool:
        found = cluster.items(PIPELINES)
        generations = {item["metadata"]["name"]: item["metadata"]["generation"] for item in found}
        return generations[changed] == 2 and all(map(cluster.converged, found))

    wait_for(all_converged, timeout=90, interval=1, what="every Pipeline to converge after the restart")
    cluster.wait_ready(live)
    phases = {item["metadata"]["name"]: item["status"]["phase"] for item in cluster.items(PIPELINES)}
    assert phases == {live: "Running", changed: "Paused", stopped: "Stopped", idle[2]: "Paused"}
    # A stopped Pipeline keeps only its checkpoint; the Service is back; nothing is there twice.
    only_checkpoint = dict.fromkeys(CHILD_KINDS, 0) | {"configmaps": 1}
    expected = {live: ONE_OF_EACH, changed: ONE_OF_EACH, idle[2]: ONE_OF_EACH, stopped: only_checkpoint}
    wait_for(lambda: cluster.child_counts() == expected, timeout=60, what=f"children as {expected}")

    # The same operator process and the same worker pod, which lost nothing.
    assert cluster.operator.pid == operator
    assert cluster.operator.popen is not None
    assert cluster.operator.popen.poll() is None
    assert cluster.operator.get("/healthz")[0] == 200
    assert cluster.worker_pod() == worker
    source.insert(4)
    assert delivered_ids(source, kafka_topic, 4) == {1, 2, 3, 4}
    # One Created each; Updated only for the spec that changed (the restart rolled no template).
    for name in (live, *idle):
        reasons = cluster.event_reasons(name)
        assert (reasons.count("Created"), "Updated" in reasons) == (1, name == changed), (name, reasons)
