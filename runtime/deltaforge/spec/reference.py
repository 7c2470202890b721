"""The Pipeline field reference (docs/pipeline-reference.md), generated from the spec model.

Generated rather than written so the documentation of every option cannot drift from the model:
a test compares the committed file with `render_reference()`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from deltaforge.spec.schema import spec_json_schema

HEADER = """\
# Pipeline reference

Every field of a `Pipeline`'s `spec`, generated from the spec model (`deltaforge.spec`) by
`python -m deltaforge.spec.reference > docs/pipeline-reference.md`. A field marked *required*
must be set; `a | b` lists the accepted values. Credentials (user, password, URLs) are a literal
string, `${ENV_NAME}` references, or `{secretKeyRef: {name, key}}`.

| field | type | default | description |
|---|---|---|---|
"""


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    if "anyOf" in node:
        return " or ".join(_type(option) for option in node["anyOf"])
    if node.get("x-kubernetes-int-or-string"):
        return "string or integer"
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    return str(kind)


def _rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    default = node.get("default")
    shown = "*required*" if required else ("" if default is None else f"`{json.dumps(default)}`")
    description = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
    rows = [f"| `{path}` | {_type(node)} | {shown} | {description} |"] if path else []
    children = node.get("properties")
    if children is None and node.get("type") == "array":
        children = node.get("items", {}).get("properties")
        path = f"{path}[]"
        node = node.get("items", {})
    for name, child in (children or {}).items():
        rows += _rows(child, f"{path}.{name}" if path else name, name in node.get("required", []))
    return rows


def render_reference() -> str:
    return HEADER + "\n".join(_rows(spec_json_schema(), "", False)) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
