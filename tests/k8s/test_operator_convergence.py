"""The operator end to end, convergence: an invalid spec reported once without retrying, and an
operator killed (SIGKILL) in the middle of its work converging after a restart with no duplicate
child, no repeated Created and a status for every Pipeline's current generation.

Fixtures in conftest.py; test_operator_apiserver_restart.py restarts the API server instead.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

from deltaforge_operator.render import CONFIG_HASH
from hack.operator_process import RESYNC_SECONDS
from tests.fixtures.control_plane import wait_for
from tests.support.operator_cluster import ONE_OF_EACH, PIPELINES, Cluster, Source, pipeline, secret

BATCH = 30  # enough that the operator is still busy with the batch when it is killed


def test_invalid_spec_is_reported_once_without_a_retry_storm(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    no_required_sink = pipeline("no-required", source, kafka_topic)
    no_required_sink["spec"]["sinks"][0]["required"] = False
    bad_template = pipeline("bad-template", source, "shop.${source.tabel}")
    cluster.apply(secret(source.role, source.password), no_required_sink, bad_template)

    def invalid(name: str) -> str:
        condition = cluster.condition(name, "Ready")
        return str(condition["message"]) if condition.get("reason") == "InvalidSpec" else ""

    assert "required: true" in str(wait_for(lambda: invalid("no-required"), timeout=30, what="InvalidSpec"))
    message = str(wait_for(lambda: invalid("bad-template"), timeout=30, what="InvalidSpec for the template"))
    assert "spec.sinks[0].kafka.topic" in message
    assert "tabel" in message
    metric = cluster.operator.metric
    passes = metric("deltaforge_operator_reconciliations_total", namespace=cluster.namespace)

    # Over more than one resync: nothing retried, nothing deployed, one Event per problem.
    time.sleep(RESYNC_SECONDS + 2)
    assert metric("deltaforge_operator_reconciliation_failures_total", namespace=cluster.namespace) == 0
    assert metric("deltaforge_operator_reconciliations_total", namespace=cluster.namespace) <= passes + 4
    assert cluster.items("deployments") == []
    for name in ("no-required", "bad-template"):
        assert cluster.event_reasons(name) == ["InvalidSpec"]
        found = cluster.get(PIPELINES, name)
        assert found["status"]["phase"] == "Failed"
        assert found["status"]["observedGeneration"] == found["metadata"]["generation"]


def test_operator_restart_midway_creates_no_duplicates(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    name = "restarted"
    cluster.apply(secret(source.role, source.password), pipeline(name, source, kafka_topic))
    wait_for(lambda: cluster.exists("deployment", f"deltaforge-{name}"), timeout=30, what="the Deployment")
    cluster.operator.stop(signal.SIGKILL)
    cluster.kubectl("delete", "service", f"deltaforge-{name}")
    cluster.operator.start()
    cluster.wait_ready(name)
    selector = f"deltaforge.io/pipeline={name}"
    assert cluster.child_counts() == {name: ONE_OF_EACH}
    # The restarted operator renders the same pod template, so the worker is not rolled. (The
    # Deployment controller may still keep a second, empty ReplicaSet for the same template.)
    replica_sets = cluster.items("replicasets", "-l", selector)
    hashes = {rs["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] for rs in replica_sets}
    active = [rs["metadata"]["name"] for rs in replica_sets if rs["spec"].get("replicas", 0) > 0]
    assert (len(hashes), len(active)) == (1, 1), (replica_sets, cluster.operator.log_tail(30))
    assert "Updated" not in cluster.event_reasons(name)
    assert len(cluster.pods()) == 1
    assert cluster.event_reasons(name).count("Created") == 1


def test_operator_killed_mid_batch_converges_without_duplicates(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    """SIGKILL while a batch of Pipelines is being reconciled (some have children, some not, some
    only part of them); while it is down, some change, one loses a child and one is deleted. The
    restarted operator converges every one of them from what the cluster holds."""
    names = [f"batch-{number:02d}" for number in range(BATCH)]
    manifests = [pipeline(name, source, kafka_topic) for name in names]
    for manifest in manifests:
        manifest["spec"]["state"] = "paused"  # the operator's work alone, no worker to wait for
    cluster.apply(secret(source.role, source.password), *manifests)
    wait_for(lambda: cluster.items("deployments"), timeout=60, interval=0.1, what="a first Deployment")
    cluster.operator.stop(signal.SIGKILL)
    done = sum(cluster.converged(found) for found in cluster.items(PIPELINES))
    print(f"killed with {done} of {BATCH} Pipelines reconciled")
    assert done < BATCH, "the operator finished the batch before it was killed: nothing was mid-way"

    changed, damaged, deleted = names[:5], names[5], names[6]
    for name in changed:
        cluster.kubectl(
            "patch", PIPELINES, name, "--type=merge", "-p", '{"spec": {"batch": {"maxEvents": 7}}}'
        )
    cluster.kubectl("delete", "service", f"deltaforge-{damaged}", "--ignore-not-found")
    cluster.kubectl("delete", PIPELINES, deleted)
    cluster.operator.start()

    remaining = [name for name in names if name != deleted]

    def all_converged() -> bool:
        found = cluster.items(PIPELINES)
        return len(found) == len(remaining) and all(cluster.converged(item) for item in found)

    wait_for(all_converged, timeout=120, interval=1, what=f"{len(remaining)} Pipelines to converge")
    for found in cluster.items(PIPELINES):
        name = found["metadata"]["name"]
        assert found["status"]["phase"] == "Paused", name
        assert found["metadata"]["generation"] == (2 if name in changed else 1), name

    # The garbage collector removes the deleted Pipeline's children but its checkpoint ConfigMap,
    # which reclaimPolicy Retain keeps (if the operator got to create it); every other has one of each.
    def collected() -> dict[str, dict[str, int]] | None:
        counts = cluster.child_counts()
        left = counts.pop(deleted, {})
        return counts if sum(left.values()) == left.get("configmaps", 0) <= 1 else None

    assert wait_for(collected, timeout=60, what="the deleted Pipeline's children to go") == dict.fromkeys(
        remaining, ONE_OF_EACH
    )
    # A pass killed after its apply but before its Event leaves none; never two.
    created: Counter[str] = Counter()
    for event in cluster.items("events"):
        if event["reason"] == "Created":
            created[event["involvedObject"]["name"]] += event.get("count", 1)
    assert max(created.values()) == 1, created
    assert cluster.operator.metric(
        "deltaforge_operator_pipelines_paused", namespace=cluster.namespace
    ) == len(remaining)
