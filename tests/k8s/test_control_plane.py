"""The local control plane is a real Kubernetes: schema validation, printer columns, RBAC, Helm."""

from __future__ import annotations

import json
from pathlib import Path

from kubernetes import client

from hack.stack.controlplane import KUBERNETES_VERSION
from tests.fixtures.control_plane import ControlPlane, wait_for
from tests.fixtures.data_stack import unique_name


def _widget_crd(group: str) -> dict[str, object]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1},
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                    },
                                }
                            },
                        }
                    },
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    ],
                }
            ],
        },
    }


def _widget(group: str, name: str, spec: dict[str, object]) -> str:
    return json.dumps(
        {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}
    )


def test_api_server_reports_its_real_version(
    control_plane: ControlPlane, kube_client: client.ApiClient
) -> None:
    version = client.VersionApi(kube_client).get_code()
    assert version.git_version == KUBERNETES_VERSION
    reported = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert reported["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_crd_schema_is_enforced_and_printer_columns_listed(
    control_plane: ControlPlane, namespace: str
) -> None:
    group = f"{unique_name('crd').replace('_', '')}.deltaforge.io"
    control_plane.kubectl("apply", "-f", "-", input_text=json.dumps(_widget_crd(group)))
    try:
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s")

        too_small = control_plane.kubectl(
            "apply", "-n", namespace, "-f", "-", input_text=_widget(group, "tiny", {"size": 0}), check=False
        )
        assert too_small.returncode != 0
        assert (
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
            in too_small.stderr
        )

        wrong_type = control_plane.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input_text=_widget(group, "odd", {"size": "big"}),
            check=False,
        )
        assert wrong_type.returncode != 0
        assert "spec.size in body must be of type integer" in wrong_type.stderr

        control_plane.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input_text=_widget(group, "good", {"size": 3, "color": "red"}),
        )
        listing = control_plane.kubectl("get", f"widgets.{group}", "-n", namespace).stdout.splitlines()
        assert listing[0].split() == ["NAME", "SIZE", "COLOR"]
        assert listing[1].split()[:3] == ["good", "3", "red"]
    finally:
        control_plane.kubectl("delete", f"crd/widgets.{group}", "--wait=false", check=False)


def test_rbac_is_enforced_for_service_accounts(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", namespace
    )
    control_plane.kubectl(
        "create",
        "rolebinding",
        "reader-cm",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    subject = f"--as=system:serviceaccount:{namespace}:reader"

    def can_i(verb: str, resource: str, in_namespace: str) -> str:
        result = control_plane.kubectl(
            "auth", "can-i", verb, resource, "-n", in_namespace, subject, check=False
        )
        return result.stdout.strip()

    assert can_i("get", "configmaps", namespace) == "yes"
    assert can_i("delete", "configmaps", namespace) == "no"
    assert can_i("get", "secrets", namespace) == "no"
    assert can_i("get", "configmaps", "kube-system") == "no"


def test_helm_template_and_install_see_the_real_cluster(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    # kubeVersion makes Helm refuse a cluster that reports v0.0.0 (a build without version ldflags).
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: hello\nversion: 0.1.0\nkubeVersion: '>= 1.34.0-0'\n"
    )
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-info\n"
        "data:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    rendered = control_plane.helm("template", "hello", str(chart), "--namespace", namespace).stdout
    assert "name: hello-info" in rendered

    control_plane.helm("install", "hello", str(chart), "--namespace", namespace, "--wait", "--timeout", "60s")
    stored = control_plane.kubectl(
        "get", "configmap", "hello-info", "-n", namespace, "-o", "jsonpath={.data.kubeVersion}"
    ).stdout
    assert stored == KUBERNETES_VERSION
    releases = json.loads(control_plane.helm("list", "--namespace", namespace, "-o", "json").stdout)
    assert [(release["name"], release["status"]) for release in releases] == [("hello", "deployed")]
    control_plane.helm("uninstall", "hello", "--namespace", namespace, "--wait")
    wait_for(
        lambda: (
            control_plane.kubectl("get", "configmap", "hello-info", "-n", namespace, check=False).returncode
            != 0
        ),
        timeout=30,
        what="helm uninstall to remove the ConfigMap",
    )
