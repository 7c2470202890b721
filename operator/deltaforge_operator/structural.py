"""The spec's JSON schema reshaped into a Kubernetes structural schema for the CRD.

The API server accepts only a structural schema: a `type` on every node, no `$ref`, no
`additionalProperties` beside `properties`, and `anyOf`/`oneOf` only as value checks without
types. `deltaforge.spec.spec_json_schema()` already inlines every `$ref`; this module makes the
remaining changes, each a pure function of the node:

- `nullable` is dropped: the API server then prunes a `null` as if the field were absent, which
  is what `None` means in the spec model.
- `additionalProperties: false` is dropped: Kubernetes prunes unknown fields (or rejects them
  under strict field validation, as `kubectl` requests by default) instead.
- `exclusiveMinimum: 0` (JSON Schema 2020-12) becomes OpenAPI 3.0's `minimum: 0` with
  `exclusiveMinimum: true`.
- A field that is a string *or* an object (a credential) or a string *or* a list (Kafka's
  `bootstrapServers`) cannot have one `type`. It becomes an untyped node with
  `x-kubernetes-preserve-unknown-fields`, carrying the value checks of every shape at once
  (`properties`/`required` of the object, `items`/`minItems` of the list, `minLength` of the
  string): each check applies only to values of its own type, so both shapes are validated as
  before. What such a node cannot express (a number instead of a string, an unknown key next to
  `secretKeyRef`) the operator reports from the spec model, and CEL cannot see the node at all.
- `oneOf` of `required` (a `deltaforge.spec.OneOfModel`, "set exactly one of") becomes a CEL
  rule with the message `deltaforge validate` gives; the API server's own `oneOf` message names
  no field (`<nil>: Invalid value: "": "spec.source" must validate one and only one schema`).

Any other JSON Schema keyword raises `ValueError`, so a new kind of field in the spec model fails
the CRD generation instead of producing a schema the API server rejects or misreads.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# Keywords copied as they are (after their children are converted).
_PLAIN = frozenset(
    {
        "description",
        "type",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "required",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
# Keywords that check only values of one JSON type; the checks an untyped node may merge.
_TYPE_KEYWORDS = {
    "string": frozenset({"minLength", "maxLength", "pattern"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "object": frozenset({"properties", "required", "additionalProperties"}),
}


def structural_schema(node: Schema, path: str = "spec") -> Schema:
    """The structural form of one JSON schema node; `path` (e.g. `spec.sinks[]`) names it in errors."""
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        node = _merge_shapes(node, path)
    result: Schema = {}
    for key, value in node.items():
        if key in _PLAIN:
            result[key] = value
        elif key == "properties":
            result[key] = {name: structural_schema(child, f"{path}.{name}") for name, child in value.items()}
        elif key == "items":
            result[key] = structural_schema(value, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            result[key.replace("exclusiveM", "m")] = value
            result[key] = True
        elif key == "oneOf":
            result["x-kubernetes-validations"] = [one_of_rule(_one_of_keys(value, path))]
        elif key == "anyOf":
            result[key] = value  # the int-or-string form, which Kubernetes defines itself
        elif key == "nullable" or (key == "additionalProperties" and value is False):
            continue
        else:
            raise ValueError(f"{path}: the CRD generator does not know the JSON schema keyword {key!r}")
    return result


def _merge_shapes(node: Schema, path: str) -> Schema:
    """One untyped node from `anyOf` shapes of distinct types, keeping every shape's checks."""
    merged: Schema = {key: value for key, value in node.items() if key != "anyOf"}
    merged["x-kubernetes-preserve-unknown-fields"] = True
    seen: set[str] = set()
    for shape in node["anyOf"]:
        kind = shape.get("type")
        allowed = _TYPE_KEYWORDS.get(kind) if isinstance(kind, str) else None
        if allowed is None or kind in seen:
            raise ValueError(f"{path}: anyOf needs shapes of distinct types among string, array, object")
        seen.add(kind)
        unknown = set(shape) - allowed - {"type", "description"}
        if unknown:
            raise ValueError(f"{path}: cannot merge {sorted(unknown)} of the {kind} shape into one node")
        merged.update({key: value for key, value in shape.items() if key in allowed})
    return merged


def _one_of_keys(choices: list[Schema], path: str) -> list[str]:
    if not all(set(choice) == {"required"} and len(choice["required"]) == 1 for choice in choices):
        raise ValueError(f"{path}: only oneOf of single `required` keys (set exactly one of) is supported")
    return [choice["required"][0] for choice in choices]


def one_of_rule(keys: list[str]) -> Schema:
    """A CEL rule: exactly one of `keys` is set, with `deltaforge validate`'s message.

    The message leaves out the model's "found postgres and mysql", and the rule is arithmetic on
    `has()`: the API server multiplies a rule's estimated cost by how often it may run (once per
    list item), and the list functions (`filter`, `join`) that listing what was found needs push
    that estimate over the limit.
    """
    count = " + ".join(f"(has(self.{key}) ? 1 : 0)" for key in keys)
    return {"rule": f"{count} == 1", "message": f"set exactly one of {', '.join(keys)}"}
