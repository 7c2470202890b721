"""The Pipeline CRD on the real API server: what it accepts, lists, explains and rejects.

Every invalid manifest must be refused by the API server with a message that names the field,
and must also be refused by the spec model, so the API server never rejects what
`deltaforge validate` accepts for a different reason than the model would (docs/crd.md).
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from kubernetes import client

from deltaforge.spec import SpecError, parse_pipeline
from deltaforge_operator.crd import CRD_NAME
from tests.fixtures.control_plane import REPO, ControlPlane, wait_for

# Every test here needs the CRD installed; the fixture applies the committed file once per session.
pytestmark = pytest.mark.usefixtures("pipeline_crd")

EXAMPLE = REPO / "examples" / "postgres-to-kafka.yaml"
NAME = "orders-cdc"

Manifest = dict[str, Any]
Mutation = Callable[[Manifest], object]


def _example(namespace: str) -> Manifest:
    manifest: Manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["namespace"] = namespace
    return manifest


def _mysql(namespace: str) -> Manifest:
    manifest = _example(namespace)
    manifest["spec"]["source"] = {
        "mysql": {
            "host": "127.0.0.1",
            "port": 23306,
            "user": "deltaforge",
            "password": {"secretKeyRef": {"name": "mariadb-cdc", "key": "password"}},
            "tables": ["shop.orders"],
            "serverId": 4242,
        }
    }
    return manifest


def _apply(control_plane: ControlPlane, manifest: Manifest, *flags: str) -> subprocess.CompletedProcess[str]:
    return control_plane.kubectl("apply", *flags, "-f", "-", input_text=json.dumps(manifest), check=False)


def _postgres(manifest: Manifest) -> Manifest:
    result: Manifest = manifest["spec"]["source"]["postgres"]
    return result


def _kafka(manifest: Manifest) -> Manifest:
    result: Manifest = manifest["spec"]["sinks"][0]["kafka"]
    return result


def test_crd_has_a_short_name_and_a_category_of_its_own(control_plane: ControlPlane) -> None:
    listing = control_plane.kubectl("api-resources", "--api-group=deltaforge.io", "-o", "wide").stdout
    row = listing.splitlines()[1].split()
    assert row == [
        "pipelines",
        "dfp",
        "deltaforge.io/v1alpha1",
        "true",
        "Pipeline",
        "delete,deletecollection,get,list,patch,create,update,watch",
        "deltaforge",
    ]


def test_example_is_accepted_listed_and_read_back_by_the_model(
    control_plane: ControlPlane, namespace: str
) -> None:
    manifest = _example(namespace)
    applied = _apply(control_plane, manifest)
    assert applied.returncode == 0, applied.stderr
    stored = control_plane.get_json(CRD_NAME, NAME, "-n", namespace)
    # The defaults the API server filled in are the model's own: the operator reads the same spec.
    assert stored["spec"]["commitPolicy"] == "required"
    assert parse_pipeline(stored).spec == parse_pipeline(manifest).spec

    status = {
        "observedGeneration": 1,
        "phase": "Running",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Streaming",
                "message": "source and sinks connected",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "source": {"kind": "postgres", "position": "0/16B6C50", "lagSeconds": 0.4},
        "sinksReady": "2/2",
        "sinks": [{"name": "events", "connected": True}, {"name": "cache", "connected": True}],
        "worker": {"lastHeartbeatTime": "2026-01-01T00:00:05Z", "restarts": 0},
    }
    patch = json.dumps({"status": status})
    control_plane.kubectl(
        "patch", "dfp", NAME, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    for resource in ("dfp", "deltaforge"):  # the short name and the category
        lines = control_plane.kubectl("get", resource, "-n", namespace).stdout.splitlines()
        assert lines[0].split() == ["NAME", "STATE", "READY", "SOURCE", "SINKS", "LAG", "AGE"]
        assert lines[1].split()[:6] == [NAME, "running", "True", "postgres", "2/2", "0.4"]


def test_status_is_written_only_through_its_subresource(control_plane: ControlPlane, namespace: str) -> None:
    manifest = {**_example(namespace), "status": {"phase": "Running"}}
    assert _apply(control_plane, manifest).returncode == 0
    stored = control_plane.get_json("dfp", NAME, "-n", namespace)
    assert "status" not in stored


def test_explain_describes_every_level(control_plane: ControlPlane) -> None:
    def explained() -> str | None:
        result = control_plane.kubectl("explain", "pipeline.spec.source.postgres", check=False)
        return result.stdout if "Capture from PostgreSQL" in result.stdout else None

    # The API server publishes a new CRD's OpenAPI document asynchronously.
    text = str(wait_for(explained, timeout=30, what="kubectl explain to show the Pipeline CRD"))
    assert "Database to capture changes from." in text
    assert "database\t<string> -required-" in text
    assert "Password of the replication user" in text
    slot = control_plane.kubectl("explain", "pipeline.spec.source.postgres.slot.reclaimPolicy").stdout
    assert "ENUM:\n    Retain\n    Delete\n" in slot
    assert "`Retain` keeps the slot when the Pipeline is deleted" in slot


INVALID: list[tuple[str, Mutation, str]] = [
    (
        "two sources",
        lambda m: m["spec"]["source"].update(mysql={"host": "db", "user": "u", "tables": ["shop.orders"]}),
        'spec.source: Invalid value: "object": set exactly one of postgres, mysql',
    ),
    (
        "empty source",
        lambda m: m["spec"].update(source={}),
        'spec.source: Invalid value: "object": set exactly one of postgres, mysql',
    ),
    ("missing source", lambda m: m["spec"].pop("source"), "spec.source: Required value"),
    (
        "no sinks",
        lambda m: m["spec"].update(sinks=[]),
        "spec.sinks: Invalid value: 0: spec.sinks in body should have at least 1 items",
    ),
    (
        "duplicate sink names",
        lambda m: m["spec"]["sinks"].append({"name": "events", "stdout": {}}),
        "spec.sinks: Invalid value: \"array\": sink name 'events' is used more than once; names must be unique",
    ),
    (
        "too many sinks",
        lambda m: m["spec"].update(sinks=[{"name": f"s{index}", "stdout": {}} for index in range(17)]),
        "spec.sinks: Too many: 17: must have at most 16 items",
    ),
    (
        "two kinds in one sink",
        lambda m: m["spec"]["sinks"][0].update(stdout={}),
        'spec.sinks[0]: Invalid value: "object": set exactly one of kafka, redis, stdout',
    ),
    (
        "processor of no kind",
        lambda m: m["spec"].update(processors=[{}]),
        'spec.processors[0]: Invalid value: "object": set exactly one of filter, select, mask',
    ),
    (
        "two checkpoint stores",
        lambda m: m["spec"]["checkpoint"].update(kubernetes={}),
        'spec.checkpoint: Invalid value: "object": set exactly one of file, kubernetes',
    ),
    (
        "negative batch size",
        lambda m: m["spec"]["batch"].update(maxEvents=-5),
        "spec.batch.maxEvents: Invalid value: -5: spec.batch.maxEvents in body should be greater than 0",
    ),
    (
        "wrong type",
        lambda m: _postgres(m).update(port="fast"),
        'spec.source.postgres.port: Invalid value: "string": spec.source.postgres.port in body must be of type integer',
    ),
    (
        "unknown state",
        lambda m: m["spec"].update(state="sleeping"),
        'spec.state: Unsupported value: "sleeping": supported values: "running", "paused", "stopped"',
    ),
    (
        "bad commitPolicy",
        lambda m: m["spec"].update(commitPolicy="most"),
        'spec.commitPolicy: Unsupported value: "most": supported values: "all", "required"',
    ),
    (
        "unknown reclaimPolicy",
        lambda m: _postgres(m)["slot"].update(reclaimPolicy="Keep"),
        'spec.source.postgres.slot.reclaimPolicy: Unsupported value: "Keep"',
    ),
    (
        "unknown field",
        lambda m: _kafka(m).update(topik="shop.orders"),
        'strict decoding error: unknown field "spec.sinks[0].kafka.topik"',
    ),
    (
        "table without schema",
        lambda m: _postgres(m).update(tables=["public.orders", "orders"]),
        'spec.source.postgres.tables[1]: Invalid value: "orders": spec.source.postgres.tables[1] in body should match',
    ),
    (
        "empty table pattern",
        lambda m: _postgres(m).update(tables=[""]),
        'spec.source.postgres.tables[0]: Invalid value: "": spec.source.postgres.tables[0] in body should match',
    ),
    (
        "no tables",
        lambda m: _postgres(m).update(tables=[]),
        "spec.source.postgres.tables: Invalid value: 0: spec.source.postgres.tables in body should have at least 1 items",
    ),
    (
        "bad slot name",
        lambda m: _postgres(m)["slot"].update(name="Orders-Slot"),
        'spec.source.postgres.slot.name: Invalid value: "Orders-Slot": spec.source.postgres.slot.name in body should match',
    ),
    (
        "bad sink name",
        lambda m: m["spec"]["sinks"][0].update(name="Events_1"),
        'spec.sinks[0].name: Invalid value: "Events_1": spec.sinks[0].name in body should match',
    ),
    (
        "secretKeyRef without key",
        lambda m: _postgres(m).update(password={"secretKeyRef": {"name": "pg-cdc"}}),
        "spec.source.postgres.password.secretKeyRef.key: Required value",
    ),
    (
        "empty bootstrapServers",
        lambda m: _kafka(m).update(bootstrapServers=[]),
        "spec.sinks[0].kafka.bootstrapServers: Invalid value: 0: spec.sinks[0].kafka.bootstrapServers in body should have at least 1 items",
    ),
    (
        "pipeline name not a DNS label",
        lambda m: m["metadata"].update(name="orders.cdc"),
        'metadata.name: Invalid value: "orders.cdc": metadata.name in body should match',
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_manifest_is_rejected_naming_the_field(
    control_plane: ControlPlane, namespace: str, mutate: Mutation, message: str
) -> None:
    manifest = _example(namespace)
    mutate(manifest)
    with pytest.raises(SpecError):
        parse_pipeline(manifest)
    rejected = _apply(control_plane, manifest)
    assert rejected.returncode != 0
    assert message in rejected.stderr
    assert control_plane.kubectl("get", "dfp", "-n", namespace, "-o", "name").stdout == ""


IMMUTABLE: list[tuple[str, Callable[[str], Manifest], Mutation, str]] = [
    (
        "postgres database",
        _example,
        lambda m: _postgres(m).update(database="inventory"),
        'spec.source.postgres.database: Invalid value: "object": cannot change after creation (was shop)',
    ),
    (
        "slot name",
        _example,
        lambda m: _postgres(m)["slot"].update(name="df_other"),
        'spec.source.postgres.slot.name: Invalid value: "object": cannot change after creation',
    ),
    (
        "slot name removed",
        _example,
        lambda m: _postgres(m)["slot"].pop("name"),
        'spec.source.postgres.slot.name: Invalid value: "object": cannot change after creation',
    ),
    (
        "source kind",
        _example,
        lambda m: m["spec"].update(source=_mysql("unused")["spec"]["source"]),
        'spec.source: Invalid value: "object": the source kind (postgres or mysql) cannot change after creation',
    ),
    (
        "mysql serverId",
        _mysql,
        lambda m: m["spec"]["source"]["mysql"].update(serverId=4243),
        'spec.source.mysql.serverId: Invalid value: "object": cannot change after creation',
    ),
    (
        "mysql serverId removed",
        _mysql,
        lambda m: m["spec"]["source"]["mysql"].pop("serverId"),
        'spec.source.mysql.serverId: Invalid value: "object": cannot change after creation',
    ),
]


@pytest.mark.parametrize(
    ("original", "mutate", "message"), [case[1:] for case in IMMUTABLE], ids=[case[0] for case in IMMUTABLE]
)
def test_source_identity_cannot_change_after_creation(
    control_plane: ControlPlane,
    namespace: str,
    original: Callable[[str], Manifest],
    mutate: Mutation,
    message: str,
) -> None:
    manifest = original(namespace)
    created = _apply(control_plane, manifest)
    assert created.returncode == 0, created.stderr
    changed = copy.deepcopy(manifest)
    mutate(changed)
    parse_pipeline(changed)  # valid on its own: only the change is refused
    rejected = _apply(control_plane, changed)
    assert rejected.returncode != 0
    assert message in rejected.stderr


def test_other_fields_can_change(control_plane: ControlPlane, namespace: str) -> None:
    manifest = _example(namespace)
    assert _apply(control_plane, manifest).returncode == 0
    manifest["spec"]["state"] = "paused"
    _postgres(manifest).update(host="pg-replica.shop.svc", tables=["public.orders"])
    _postgres(manifest)["slot"]["reclaimPolicy"] = "Delete"
    updated = _apply(control_plane, manifest)
    assert updated.returncode == 0, updated.stderr
    stored = control_plane.get_json("dfp", NAME, "-n", namespace)
    assert (stored["metadata"]["generation"], stored["spec"]["state"]) == (2, "paused")


def test_unknown_fields_are_refused_only_under_strict_field_validation(
    control_plane: ControlPlane, namespace: str, kube_client: client.ApiClient
) -> None:
    """kubectl asks for strict field validation by default; Helm and API clients get a warning.

    The API server then drops the field before anyone else sees it, so the operator cannot report
    it either (docs/crd.md).
    """
    manifest = _example(namespace)
    _kafka(manifest)["topik"] = "shop.orders"
    server_side = _apply(control_plane, manifest, "--server-side")
    assert server_side.returncode != 0
    assert ".spec.sinks[0].kafka.topik: field not declared in schema" in server_side.stderr

    warned = _apply(control_plane, manifest, "--validate=warn")
    assert warned.returncode == 0, warned.stderr
    assert 'Warning: unknown field "spec.sinks[0].kafka.topik"' in warned.stderr
    assert "topik" not in control_plane.get_json("dfp", NAME, "-n", namespace)["spec"]["sinks"][0]["kafka"]

    manifest["metadata"]["name"] = "from-a-client"
    custom = client.CustomObjectsApi(kube_client)
    _, code, headers = custom.create_namespaced_custom_object_with_http_info(
        "deltaforge.io", "v1alpha1", namespace, "pipelines", manifest
    )
    assert code == 201
    assert 'unknown field \\"spec.sinks[0].kafka.topik\\"' in headers["Warning"]
