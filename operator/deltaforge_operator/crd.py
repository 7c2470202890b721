"""The `pipelines.deltaforge.io` CustomResourceDefinition, generated from the spec model.

The spec part of the schema comes from `deltaforge.spec.spec_json_schema()` (made structural by
`deltaforge_operator.structural`), so the API server, `deltaforge validate` and the operator
accept the same fields. Added here is what only the cluster has: the CEL rules that compare an
update with the stored object (a source's identity must not change), the status the operator
writes, printer columns, and a short name and category of our own (Tekton and Numaflow also have
a kind named Pipeline).

`python -m deltaforge_operator.crd > crds/pipelines.deltaforge.io.yaml` (`make crds`) writes
the committed file; a unit test fails when it differs from `render_crd()`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge.spec import API_VERSION, KIND, Metadata, SourceSpec, spec_json_schema
from deltaforge_operator.crd_status import STATUS_SCHEMA
from deltaforge_operator.structural import Schema, structural_schema

GROUP, VERSION = API_VERSION.split("/")
PLURAL: Final = "pipelines"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
SHORT_NAME: Final = "dfp"
CATEGORY: Final = "deltaforge"

HEADER = (
    "# Generated from the spec model (deltaforge.spec) by `make crds`; do not edit.\n"
    "# The rules the API server enforces, and those the operator reports as InvalidSpec: docs/crd.md\n"
)

# A source's identity is where its position lives: changing it would silently restart the
# pipeline somewhere else (a new slot starts at the current WAL end; another server_id is another
# replica), so a change is refused and the user creates a new Pipeline instead. An unset field
# means the default derived from the Pipeline's namespace and name, which cannot change.
_NEW_PIPELINE = "create a new Pipeline to capture from another one"


def _unchanged(value: Callable[[str], str]) -> str:
    """A transition rule: `value(object)` is the same for the update and the stored object."""
    return f"{value('self')} == {value('oldSelf')}"


_TRANSITION_RULES: Final[dict[tuple[str, ...], list[Schema]]] = {
    ("source",): [
        {
            "rule": _unchanged(
                lambda o: "[" + ", ".join(f"has({o}.{kind})" for kind in SourceSpec.variants) + "]"
            ),
            "message": (
                f"the source kind ({' or '.join(SourceSpec.variants)}) cannot change after creation; "
                f"{_NEW_PIPELINE}"
            ),
        }
    ],
    ("source", "postgres"): [
        {
            "rule": _unchanged(lambda o: f"{o}.database"),
            "fieldPath": ".database",
            "messageExpression": (
                "'cannot change after creation (was ' + oldSelf.database + '): the replication slot "
                f"and position belong to that database; {_NEW_PIPELINE}'"
            ),
        },
        {
            "rule": _unchanged(lambda o: f"(has({o}.slot) && has({o}.slot.name) ? {o}.slot.name : '')"),
            "fieldPath": ".slot.name",
            "message": (
                "cannot change after creation (unset means df_<namespace>__<name>): the position lives "
                f"in the slot, and a new slot starts at the current end of the WAL; {_NEW_PIPELINE}"
            ),
        },
    ],
    ("source", "mysql"): [
        {
            "rule": _unchanged(lambda o: f"(has({o}.serverId) ? {o}.serverId : 0)"),
            "fieldPath": ".serverId",
            "message": (
                "cannot change after creation (unset means an id derived from the namespace and name): "
                f"it is the pipeline's replica identity on the server; {_NEW_PIPELINE}"
            ),
        }
    ],
}

# Names first, then the filter: the API server's cost estimate of filtering whole sink objects is
# over budget even for 16 sinks, filtering their names is not.
_DUPLICATE_SINK = "self.map(s, s.name).filter(n, !self.exists_one(t, t.name == n))[0]"
_UNIQUE_SINK_NAMES: Final[Schema] = {
    "rule": "self.all(s, self.exists_one(t, t.name == s.name))",
    "messageExpression": f'"sink name \'" + {_DUPLICATE_SINK} + "\' is used more than once; names must be unique"',
}

_PRINTER_COLUMNS: Final[list[Schema]] = [
    {"name": "State", "type": "string", "jsonPath": ".spec.state", "description": "Desired state."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the worker streams with its source and required sinks connected.",
    },
    {
        "name": "Source",
        "type": "string",
        "jsonPath": ".status.source.kind",
        "description": "The kind of source database.",
    },
    {
        "name": "Sinks",
        "type": "string",
        "jsonPath": ".status.sinksReady",
        "description": "Sinks connected out of configured.",
    },
    {
        "name": "Lag",
        "type": "number",
        "jsonPath": ".status.source.lagSeconds",
        "description": "Seconds between the newest change written and its commit in the source.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def spec_schema() -> Schema:
    """The structural schema of `spec`, plus the CEL rules its JSON schema has no keyword for."""
    schema = structural_schema(spec_json_schema())
    for path, rules in {("sinks",): [_UNIQUE_SINK_NAMES], **_TRANSITION_RULES}.items():
        _property(schema, path).setdefault("x-kubernetes-validations", []).extend(rules)
    return schema


def _property(schema: Schema, path: tuple[str, ...]) -> Schema:
    node = schema
    for name in path:
        node = node["properties"][name]
    return node


def _metadata_schema() -> Schema:
    # The API server allows a CRD to restrict only metadata.name; a Pipeline's name becomes part of
    # label values and database object names, so it must be a DNS-1123 label like the model says.
    name = Metadata.model_json_schema(by_alias=True)["properties"]["name"]
    return {
        "type": "object",
        "properties": {"name": {key: name[key] for key in ("type", "maxLength", "pattern")}},
    }


def pipeline_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of `Pipeline`, as the API server takes it."""
    root: Schema = {
        "type": "object",
        "description": (
            "A DeltaForge change data capture pipeline: one source database, optional processors and "
            "one or more sinks. The operator runs it as a worker Deployment. "
            "Reference: docs/pipeline-reference.md"
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"Versioned schema of this object; `{API_VERSION}`.",
            },
            "kind": {"type": "string", "description": f"Kind of this object; `{KIND}`."},
            "metadata": _metadata_schema(),
            "spec": spec_schema(),
            "status": STATUS_SCHEMA,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


_NO_WRAP = 1 << 16


def render_crd() -> str:
    """The CRD as the YAML committed in `crds/`."""
    # One line per value, so a CEL rule reads as written and a diff shows whole rules.
    body: str = yaml.safe_dump(pipeline_crd(), sort_keys=False, width=_NO_WRAP, allow_unicode=True)
    return HEADER + body


if __name__ == "__main__":
    sys.stdout.write(render_crd())
