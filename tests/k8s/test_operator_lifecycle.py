"""The operator end to end, one Pipeline's life: created, its children owned and Ready, rows in
Kafka; drift corrected, a rotated Secret rolling the worker, paused and stopped without losing a
row, restarted on request; its Events and counters, and its deletion keeping the slot (Retain).

Against the real API server and controller manager, the pod runner running the real worker, and
PostgreSQL and Kafka of the local stack; fixtures in conftest.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from deltaforge_operator.render import CONFIG_HASH, RESTART_REQUEST, RESTARTED_AT
from tests.fixtures.control_plane import wait_for
from tests.support.operator_cluster import PIPELINES, Cluster, Source, delivered_ids, pipeline, secret


def _check_children(cluster: Cluster, name: str, uid: str) -> None:
    names = {"configmap": f"deltaforge-{name}-config", "secret": f"deltaforge-{name}-credentials"}
    for kind in ("configmap", "secret", "serviceaccount", "role", "rolebinding", "service", "deployment"):
        [owner] = cluster.get(kind, names.get(kind, f"deltaforge-{name}"))["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("Pipeline", uid, True), kind
    deployment = cluster.get("deployment", f"deltaforge-{name}")["spec"]
    assert (deployment["strategy"]["type"], deployment["replicas"]) == ("Recreate", 1)
    pod = deployment["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    rules = cluster.get("role", f"deltaforge-{name}")["rules"]
    assert {tuple(rule["resourceNames"]) for rule in rules} == {(f"{name}-checkpoint",), (name,)}
    listing = cluster.kubectl("get", PIPELINES, name)
    assert listing.splitlines()[1].split()[:3] == [name, "running", "True"], listing


def _check_drift_is_corrected(cluster: Cluster, name: str) -> None:
    first = cluster.get("deployment", f"deltaforge-{name}")["metadata"]["uid"]
    cluster.kubectl("delete", "deployment", f"deltaforge-{name}", "--wait=false")
    cluster.kubectl("patch", "configmap", f"deltaforge-{name}-config", "--type=merge",
                    "-p", '{"data": {"pipeline.yaml": "edited"}}')  # fmt: skip

    def deployment_replaced() -> bool:
        exists = cluster.exists("deployment", f"deltaforge-{name}")
        return exists and cluster.get("deployment", f"deltaforge-{name}")["metadata"]["uid"] != first

    wait_for(deployment_replaced, timeout=30, what="the deleted Deployment to come back")
    wait_for(
        lambda: cluster.get("configmap", f"deltaforge-{name}-config")["data"]["pipeline.yaml"] != "edited",
        timeout=30,
        what="the edited ConfigMap to be restored",
    )
    cluster.wait_ready(name)


def _check_secret_rotation_rolls_the_worker(
    cluster: Cluster, name: str, source: Source, rotated: str
) -> None:
    before, pod = cluster.template(name)["metadata"]["annotations"][CONFIG_HASH], cluster.worker_pod()
    source.set_password(rotated)
    cluster.apply(secret(source.role, rotated))
    wait_for(
        lambda: cluster.template(name)["metadata"]["annotations"][CONFIG_HASH] != before,
        timeout=30,
        what="the pod template hash to change after the Secret changed",
    )
    wait_for(lambda: cluster.worker_pod() != pod, timeout=60, what="a new worker pod")
    cluster.wait_ready(name)


def _check_pause_loses_nothing(cluster: Cluster, name: str, source: Source, topic: str) -> None:
    cluster.kubectl("patch", PIPELINES, name, "--type=merge", "-p", '{"spec": {"state": "paused"}}')
    wait_for(lambda: not cluster.pods(), timeout=60, what="the paused worker to stop")
    wait_for(
        lambda: cluster.get(PIPELINES, name)["status"]["phase"] == "Paused", timeout=30, what="phase Paused"
    )
    assert cluster.condition(name, "Paused")["status"] == "True"
    source.insert(4, 5, 6)
    cluster.kubectl("patch", PIPELINES, name, "--type=merge", "-p", '{"spec": {"state": "running"}}')
    cluster.wait_ready(name)
    source.insert(7)
    assert delivered_ids(source, topic, 7) == {1, 2, 3, 4, 5, 6, 7}


def _check_stop_releases_and_keeps_the_position(
    cluster: Cluster, name: str, source: Source, topic: str
) -> None:
    """Unlike paused, stopped gives up everything but the position: the checkpoint and the slot."""
    cluster.kubectl("patch", PIPELINES, name, "--type=merge", "-p", '{"spec": {"state": "stopped"}}')
    released = [("deployment", f"deltaforge-{name}"), ("service", f"deltaforge-{name}"),
                ("role", f"deltaforge-{name}"), ("secret", f"deltaforge-{name}-credentials"),
                ("configmap", f"deltaforge-{name}-config")]  # fmt: skip
    wait_for(lambda: not any(cluster.exists(*child) for child in released), timeout=60, what="the release")
    assert cluster.exists("configmap", f"{name}-checkpoint")
    wait_for(
        lambda: cluster.get(PIPELINES, name)["status"]["phase"] == "Stopped", timeout=30, what="phase Stopped"
    )
    source.insert(8, 9)
    cluster.kubectl("patch", PIPELINES, name, "--type=merge", "-p", '{"spec": {"state": "running"}}')
    cluster.wait_ready(name)
    assert delivered_ids(source, topic, 9) == set(range(1, 10))


def _check_the_worker_reports(cluster: Cluster, name: str) -> None:
    """The worker's own fields in the status: heartbeat, position, lag, sinks."""

    def reported() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get(PIPELINES, name)["status"]
        return status if status.get("source", {}).get("lastEventTime") else None

    status = wait_for(reported, timeout=40, what="the worker's report of its position")
    assert isinstance(status, dict)
    assert {"kind", "position", "lagSeconds", "lastEventTime"} <= set(status["source"]), status
    assert (status["sinksReady"], status["sinks"]) == ("1/1", [{"name": "events", "connected": True}])
    assert status["worker"]["lastHeartbeatTime"]
    assert "lastError" not in status["worker"]


