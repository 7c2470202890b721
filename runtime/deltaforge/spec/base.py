"""The base every spec model shares, and the name rules several models reuse.

Kubernetes conventions apply everywhere: camelCase keys in manifests, snake_case attributes in
Python, unknown keys rejected (a typo must never silently fall back to a default), and one-of
choices expressed by which key is present.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class SpecModel(BaseModel):
    """Base of every spec model: frozen, so a loaded pipeline cannot drift from its manifest."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _variants_schema(schema: dict[str, Any], model: type[Any]) -> None:
    # `oneOf` of `required` is JSON Schema's "exactly one of these keys"; the CRD turns it into a
    # CEL rule, and editors that validate manifests against the JSON schema see it too.
    fields = model.model_fields
    schema["oneOf"] = [{"required": [fields[name].alias or name]} for name in model.variants]


class OneOfModel(SpecModel):
    """A model whose variants are optional fields of which exactly one must be set.

    Kubernetes expresses a union by which key is present (`{kafka: {...}}`), which keeps the
    schema structural and `kubectl explain` readable, unlike a `type:` discriminator.
    """

    model_config = ConfigDict(json_schema_extra=_variants_schema)

    variants: ClassVar[tuple[str, ...]]

    @model_validator(mode="after")
    def _exactly_one_variant(self) -> Self:
        chosen = [name for name in self.variants if getattr(self, name) is not None]
        if len(chosen) != 1:
            found = " and ".join(chosen) if chosen else "none"
            raise ValueError(f"set exactly one of {', '.join(self.variants)}; found {found}")
        return self

    @property
    def kind(self) -> str:
        """The name of the variant that is set, e.g. `kafka`."""
        return next(name for name in self.variants if getattr(self, name) is not None)


def schema_pattern(regex: str, *, max_length: int | None = None) -> Any:
    """The JSON schema `pattern` (and `maxLength`) of a string that a validator already checks.

    Only the schema changes: values are still checked by the validator with its plain-English
    message. The schema copy lets the API server reject the same values at `kubectl apply`, and
    `maxLength` bounds the cost of the CRD's CEL rules. `regex` is what the validator matches
    with `fullmatch`, in the syntax Python, JSON Schema and Go's RE2 share.
    """
    extra: dict[str, Any] = {"pattern": f"^(?:{regex})$"}
    if max_length is not None:
        extra["maxLength"] = max_length
    return Field(json_schema_extra=extra)


def _check_dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name; use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _check_dns_subdomain(value: str) -> str:
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(part) for part in value.split(".")):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes object name; use at most 253 lowercase letters, "
            "digits, '-' and '.', starting and ending with a letter or digit"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_check_dns_label), schema_pattern(_DNS_LABEL.pattern, max_length=63)]
"""A Kubernetes DNS-1123 label: pipeline, namespace and sink names."""

DnsSubdomain = Annotated[
    str,
    AfterValidator(_check_dns_subdomain),
    schema_pattern(rf"{_DNS_LABEL.pattern}(?:\.{_DNS_LABEL.pattern})*", max_length=253),
]
"""A Kubernetes object name such as a Secret or ConfigMap name."""

NonEmptyStr = Annotated[str, Field(min_length=1)]

Port = Annotated[int, Field(ge=1, le=65535)]
