"""The operator end to end, readiness and deletion: Ready follows the source database (Events,
counters), reclaimPolicy Delete drops the slot and the publication, and a deletion never hangs
when the database is unreachable (bounded, a Warning naming the slot, the skip annotation).

A test that stops its database uses a PostgreSQL of its own (tests/support/isolated_stack.py),
never the shared one. Fixtures in conftest.py.
"""

from __future__ import annotations

import time

from deltaforge_operator.cleanup import FINALIZER, SKIP_ANNOTATION
from hack.operator_process import CLEANUP_TIMEOUT_SECONDS
from hack.stack.config import HOST, PG_ADMIN_PASSWORD, PG_ADMIN_USER, Settings
from hack.stack.process import free_ports
from tests.fixtures.control_plane import wait_for
from tests.fixtures.data_stack import unique_name
from tests.support.isolated_stack import isolated_stack
from tests.support.operator_cluster import (
    PIPELINES,
    Cluster,
    Source,
    delivered_ids,
    make_source,
    reclaimed,
    secret,
)


def test_readiness_follows_the_source_and_deletion_drops_the_slot(
    cluster: Cluster, kafka_server: Settings, kafka_topic: str
) -> None:
    """Stopping the source database loses Ready, starting it again restores it (Events, counters);
    deleting the Pipeline with reclaimPolicy Delete drops its slot and the publication it created."""
    with isolated_stack("deltaforge-operator-") as stack:
        stack.up("postgres")
        port = stack.port("DELTAFORGE_PG_PORT")
        admin = f"postgresql://{PG_ADMIN_USER}:{PG_ADMIN_PASSWORD}@{HOST}:{port}/postgres"
        source = make_source(stack.postgres_database(unique_name("pg")), port, admin, kafka_server.kafka_bootstrap,
                         managed=True)  # fmt: skip
        name = "reclaimed"
        manifest = reclaimed(name, source, kafka_topic)
        manifest["spec"]["source"]["postgres"]["publication"]["create"] = True
        cluster.apply(secret(source.role, source.password), manifest)
        assert cluster.wait_ready(name)["metadata"]["finalizers"] == [FINALIZER]
        source.insert(1)
        assert delivered_ids(source, kafka_topic, 1) == {1}
        before = {to: cluster.transitions(to) for to in ("ready", "not_ready")}
        events_before = cluster.event_reasons(name)

        stack.down("postgres")
        condition = cluster.wait_not_ready(name)
        assert (condition["reason"], condition["message"].split(":")[0]) == ("WorkerNotReady", "source"), (
            condition
        )
        wait_for(lambda: cluster.transitions("not_ready") == before["not_ready"] + 1, timeout=15,
                 what="the not_ready counter")  # fmt: skip
        assert cluster.event_reasons(name).count("NotReady") == events_before.count("NotReady") + 1
        assert cluster.get(PIPELINES, name)["status"]["worker"]["lastError"].startswith("source: ")

        stack.up("postgres")
        cluster.wait_ready(name)
        wait_for(
            lambda: cluster.transitions("ready") == before["ready"] + 1, timeout=15, what="the ready counter"
        )
        assert cluster.event_reasons(name).count("Ready") == events_before.count("Ready") + 1
        assert "lastError" not in cluster.get(PIPELINES, name)["status"]["worker"]

        slot = cluster.get(PIPELINES, name)["spec"]["source"]["postgres"]["slot"]["name"]
        assert source.query(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}'") == [(1,)]
        cluster.kubectl("delete", PIPELINES, name, "--wait=false")
        wait_for(lambda: not cluster.exists(PIPELINES, name), timeout=CLEANUP_TIMEOUT_SECONDS + 30,
                 what="the deletion to finish")  # fmt: skip
        assert source.query("SELECT slot_name FROM pg_replication_slots") == []
        assert source.query("SELECT pubname FROM pg_publication") == []
        reasons = cluster.event_reasons(name)
        assert {"CleaningUp", "CleanedUp", "Deleted"} <= set(reasons), reasons
        assert cluster.lifecycle_count("cleanup", result="success") == 1
        assert cluster.lifecycle_count("delete") == 1
        assert not cluster.exists("job", f"deltaforge-{name}-cleanup")


def test_deletion_never_hangs_on_an_unreachable_database(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    """The cleanup is bounded: it gives up with a Warning naming the slot, or is skipped on request."""
    closed_port = free_ports(1)[0]
    manifests = [reclaimed(name, source, kafka_topic) for name in ("unreachable", "skipped")]
    for manifest in manifests:
        manifest["spec"]["source"]["postgres"].update(port=closed_port, connectTimeout="2s")
    cluster.apply(secret(source.role, source.password), *manifests)

    def finalized() -> bool:
        found = [cluster.get(PIPELINES, name)["metadata"] for name in ("unreachable", "skipped")]
        return all(FINALIZER in metadata.get("finalizers", []) for metadata in found)

    wait_for(finalized, timeout=30, what="the finalizers")
    cluster.kubectl("annotate", PIPELINES, "skipped", f"{SKIP_ANNOTATION}=true")
    started = time.monotonic()
    cluster.kubectl("delete", PIPELINES, "unreachable", "skipped", "--wait=false")

    wait_for(lambda: not cluster.exists(PIPELINES, "skipped"), timeout=30, what="the skipped deletion")
    [skipped] = [event for event in cluster.events("skipped") if event["reason"] == "CleanupSkipped"]
    assert skipped["type"] == "Warning"
    assert "pg_drop_replication_slot" in skipped["message"]

    wait_for(lambda: not cluster.exists(PIPELINES, "unreachable"), timeout=CLEANUP_TIMEOUT_SECONDS + 45,
             what="the bounded deletion")  # fmt: skip
    took = time.monotonic() - started
    [failed] = [event for event in cluster.events("unreachable") if event["reason"] == "CleanupFailed"]
    print(f"deletion with an unreachable database took {took:.1f} s: {failed['message']}")
    assert failed["type"] == "Warning"
    assert f":{closed_port}/" in failed["message"]
    assert "pg_drop_replication_slot" in failed["message"]
    assert cluster.lifecycle_count("cleanup", result="error") == 1
    assert cluster.lifecycle_count("cleanup", result="skipped") == 1
    assert cluster.items("jobs") == []
