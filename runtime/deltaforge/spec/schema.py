"""The JSON schema of `spec`, self-contained, as the base of the CRD's openAPIV3Schema.

Kubernetes wants one inlined tree (no `$ref`) with a description on every field for
`kubectl explain`, and OpenAPI 3.0's `nullable` rather than a `null` type, so the generated
schema is reshaped here once instead of by every consumer.
"""

from __future__ import annotations

from typing import Any

from deltaforge.spec.pipeline import PipelineSpec

_DEFS_PREFIX = "#/$defs/"


def spec_json_schema() -> dict[str, Any]:
    """The schema of a Pipeline's `spec` by alias (camelCase), with every `$ref` inlined."""
    generated = PipelineSpec.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = generated.pop("$defs", {})
    result: dict[str, Any] = _reshape(generated, definitions, ())
    return result


def _reshape(node: Any, definitions: dict[str, Any], expanding: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_reshape(item, definitions, expanding) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix(_DEFS_PREFIX)
        if name in expanding:
            raise ValueError(f"{name} is recursive; a CRD schema cannot express it")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        merged = {**_reshape(definitions[name], definitions, (*expanding, name)), **siblings}
        return _reshape(merged, definitions, expanding)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "properties":
            result[key] = {name: _reshape(prop, definitions, expanding) for name, prop in value.items()}
        else:
            result[key] = _reshape(value, definitions, expanding)
    return _nullable(result)


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` becomes X with `nullable: true`, keeping the outer keys."""
    choices = node.get("anyOf")
    if not isinstance(choices, list) or {"type": "null"} not in choices:
        return node
    others = [choice for choice in choices if choice != {"type": "null"}]
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    inner = others[0] if len(others) == 1 else {"anyOf": others}
    return {**inner, **rest, "nullable": True}
