"""The Pipeline CRD: generated from the spec model, committed in crds/, and structural.

Whether the API server accepts it and enforces its rules is tested on the real control plane in
tests/k8s/test_pipeline_crd.py; these tests check the generator without a server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge.spec import MAX_SINKS
from deltaforge_operator.crd import CRD_NAME, pipeline_crd, render_crd, spec_schema
from deltaforge_operator.structural import one_of_rule, structural_schema

REPO = Path(__file__).resolve().parents[2]
# crds/ for kubectl, and the Helm chart's copy, which its template ships (`make crds` writes both).
COMMITTED = [REPO / "crds" / f"{CRD_NAME}.yaml", REPO / "helm" / "deltaforge" / "files" / f"{CRD_NAME}.yaml"]


def _nodes(node: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")


@pytest.mark.parametrize("committed", COMMITTED, ids=lambda path: str(path.relative_to(REPO)))
def test_committed_crd_matches_the_spec_model(committed: Path) -> None:
    assert committed.read_text() == render_crd(), (
        f"{committed.relative_to(REPO)} is stale: regenerate it with `make crds`"
    )


def test_rendered_yaml_is_the_crd() -> None:
    assert yaml.safe_load(render_crd()) == pipeline_crd()


def test_spec_schema_is_structural_and_described() -> None:
    for path, node in _nodes(spec_schema()):
        untyped = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert node.get("type") or untyped, f"{path} has no type"
        assert node.get("description") or path.endswith("[]"), f"{path} has no description"
        assert not {"$ref", "$defs", "nullable", "additionalProperties", "oneOf", "title"} & set(node), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf outside int-or-string"


def test_a_credential_accepts_both_shapes_and_checks_the_object_one() -> None:
    password = spec_schema()["properties"]["source"]["properties"]["postgres"]["properties"]["password"]
    assert "type" not in password
    assert password["x-kubernetes-preserve-unknown-fields"] is True
    assert password["required"] == ["secretKeyRef"]
    reference = password["properties"]["secretKeyRef"]
    assert reference["required"] == ["name", "key"]
    assert reference["properties"]["name"]["maxLength"] == 253


def test_bootstrap_servers_keep_the_checks_of_the_string_and_the_list() -> None:
    kafka = spec_schema()["properties"]["sinks"]["items"]["properties"]["kafka"]
    servers = kafka["properties"]["bootstrapServers"]
    assert servers["x-kubernetes-preserve-unknown-fields"] is True
    assert (servers["minLength"], servers["minItems"], servers["items"]["type"]) == (1, 1, "string")


def test_cel_rules_sit_where_they_apply() -> None:
    schema = spec_schema()
    source = schema["properties"]["source"]
    postgres = source["properties"]["postgres"]
    assert source["x-kubernetes-validations"][0] == one_of_rule(["postgres", "mysql"])
    assert [rule.get("fieldPath") for rule in postgres["x-kubernetes-validations"]] == [
        ".database",
        ".slot.name",
    ]
    assert all("oldSelf" in rule["rule"] for rule in postgres["x-kubernetes-validations"])
    sinks = schema["properties"]["sinks"]
    assert sinks["maxItems"] == MAX_SINKS  # the bound that keeps the unique-names rule within budget
    assert "exists_one" in sinks["x-kubernetes-validations"][0]["rule"]


def test_names_columns_and_status() -> None:
    crd = pipeline_crd()
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "Pipeline",
        "pipelines",
        ["dfp"],
        ["deltaforge"],
    )
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["State", "Ready", "Source", "Sinks", "Lag", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    condition = status["conditions"]["items"]
    assert condition["required"] == ["type", "status", "reason", "message", "lastTransitionTime"]
    assert {"observedGeneration", "phase", "source", "worker"} <= set(status)


def test_exclusive_bounds_become_openapi_3_0_booleans() -> None:
    converted = structural_schema({"type": "integer", "exclusiveMinimum": 0, "description": "n"})
    assert converted == {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "description": "n"}


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"type": "string", "format": "email"}, "does not know the JSON schema keyword 'format'"),
        (
            {"anyOf": [{"type": "string"}, {"type": "string", "minLength": 2}]},
            "anyOf needs shapes of distinct types",
        ),
        ({"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "object"}]}, "cannot merge ['enum']"),
        ({"type": "object", "oneOf": [{"required": ["a", "b"]}]}, "only oneOf of single `required` keys"),
    ],
)
def test_schemas_the_crd_cannot_express_fail_the_generation(node: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^spec: ") as raised:
        structural_schema(node)
    assert message in str(raised.value)
