"""The Helm chart (helm/deltaforge): lint, rendering and its values schema, then install, a CRD
upgrade, rollback and uninstall on the local API server, with the pod runner running the operator
pod and its worker against PostgreSQL and Kafka of the local stack.

The installed release watches only its own namespace: an operator for every namespace would also
reconcile the Pipelines of other tests (and of a running `make demo`).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from deltaforge_operator.crd import CRD_NAME
from deltaforge_operator.render import DEFAULT_IMAGE
from hack.stack.config import HOST, PG_CDC_PASSWORD, PG_CDC_USER, Settings
from tests.fixtures.control_plane import ControlPlane, PodRunnerHandle, wait_for
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.support.worker import consume, values

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "deltaforge"
LOCAL_VALUES = REPO / "hack" / "podrunner" / "chart-values.yaml"
CRD_FILE = REPO / "crds" / f"{CRD_NAME}.yaml"
PIPELINES = "pipelines.deltaforge.io"
PART_OF = "app.kubernetes.io/part-of"
Manifest = dict[str, Any]


def _render(control_plane: ControlPlane, *options: str) -> dict[tuple[str, str], Manifest]:
    """`helm template` as {(kind, namespace/name or name): object}."""
    output = control_plane.helm("template", "df", str(CHART), "--namespace", "df-system", *options).stdout
    objects = [document for document in yaml.safe_load_all(output) if document]
    rendered = {}
    for item in objects:
        metadata = item["metadata"]
        where = f"{metadata['namespace']}/{metadata['name']}" if "namespace" in metadata else metadata["name"]
        rendered[item["kind"], where] = item
    assert len(rendered) == len(objects), "two objects with one name"
    return rendered


def _rules(role: Manifest) -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def test_chart_lints_with_the_defaults_and_with_every_option(control_plane: ControlPlane) -> None:
    control_plane.helm("lint", "--strict", str(CHART))
    control_plane.helm(
        "lint", "--strict", str(CHART), "--set", "watchNamespaces={shop,billing}",
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
        "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
        "--set", "crds.keep=false", "-f", str(LOCAL_VALUES),
    )  # fmt: skip


def test_default_render(control_plane: ControlPlane) -> None:
    rendered = _render(control_plane)
    assert set(rendered) == {
        ("CustomResourceDefinition", CRD_NAME),
        ("ServiceAccount", "df-system/df-deltaforge-operator"),
        ("ClusterRole", "df-deltaforge-operator"),
        ("ClusterRoleBinding", "df-deltaforge-operator"),
        ("ClusterRole", "df-deltaforge-view"),
        ("ClusterRole", "df-deltaforge-edit"),
        ("Service", "df-system/df-deltaforge-operator"),
        ("Deployment", "df-system/df-deltaforge-operator"),
        ("PodDisruptionBudget", "df-system/df-deltaforge-operator"),
    }
    # The CRD is crds/ exactly (the template round trip loses nothing), kept on uninstall.
    crd = rendered["CustomResourceDefinition", CRD_NAME]
    assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"].pop("labels")["app.kubernetes.io/instance"] == "df"
    assert crd == yaml.safe_load(CRD_FILE.read_text())

    deployment = rendered["Deployment", "df-system/df-deltaforge-operator"]["spec"]
    assert (deployment["replicas"], deployment["strategy"]) == (1, {"type": "Recreate"})
    pod = deployment["template"]
    assert pod["metadata"]["labels"][PART_OF] == "deltaforge"  # what the local pod runner runs
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["deltaforge"]
    assert container["args"][:2] == ["operator", "--all-namespaces"]
    # One image for both, by default the operator's own default: the chart's appVersion is the package's.
    assert f"--worker-image={DEFAULT_IMAGE}" in container["args"]
    assert {"--worker-http-host=0.0.0.0", "--cleanup-timeout=300"} <= set(container["args"])
    assert container["image"] == DEFAULT_IMAGE
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The uid the image's Dockerfile creates and runs as.
    image_user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert image_user is not None
    assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, image_user.groups()))
    assert container["resources"]["limits"]["memory"]

    operator = _rules(rendered["ClusterRole", "df-deltaforge-operator"])
    assert operator["deltaforge.io", "pipelines/status"] == {"get", "patch"}
    assert operator["", "pods"] == {"get", "list", "watch"}
    assert operator["", "events"] == {"create"}
    assert ("", "namespaces") not in operator  # kopf lists namespaces only when it watches some
    view = _rules(rendered["ClusterRole", "df-deltaforge-view"])
    assert view == {("deltaforge.io", "pipelines"): {"get", "list", "watch"},
                    ("deltaforge.io", "pipelines/status"): {"get", "list", "watch"}}  # fmt: skip
    edit_labels = rendered["ClusterRole", "df-deltaforge-edit"]["metadata"]["labels"]
    assert edit_labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert rendered["PodDisruptionBudget", "df-system/df-deltaforge-operator"]["spec"]["maxUnavailable"] == 1


def test_watched_namespaces_and_optional_objects(control_plane: ControlPlane) -> None:
    rendered = _render(
        control_plane, "--set", "watchNamespaces={shop,billing}", "--set", "crds.keep=false",
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
        "--set", "networkPolicy.enabled=true", "--set", "podDisruptionBudget.enabled=false",
        "--set", "worker.image.tag=9.9.9",
    )  # fmt: skip
    [container] = rendered["Deployment", "df-system/df-deltaforge-operator"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["args"][:3] == ["operator", "--namespace=shop", "--namespace=billing"]
    assert f"--worker-image={DEFAULT_IMAGE.rsplit(':', 1)[0]}:9.9.9" in container["args"]
    # A Role per watched namespace; cluster-wide only what kopf needs to find them and the CRD.
    for watched in ("shop", "billing"):
        role = _rules(rendered["Role", f"{watched}/df-deltaforge-operator"])
        assert role["apps", "deployments"] >= {"create", "patch", "list", "watch"}
        assert rendered["RoleBinding", f"{watched}/df-deltaforge-operator"]["subjects"][0]["namespace"] == (
            "df-system"
        )
    assert _rules(rendered["ClusterRole", "df-deltaforge-operator"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
    }
    assert "annotations" not in rendered["CustomResourceDefinition", CRD_NAME]["metadata"]
    pod_monitor = rendered["PodMonitor", "df-system/df-deltaforge-workers"]["spec"]
    assert pod_monitor["namespaceSelector"] == {"matchNames": ["shop", "billing"]}
    assert rendered["ServiceMonitor", "df-system/df-deltaforge-operator"]["spec"]["endpoints"][0]["port"] == (
        "metrics"
    )
    policy = rendered["NetworkPolicy", "df-system/df-deltaforge-operator"]["spec"]
    assert [port["port"] for port in policy["egress"][0]["ports"]] == [443, 6443]
    assert ("PodDisruptionBudget", "df-system/df-deltaforge-operator") not in rendered
    without_crd = _render(control_plane, "--set", "crds.install=false")
    assert ("CustomResourceDefinition", CRD_NAME) not in without_crd


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("operator.logFormat=xml", "at '/operator/logFormat'"),
        ("watchNamespaces={Shop_1}", "at '/watchNamespaces/0'"),
        ("operator.resyncInterval=0", "at '/operator/resyncInterval'"),
        ("operator.cleanupTimeout=0", "at '/operator/cleanupTimeout'"),
        ("imag.tag=1.0", "additional properties 'imag' not allowed"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("metrics.podMonitor.interval=often", "at '/metrics/podMonitor/interval'"),
    ],
)
def test_values_schema_rejects_bad_values(control_plane: ControlPlane, option: str, complaint: str) -> None:
    result = control_plane.helm("template", "df", str(CHART), "--set", option, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert complaint in result.stderr


# --- on the local API server ------------------------------------------------------------------


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
