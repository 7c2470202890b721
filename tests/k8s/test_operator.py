"""The operator end to end: the real API server and controller manager, the pod runner running the
real worker, and PostgreSQL and Kafka of the local stack. One operator process serves the module.

A test that stops its database uses a PostgreSQL of its own (tests/support/isolated_stack.py),
never the shared one.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from deltaforge_operator.cleanup import FINALIZER, SKIP_ANNOTATION
from deltaforge_operator.render import CONFIG_HASH, RESTART_REQUEST, RESTARTED_AT
from hack.stack.config import HOST, PG_ADMIN_PASSWORD, PG_ADMIN_USER, Settings
from hack.stack.process import free_ports
from tests.fixtures.control_plane import ControlPlane, PodRunnerHandle, wait_for
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.support.isolated_stack import isolated_stack
from tests.support.operator import CLEANUP_TIMEOUT_SECONDS, RESYNC_SECONDS, OperatorProcess, running_operator
from tests.support.worker import consume, values

PIPELINES = "pipelines.deltaforge.io"


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    pipeline_crd: None,
    pod_runner: PodRunnerHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(control_plane.kubeconfig, tmp_path_factory.mktemp("operator")) as process:
        yield process


@dataclass(frozen=True)
class Source:
    """A table with a publication, read by a replication role of its own whose password is planted."""

    database: PgDatabase
    port: int
    role: str
    password: str
    admin_dsn: str
    kafka: str

    def insert(self, *ids: int) -> None:
        with psycopg.connect(self.database.admin_dsn, autocommit=True) as admin:
            for row in ids:
                admin.execute("INSERT INTO orders (id, note) VALUES (%s, 'row')", [row])

    def set_password(self, password: str, *, create: bool = False) -> None:
        statement = "CREATE ROLE {} LOGIN REPLICATION PASSWORD {}" if create else "ALTER ROLE {} PASSWORD {}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL(statement).format(sql.Identifier(self.role), sql.Literal(password)))

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database.admin_dsn, autocommit=True) as admin:
            return admin.execute(statement).fetchall()


def _source(database: PgDatabase, port: int, admin_dsn: str, kafka: str, *, managed: bool = False) -> Source:
    """The role and the table; the publication too, unless the worker is to create (manage) it, for
    which its role owns the table and may create in the database."""
    found = Source(database, port, unique_name("role"), f"planted-{uuid.uuid4().hex}", admin_dsn, kafka)
    found.set_password(found.password, create=True)
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id bigint PRIMARY KEY, note text)")
        if managed:
            role, name = sql.Identifier(found.role), sql.Identifier(database.name)
            admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(name, role))
            admin.execute(sql.SQL("ALTER TABLE orders OWNER TO {}").format(role))
        else:
            admin.execute("CREATE PUBLICATION df_orders FOR TABLE orders")
    return found


@pytest.fixture
def source(pg_database: PgDatabase, postgres_server: Settings, kafka_server: Settings) -> Iterator[Source]:
    found = _source(
        pg_database,
        postgres_server.postgres_port,
        postgres_server.postgres_dsn(),
        kafka_server.kafka_bootstrap,
    )
    yield found
    with psycopg.connect(found.admin_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [found.role]
        )
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(found.role)))


@dataclass(frozen=True)
class Cluster:
    """kubectl in the test's namespace, with the lookups the scenarios repeat."""

    control_plane: ControlPlane
    namespace: str
    operator: OperatorProcess

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.control_plane.kubectl(*args, "-n", self.namespace, check=check).stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.control_plane.kubectl("apply", "-n", self.namespace, "-f", "-", input_text=document)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.control_plane.get_json(kind, name, "-n", self.namespace)
        return found

    def exists(self, kind: str, name: str) -> bool:
        result = self.control_plane.kubectl("get", kind, name, "-n", self.namespace, check=False)
        return result.returncode == 0

    def items(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.control_plane.get_json(kind, "-n", self.namespace, *selector)[
            "items"
        ]
        return found

    def pods(self) -> list[dict[str, Any]]:
        return [pod for pod in self.items("pods") if not pod["metadata"].get("deletionTimestamp")]

    def worker_pod(self) -> str:
        def one() -> str:
            pods = self.pods()
            return str(pods[0]["metadata"]["name"]) if len(pods) == 1 else ""

        return str(wait_for(one, timeout=60, what="exactly one worker pod"))

    def template(self, pipeline: str) -> dict[str, Any]:
        template: dict[str, Any] = self.get("deployment", f"deltaforge-{pipeline}")["spec"]["template"]
        return template

    def condition(self, pipeline: str, kind: str) -> dict[str, Any]:
        conditions = self.get(PIPELINES, pipeline).get("status", {}).get("conditions", [])
        return next((condition for condition in conditions if condition["type"] == kind), {})

    def wait_ready(self, pipeline: str) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            found = self.get(PIPELINES, pipeline)
            status = found.get("status", {})
            conditions = {
                condition["type"]: condition["status"] for condition in status.get("conditions", [])
            }
            current = status.get("observedGeneration") == found["metadata"]["generation"]
            return found if current and conditions.get("Ready") == "True" else None

        try:
            found = wait_for(ready, timeout=90, what=f"Pipeline {pipeline} to be Ready")
        except BaseException:
            print(self.operator.log_tail(), json.dumps(self.get(PIPELINES, pipeline).get("status"), indent=1))
            raise
        assert isinstance(found, dict)
        return found

    def events(self, pipeline: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=Pipeline,involvedObject.name={pipeline}"
        return self.items("events", "--field-selector", selector)

    def event_reasons(self, pipeline: str) -> list[str]:
        return [event["reason"] for event in self.events(pipeline)]

    def lifecycle_count(self, action: str, **labels: str) -> float:
        return self.operator.metric(
            "deltaforge_operator_lifecycle_actions_total", namespace=self.namespace, action=action, **labels
        )

    def transitions(self, to: str) -> float:
        return self.operator.metric(
            "deltaforge_operator_readiness_transitions_total", namespace=self.namespace, to=to
        )


@pytest.fixture
def cluster(control_plane: ControlPlane, namespace: str, operator: OperatorProcess) -> Iterator[Cluster]:
    """The test's namespace; afterwards its Pipelines are deleted and their workers gone, so no
    worker still holds a slot when the database is dropped."""
    found = Cluster(control_plane, namespace, operator)
    yield found
    found.kubectl("delete", PIPELINES, "--all", "--wait=true")
    wait_for(lambda: not found.pods(), timeout=60, what="the workers to stop")


def _secret(username: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-cdc"},
        "stringData": {"username": username, "password": password},
    }  # fmt: skip


def _pipeline(name: str, source: Source, topic: str) -> dict[str, Any]:
    postgres = {
        "host": HOST, "port": source.port, "database": source.database.name,
        "user": {"secretKeyRef": {"name": "pg-cdc", "key": "username"}},
        "password": {"secretKeyRef": {"name": "pg-cdc", "key": "password"}},
        "tables": ["public.orders"], "slot": {"name": unique_name("slot")}, "publication": {"name": "df_orders"},
        "heartbeat": {"interval": "1s"}, "connectTimeout": "5s",
    }  # fmt: skip
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"postgres": postgres},
            "sinks": [{"name": "events", "kafka": {"bootstrapServers": source.kafka, "topic": topic}}],
            "batch": {"maxEvents": 100, "maxDelay": "20ms"},
        },
    }


