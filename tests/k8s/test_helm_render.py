"""The Helm chart (helm/deltaforge) without installing it: lint, `helm template` with the
defaults and with every option, and the values schema refusing bad values."""

from __future__ import annotations

import re

import pytest
import yaml

from deltaforge_operator.crd import CRD_NAME
from deltaforge_operator.render import DEFAULT_IMAGE
from tests.fixtures.control_plane import ControlPlane
from tests.support.helm_chart import CHART, CRD_FILE, LOCAL_VALUES, PART_OF, REPO, Manifest


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


def test_worker_pod_ip_is_left_for_the_workers_pods(control_plane: ControlPlane) -> None:
    """Kubernetes expands $(VAR) in the operator's own args: the chart escapes it, so the operator
    renders "$(POD_IP)" into each worker, whose pod expands it to the worker's own address."""
    rendered = _render(control_plane, "--set", "worker.httpHost=$(POD_IP)")
    [container] = rendered["Deployment", "df-system/df-deltaforge-operator"]["spec"]["template"]["spec"][
        "containers"
    ]
    assert "--worker-http-host=$$(POD_IP)" in container["args"]


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