def _check_restart_annotation(cluster: Cluster, name: str) -> None:
    pod = cluster.worker_pod()
    cluster.kubectl("annotate", PIPELINES, name, f"{RESTART_REQUEST}=please")
    wait_for(
        lambda: RESTART_REQUEST not in cluster.get(PIPELINES, name)["metadata"].get("annotations", {}),
        timeout=30,
        what="the operator to remove the restart annotation",
    )
    assert RESTARTED_AT in cluster.template(name)["metadata"]["annotations"]
    wait_for(lambda: cluster.worker_pod() != pod, timeout=60, what="a restarted worker pod")
    cluster.wait_ready(name)


def test_pipeline_lifecycle_end_to_end(cluster: Cluster, source: Source, kafka_topic: str) -> None:
    name, rotated = "orders", f"planted-{uuid.uuid4().hex}"
    cluster.apply(secret(source.role, source.password), pipeline(name, source, kafka_topic))
    metadata = cluster.wait_ready(name)["metadata"]
    assert "finalizers" not in metadata  # nothing to clean up with reclaimPolicy Retain
    assert not [key for key in metadata.get("annotations", {}) if "kopf" in key]
    _check_children(cluster, name, metadata["uid"])
    source.insert(1, 2, 3)
    assert delivered_ids(source, kafka_topic, 3) == {1, 2, 3}

    _check_drift_is_corrected(cluster, name)
    _check_secret_rotation_rolls_the_worker(cluster, name, source, rotated)
    _check_pause_loses_nothing(cluster, name, source, kafka_topic)
    _check_stop_releases_and_keeps_the_position(cluster, name, source, kafka_topic)
    _check_restart_annotation(cluster, name)
    _check_the_worker_reports(cluster, name)

    reasons = cluster.event_reasons(name)
    for reason in ("Created", "Ready", "NotReady", "Restored", "Updated", "Paused", "Stopped", "Resumed",
                   "Restarted"):  # fmt: skip
        assert reason in reasons, (reason, reasons)
    for action in ("create", "restore", "update", "pause", "stop", "resume", "restart"):
        assert cluster.lifecycle_count(action) >= 1, action
    ready = {"namespace": cluster.namespace, "pipeline": name}
    assert cluster.operator.metric("deltaforge_operator_pipeline_ready", **ready) == 1

    # No credential in the rendered ConfigMap, the Events, the status or the operator's log.
    texts = [
        json.dumps(cluster.get("configmap", f"deltaforge-{name}-config")),
        json.dumps(cluster.items("events")),
        json.dumps(cluster.get(PIPELINES, name)["status"]),
        cluster.operator.log(),
    ]
    assert not [text for text in texts for planted in (source.password, rotated) if planted in text]

    slot = cluster.get(PIPELINES, name)["spec"]["source"]["postgres"]["slot"]["name"]
    cluster.kubectl("delete", PIPELINES, name)
    wait_for(
        lambda: not cluster.exists("deployment", f"deltaforge-{name}"), timeout=60, what="garbage collection"
    )
    wait_for(lambda: "Deleted" in cluster.event_reasons(name), timeout=30, what="a Deleted Event")
    assert cluster.lifecycle_count("delete") == 1
    assert f'pipeline="{name}"' not in cluster.operator.get("/metrics")[1].split(cluster.namespace, 1)[-1]
    # reclaimPolicy Retain: the slot stays for a Pipeline re-created later; so does the checkpoint.
    assert source.query(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}'") == [(1,)]
    assert cluster.exists("configmap", f"{name}-checkpoint")
