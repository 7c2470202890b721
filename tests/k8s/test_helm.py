"""The Helm chart (helm/deltaforge) installed on the local API server: install, a CRD upgrade,
rollback and uninstall, with the pod runner running the operator pod and its worker against
PostgreSQL and Kafka of the local stack.

The installed release watches only its own namespace: an operator for every namespace would also
reconcile the Pipelines of other tests (and of a running `make demo`).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from deltaforge_operator.crd import CRD_NAME
from hack.stack.config import HOST, PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.control_plane import ControlPlane, PodRunnerHandle, wait_for
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.support.helm_chart import CHART, CRD_FILE, LOCAL_VALUES, PIPELINES, Manifest
from tests.support.worker import consume, values


@pytest.fixture
def crd_ownership(control_plane: ControlPlane, pipeline_crd: None) -> Iterator[None]:
    """The shared CRD's labels and annotations as they were before the test's release took it over
    (`--take-ownership`), so the release that owned it before (the demo's, say) still does."""

    def metadata() -> dict[str, dict[str, str]]:
        found = control_plane.get_json("crd", CRD_NAME)["metadata"]
        return {part: found.get(part) or {} for part in ("labels", "annotations")}

    before = metadata()
    yield
    after = metadata()
    patch = {
        part: {key: before[part].get(key) for key in before[part] | after[part]
               if before[part].get(key) != after[part].get(key)}
        for part in before
    }  # fmt: skip
    control_plane.kubectl("patch", "crd", CRD_NAME, "--type=merge", "-p", json.dumps({"metadata": patch}))


@dataclass(frozen=True)
class Release:
    """A release in a namespace of its own, whose operator watches only that namespace."""

    control_plane: ControlPlane
    name: str
    namespace: str

    def install(self, chart: Path, *command: str) -> None:
        self.control_plane.helm(
            *command, self.name, str(chart), "--namespace", self.namespace, "-f", str(LOCAL_VALUES),
            "--set", f"watchNamespaces={{{self.namespace}}}", "--set", "operator.resyncInterval=10",
            "--wait", "--timeout", "90s",
        )  # fmt: skip


@pytest.fixture
def release(control_plane: ControlPlane, namespace: str, crd_ownership: None) -> Iterator[Release]:
    """Uninstalled afterwards whatever happened: its ClusterRoles would outlive the namespace."""
    found = Release(control_plane, f"df-{uuid.uuid4().hex[:6]}", namespace)
    yield found
    control_plane.helm("uninstall", found.name, "--namespace", namespace, check=False)


@dataclass(frozen=True)
class Orders:
    """A table with a publication, read by the stack's CDC user, and a Kafka topic of its own."""

    database: PgDatabase
    postgres_port: int
    kafka: str
    topic: str

    def pipeline(self) -> Manifest:
        postgres = {
            "host": HOST, "port": self.postgres_port, "database": self.database.name, "user": PG_CDC_USER,
            "password": {"secretKeyRef": {"name": "pg-cdc", "key": "password"}}, "tables": ["public.orders"],
            "slot": {"name": unique_name("slot")}, "publication": {"name": "df_orders"}, "connectTimeout": "5s",
        }  # fmt: skip
        return {
            "apiVersion": "deltaforge.io/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "orders"},
            "spec": {
                "source": {"postgres": postgres},
                "sinks": [{"name": "events", "kafka": {"bootstrapServers": self.kafka, "topic": self.topic}}],
                "batch": {"maxEvents": 100, "maxDelay": "20ms"},
            },
        }


@pytest.fixture
def orders(
    pg_database: PgDatabase, postgres_server: Settings, kafka_server: Settings, kafka_topic: str
) -> Orders:
    with psycopg.connect(pg_database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id bigint PRIMARY KEY, note text)")
        admin.execute("CREATE PUBLICATION df_orders FOR TABLE orders")
    return Orders(pg_database, postgres_server.postgres_port, kafka_server.kafka_bootstrap, kafka_topic)


def _operator_log(pod_runner: PodRunnerHandle, release: Release) -> str:
    """The operator pod's log, from whichever pod runner on this stack bound it (another test
    session's may have been quicker than this one's)."""
    pattern = f"*/pods/{release.namespace}_{release.name}-deltaforge-operator-*/logs/operator.log"
    logs = sorted(pod_runner.work_dir.parent.glob(pattern))
    return "\n".join(path.read_text(errors="replace") for path in logs)


def _wait_ready(
    control_plane: ControlPlane, namespace: str, name: str, operator_log: Callable[[], str]
) -> None:
    def ready() -> bool:
        found = control_plane.get_json(PIPELINES, name, "-n", namespace)
        conditions = {c["type"]: c["status"] for c in found.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    try:
        wait_for(ready, timeout=90, what=f"Pipeline {name} to be Ready")
    except BaseException:
        print(operator_log()[-4000:], control_plane.get_json(PIPELINES, name, "-n", namespace).get("status"))
        raise


def _can_i(control_plane: ControlPlane, subject: str, namespace: str, *request: str) -> str:
    result = control_plane.kubectl("auth", "can-i", *request, "-n", namespace, f"--as={subject}", check=False)
    return result.stdout.strip()


def _check_the_worker_reads_no_secret(control_plane: ControlPlane, namespace: str) -> None:
    """The worker's ServiceAccount gets its checkpoint ConfigMap and its Pipeline's status, nothing
    else; its credentials come mounted, never through the API."""
    worker = f"system:serviceaccount:{namespace}:deltaforge-orders"
    assert _can_i(control_plane, worker, namespace, "get", "secrets") == "no"
    assert _can_i(control_plane, worker, namespace, "get", "secret/pg-cdc") == "no"
    assert _can_i(control_plane, worker, namespace, "patch", "configmap/orders-checkpoint") == "yes"
    assert _can_i(control_plane, worker, namespace, "get", "configmap/deltaforge-orders-config") == "no"
    assert (
        _can_i(control_plane, worker, namespace, "patch", f"{PIPELINES}/orders", "--subresource=status")
        == "yes"
    )


def _check_roles(release: Release) -> None:
    """The operator holds its Role in the watched namespace only; people get Pipelines through the
    built-in view and edit roles (aggregation)."""
    control_plane, namespace = release.control_plane, release.namespace
    operator = f"system:serviceaccount:{namespace}:{release.name}-deltaforge-operator"
    assert _can_i(control_plane, operator, namespace, "create", "deployments") == "yes"
    assert _can_i(control_plane, operator, "default", "create", "deployments") == "no"
    assert _can_i(control_plane, operator, "default", "get", "secrets") == "no"
    for user, role in (("viewer", "view"), ("editor", "edit")):
        control_plane.kubectl(
            "create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}", "-n", namespace
        )
    wait_for(
        lambda: _can_i(control_plane, "editor", namespace, "create", PIPELINES) == "yes",
        timeout=30, what="the edit role to aggregate the Pipeline rules",
    )  # fmt: skip
    wait_for(
        lambda: _can_i(control_plane, "viewer", namespace, "list", PIPELINES) == "yes",
        timeout=30, what="the view role to aggregate the Pipeline rules",
    )  # fmt: skip
    assert _can_i(control_plane, "viewer", namespace, "delete", PIPELINES) == "no"
    assert _can_i(control_plane, "editor", namespace, "patch", PIPELINES, "--subresource=status") == "no"


def _check_crd_upgrade_and_rollback(release: Release, tmp_path: Path) -> None:
    """`helm upgrade` with a chart whose CRD has a new field updates the CRD the API server serves
    (Helm would leave a CRD in the chart's crds/ as it was); a rollback takes it back out."""
    control_plane, namespace = release.control_plane, release.namespace
    chart = tmp_path / "deltaforge"
    shutil.copytree(CHART, chart)
    crd_copy = chart / "files" / f"{CRD_NAME}.yaml"
    crd = yaml.safe_load(crd_copy.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["upgradeProbe"] = {"type": "string", "description": "added by test_helm.py"}
    crd_copy.write_text(yaml.safe_dump(crd))
    probe = {
        "apiVersion": "deltaforge.io/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "upgradeProbe": "x",
            "source": {"postgres": {"host": "h", "database": "d", "user": "u", "tables": ["public.t"]}},
            "sinks": [{"name": "s", "kafka": {"bootstrapServers": "h:1", "topic": "t"}}],
        },
    }  # fmt: skip

    def accepted() -> bool:  # strict field validation: an undeclared field is an error
        result = control_plane.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input_text=json.dumps(probe), check=False
        )
        assert result.returncode == 0 or ".spec.upgradeProbe: field not declared in schema" in result.stderr
        return result.returncode == 0

    assert not accepted()
    release.install(chart, "upgrade")
    wait_for(accepted, timeout=30, what="the API server to serve the upgraded CRD")
    control_plane.helm("rollback", release.name, "1", "--namespace", namespace, "--wait")
    wait_for(lambda: not accepted(), timeout=30, what="the rollback to remove the field again")
    served = control_plane.get_json("crd", CRD_NAME)
    assert served["spec"]["versions"] == yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"]


def _check_uninstall_leaves_no_operator_object(release: Release) -> None:
    control_plane, namespace = release.control_plane, release.namespace
    result = control_plane.helm("uninstall", release.name, "--namespace", namespace, "--wait").stdout
    assert f"[CustomResourceDefinition] {CRD_NAME}" in result  # kept by its resource policy
    instance = f"app.kubernetes.io/instance={release.name}"
    kinds = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets"
    wait_for(
        lambda: not control_plane.get_json(kinds, "-n", namespace, "-l", instance)["items"],
        timeout=60, what="the operator's objects to be gone",
    )  # fmt: skip
    assert not control_plane.get_json("clusterroles,clusterrolebindings", "-l", instance)["items"]
    crd = control_plane.get_json("crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_install_upgrade_and_uninstall_on_the_local_api_server(
    control_plane: ControlPlane, pod_runner: PodRunnerHandle, release: Release, orders: Orders, tmp_path: Path
) -> None:
    namespace = release.namespace
    # The CRD usually exists already (applied by other tests or an earlier release): take it over.
    release.install(CHART, "install", "--take-ownership")

    # The chart's operator runs a Pipeline: a row written to PostgreSQL arrives in Kafka.
    control_plane.kubectl(
        "create", "secret", "generic", "pg-cdc", f"--from-literal=password={PG_CDC_PASSWORD}", "-n", namespace
    )
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=json.dumps(orders.pipeline()))
    _wait_ready(control_plane, namespace, "orders", lambda: _operator_log(pod_runner, release))
    with psycopg.connect(orders.database.admin_dsn, autocommit=True) as admin:
        admin.execute("INSERT INTO orders VALUES (1, 'through the chart')")
    [event] = values(consume(orders.kafka, [orders.topic], 1, timeout=60))
    assert event["after"] == {"id": 1, "note": "through the chart"}

    _check_the_worker_reads_no_secret(control_plane, namespace)
    _check_roles(release)
    _check_crd_upgrade_and_rollback(release, tmp_path)

    control_plane.kubectl("delete", PIPELINES, "orders", "-n", namespace, "--wait=true")
    wait_for(
        lambda: not control_plane.get_json("pods", "-n", namespace, "-l", "deltaforge.io/pipeline=orders")["items"],
        timeout=60, what="the worker to stop",
    )  # fmt: skip
    _check_uninstall_leaves_no_operator_object(release)
    # Every permission the operator used, it had: the API server names the refused user.
    refused = f'User "system:serviceaccount:{namespace}:{release.name}-deltaforge-operator" cannot'
    assert refused not in _operator_log(pod_runner, release)
