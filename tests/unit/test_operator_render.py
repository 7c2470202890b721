"""render.py: a Pipeline becomes its worker's objects, without a credential in any ConfigMap."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge.spec import load_manifest, parse_pipeline
from deltaforge_operator.render import (
    CONFIG_HASH,
    RESTARTED_AT,
    RenderError,
    WorkerSettings,
    child_name,
    config_hash,
    released,
    render,
    secret_references,
)

PASSWORD = "hunter2-planted"


def _body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {
            "name": "orders",
            "namespace": "shop",
            "uid": "u-1",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": f'{{"password": "{PASSWORD}"}}'},
        },
        "spec": {
            "state": "running",
            "source": {
                "postgres": {
                    "host": "pg", "database": "shop", "user": "cdc",
                    "password": {"secretKeyRef": {"name": "pg-cdc", "key": "password"}},
                    "tables": ["public.orders"],
                }
            },
            "sinks": [
                {"name": "events", "kafka": {"bootstrapServers": "kafka:9092", "topic": "t"}},
                {"name": "cache", "required": False, "redis": {"url": f"redis://:{PASSWORD}@redis:6379"}},
            ],
            **spec,
        },
    }  # fmt: skip


SECRETS = {"pg-cdc": {"password": b"s3cret"}}


def _render(body: dict[str, Any], **overrides: Any) -> dict[str, dict[str, Any]]:
    arguments: dict[str, Any] = {"uid": "u-1", "settings": WorkerSettings(image="img:1"), "secrets": SECRETS,
                                 "restarted_at": None} | overrides  # fmt: skip
    rendered = render(parse_pipeline(body), **arguments)
    return {f"{obj['kind']}/{obj['metadata']['name']}": obj for obj in rendered.objects}


def test_every_child_is_owned_and_labelled() -> None:
    objects = _render(_body())
    assert set(objects) == {
        "ConfigMap/deltaforge-orders-config", "Secret/deltaforge-orders-credentials",
        "ConfigMap/orders-checkpoint", "ServiceAccount/deltaforge-orders", "Role/deltaforge-orders",
        "RoleBinding/deltaforge-orders", "Service/deltaforge-orders", "Deployment/deltaforge-orders",
    }  # fmt: skip
    for key, obj in objects.items():
        assert obj["metadata"]["namespace"] == "shop"
        if key == "ConfigMap/orders-checkpoint":  # follows the slot: Retain keeps it
            assert "ownerReferences" not in obj["metadata"]
            continue
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "deltaforge.io/v1alpha1", "kind": "Pipeline", "name": "orders",
                         "uid": "u-1", "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "deltaforge-operator"


def test_checkpoint_is_owned_when_the_slot_is_deleted_with_the_pipeline() -> None:
    body = _body()
    body["spec"]["source"]["postgres"]["slot"] = {"reclaimPolicy": "Delete"}
    assert _render(body)["ConfigMap/orders-checkpoint"]["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_config_map_holds_references_and_literals_move_to_a_secret() -> None:
    objects = _render(_body())
    config = objects["ConfigMap/deltaforge-orders-config"]["data"]["pipeline.yaml"]
    assert PASSWORD not in str(objects["ConfigMap/deltaforge-orders-config"])
    manifest = load_manifest(config)  # the worker can load what it is given
    assert manifest.metadata.annotations == {}
    postgres = yaml.safe_load(config)["spec"]["source"]["postgres"]
    assert postgres["password"] == {"secretKeyRef": {"name": "pg-cdc", "key": "password"}}
    assert postgres["user"] == {
        "secretKeyRef": {"name": "deltaforge-orders-credentials", "key": "source.postgres.user"}
    }
    assert "state" not in yaml.safe_load(config)["spec"]
    assert yaml.safe_load(config)["spec"]["checkpoint"] == {"kubernetes": {"configMap": "orders-checkpoint"}}
    data = objects["Secret/deltaforge-orders-credentials"]["data"]
    decoded = {key: base64.b64decode(value).decode() for key, value in data.items()}
    assert decoded == {"source.postgres.user": "cdc", "sinks.1.redis.url": f"redis://:{PASSWORD}@redis:6379"}


def test_deployment_runs_the_worker_safely_with_its_secrets_mounted() -> None:
    deployment = _render(_body())["Deployment/deltaforge-orders"]
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["deltaforge"]
    assert container["args"][:2] == ["run", "/etc/deltaforge/config/pipeline.yaml"]
    assert container["image"] == "img:1"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    pg_volume = volumes[mounts["/etc/deltaforge/secrets/pg-cdc"]]["secret"]
    assert pg_volume["items"] == [{"key": "password", "path": "password"}]
    assert mounts["/etc/deltaforge/secrets/deltaforge-orders-credentials"]


@pytest.mark.parametrize(
    ("settings", "bound"),
    [
        # The default: also the pod's loopback, where `kubectl port-forward` connects.
        (WorkerSettings(image="img:1"), "--http-host=0.0.0.0"),
        # The local pod runner's: Kubernetes expands $(POD_IP) from the variable every worker gets.
        (WorkerSettings(image="img:1", http_host="$(POD_IP)"), "--http-host=$(POD_IP)"),
    ],
)
def test_worker_binds_the_configured_http_host(settings: WorkerSettings, bound: str) -> None:
    [container] = _render(_body(), settings=settings)["Deployment/deltaforge-orders"]["spec"]["template"][
        "spec"
    ]["containers"]
    assert [arg for arg in container["args"] if arg.startswith("--http-")] == [bound, "--http-port=9000"]
    assert container["env"] == [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9000, "protocol": "TCP"}]


def test_role_allows_only_the_checkpoint_and_the_own_status() -> None:
    rules = _render(_body())["Role/deltaforge-orders"]["rules"]
    assert [(rule["resources"], rule["resourceNames"], rule["verbs"]) for rule in rules] == [
        (["configmaps"], ["orders-checkpoint"], ["get", "patch", "update"]),
        (["pipelines/status"], ["orders"], ["get", "patch"]),
    ]


@pytest.mark.parametrize("state", ["paused", "stopped"])
def test_paused_and_stopped_scale_to_zero_without_changing_the_template(state: str) -> None:
    running = _render(_body())["Deployment/deltaforge-orders"]
    scaled = _render(_body(state=state))["Deployment/deltaforge-orders"]
    assert scaled["spec"]["replicas"] == 0
    assert scaled["spec"]["template"] == running["spec"]["template"]
    assert scaled["metadata"]["annotations"] == {"deltaforge.io/state": state}


def test_the_metrics_service_is_headless() -> None:
    spec = _render(_body())["Service/deltaforge-orders"]["spec"]
    assert (spec["clusterIP"], spec["ports"][0]["port"]) == ("None", 9000)


def test_stopped_releases_every_child_but_the_checkpoint_deployment_last() -> None:
    kept = {"ConfigMap/orders-checkpoint"}
    assert {f"{kind}/{name}" for kind, name in released("orders")} == set(_render(_body())) - kept
    assert released("orders")[-1] == ("Deployment", "deltaforge-orders")


def test_rotated_secret_or_restart_changes_the_template() -> None:
    def template(**overrides: Any) -> dict[str, Any]:
        result: dict[str, Any] = _render(_body(), **overrides)["Deployment/deltaforge-orders"]["spec"][
            "template"
        ]
        return result

    base = template()["metadata"]["annotations"]
    rotated = template(secrets={"pg-cdc": {"password": b"other"}})["metadata"]["annotations"]
    assert base[CONFIG_HASH] != rotated[CONFIG_HASH]
    assert template(restarted_at="2026-01-01T00:00:00Z")["metadata"]["annotations"][RESTARTED_AT]
    assert RESTARTED_AT not in base


def test_hash_counts_missing_secrets_and_ignores_order() -> None:
    assert config_hash("c", {}, {"a": None}) != config_hash("c", {}, {"a": {}})
    assert config_hash("c", {"x": "1", "y": "2"}, {}) == config_hash("c", {"y": "2", "x": "1"}, {})


def test_cluster_only_problems_are_render_errors() -> None:
    with pytest.raises(RenderError, match=r"spec.checkpoint.file"):
        _render(_body(checkpoint={"file": {"path": "x.json"}}))
    body = _body()
    body["spec"]["source"]["postgres"]["password"] = "${PG_PASSWORD}"
    with pytest.raises(RenderError, match=r"spec.source.postgres.password: \$\{NAME\} references"):
        _render(body)


def test_secret_references_and_long_names() -> None:
    assert secret_references(parse_pipeline(_body())) == {"pg-cdc": ["password"]}
    long = child_name("p" * 63, "credentials")
    assert len(long) == 63
    assert long != child_name("p" * 62 + "q", "credentials")