def _delivered_ids(source: Source, topic: str, expected: int) -> set[int]:
    return {
        int(record["after"]["id"]) for record in values(consume(source.kafka, [topic], expected, timeout=60))
    }


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
    cluster.apply(_secret(source.role, rotated))
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
    assert _delivered_ids(source, topic, 7) == {1, 2, 3, 4, 5, 6, 7}


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
    assert _delivered_ids(source, topic, 9) == set(range(1, 10))


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
    cluster.apply(_secret(source.role, source.password), _pipeline(name, source, kafka_topic))
    metadata = cluster.wait_ready(name)["metadata"]
    assert "finalizers" not in metadata  # nothing to clean up with reclaimPolicy Retain
    assert not [key for key in metadata.get("annotations", {}) if "kopf" in key]
    _check_children(cluster, name, metadata["uid"])
    source.insert(1, 2, 3)
    assert _delivered_ids(source, kafka_topic, 3) == {1, 2, 3}

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


def test_invalid_spec_is_reported_once_without_a_retry_storm(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    no_required_sink = _pipeline("no-required", source, kafka_topic)
    no_required_sink["spec"]["sinks"][0]["required"] = False
    bad_template = _pipeline("bad-template", source, "shop.${source.tabel}")
    cluster.apply(_secret(source.role, source.password), no_required_sink, bad_template)

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
        pipeline = cluster.get(PIPELINES, name)
        assert pipeline["status"]["phase"] == "Failed"
        assert pipeline["status"]["observedGeneration"] == pipeline["metadata"]["generation"]


def test_operator_restart_midway_creates_no_duplicates(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    name = "restarted"
    cluster.apply(_secret(source.role, source.password), _pipeline(name, source, kafka_topic))
    wait_for(lambda: cluster.exists("deployment", f"deltaforge-{name}"), timeout=30, what="the Deployment")
    cluster.operator.stop(signal.SIGKILL)
    cluster.kubectl("delete", "service", f"deltaforge-{name}")
    cluster.operator.start()
    cluster.wait_ready(name)
    selector = f"deltaforge.io/pipeline={name}"
    counts = {kind: len(cluster.items(kind, "-l", selector)) for kind in (
        "deployments", "services", "configmaps", "secrets", "roles", "rolebindings", "serviceaccounts",
    )}  # fmt: skip
    # Two ConfigMaps: the worker's config and its checkpoint.
    assert counts == {kind: 2 if kind == "configmaps" else 1 for kind in counts}
    # The restarted operator renders the same pod template, so the worker is not rolled. (The
    # Deployment controller may still keep a second, empty ReplicaSet for the same template.)
    replica_sets = cluster.items("replicasets", "-l", selector)
    hashes = {rs["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH] for rs in replica_sets}
    active = [rs["metadata"]["name"] for rs in replica_sets if rs["spec"].get("replicas", 0) > 0]
    assert (len(hashes), len(active)) == (1, 1), (replica_sets, cluster.operator.log_tail(30))
    assert "Updated" not in cluster.event_reasons(name)
    assert len(cluster.pods()) == 1
    assert cluster.event_reasons(name).count("Created") == 1


def _reclaimed(name: str, source: Source, topic: str) -> dict[str, Any]:
    manifest = _pipeline(name, source, topic)
    manifest["spec"]["source"]["postgres"]["slot"]["reclaimPolicy"] = "Delete"
    return manifest


def _wait_not_ready(cluster: Cluster, name: str) -> dict[str, Any]:
    def not_ready() -> dict[str, Any]:
        condition = cluster.condition(name, "Ready")
        return condition if condition.get("status") == "False" else {}

    found = wait_for(not_ready, timeout=60, what=f"Pipeline {name} to lose Ready")
    assert isinstance(found, dict)
    return found


def test_readiness_follows_the_source_and_deletion_drops_the_slot(
    cluster: Cluster, kafka_server: Settings, kafka_topic: str
) -> None:
    """Stopping the source database loses Ready, starting it again restores it (Events, counters);
    deleting the Pipeline with reclaimPolicy Delete drops its slot and the publication it created."""
    with isolated_stack("deltaforge-operator-") as stack:
        stack.up("postgres")
        port = stack.port("DELTAFORGE_PG_PORT")
        admin = f"postgresql://{PG_ADMIN_USER}:{PG_ADMIN_PASSWORD}@{HOST}:{port}/postgres"
        source = _source(stack.postgres_database(unique_name("pg")), port, admin, kafka_server.kafka_bootstrap,
                         managed=True)  # fmt: skip
        name = "reclaimed"
        manifest = _reclaimed(name, source, kafka_topic)
        manifest["spec"]["source"]["postgres"]["publication"]["create"] = True
        cluster.apply(_secret(source.role, source.password), manifest)
        assert cluster.wait_ready(name)["metadata"]["finalizers"] == [FINALIZER]
        source.insert(1)
        assert _delivered_ids(source, kafka_topic, 1) == {1}
        before = {to: cluster.transitions(to) for to in ("ready", "not_ready")}
        events_before = cluster.event_reasons(name)

        stack.down("postgres")
        condition = _wait_not_ready(cluster, name)
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
        assert not cluster.exists("job", f"deltaforge-{name}-cleanup")


def test_deletion_never_hangs_on_an_unreachable_database(
    cluster: Cluster, source: Source, kafka_topic: str
) -> None:
    """The cleanup is bounded: it gives up with a Warning naming the slot, or is skipped on request."""
    closed_port = free_ports(1)[0]
    manifests = [_reclaimed(name, source, kafka_topic) for name in ("unreachable", "skipped")]
    for manifest in manifests:
        manifest["spec"]["source"]["postgres"].update(port=closed_port, connectTimeout="2s")
    cluster.apply(_secret(source.role, source.password), *manifests)

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
