"""Credentials: a literal string (with `${ENV}` references) or a Kubernetes `secretKeyRef`.

A credential is resolved only when a connection is opened, so a manifest, a rendered ConfigMap
or a log line never holds more than the reference. Literal values are kept in a `SecretStr` and
masked in every repr, dump and error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    GetJsonSchemaHandler,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from deltaforge.spec.base import DnsSubdomain, SpecModel, schema_pattern
from deltaforge.spec.errors import SpecError

SECRETS_DIR_ENV = "DELTAFORGE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/etc/deltaforge/secrets"
REVEAL_CREDENTIALS = "reveal_credentials"
"""Serialization context key: `model_dump(context={REVEAL_CREDENTIALS: True})` keeps literals."""

_MASK = "**********"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


class CredentialError(SpecError):
    """A credential could not be resolved: a missing environment variable or Secret file."""


def _check_secret_key(value: str) -> str:
    if len(value) > 253 or not _SECRET_KEY.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid Secret key; use letters, digits, '-', '_' and '.'")
    return value


class SecretKeyRef(SpecModel):
    """A key of a Kubernetes Secret in the pipeline's namespace."""

    name: DnsSubdomain = Field(description="Name of the Secret, in the same namespace as the Pipeline.")
    key: Annotated[
        str, AfterValidator(_check_secret_key), schema_pattern(_SECRET_KEY.pattern, max_length=253)
    ] = Field(description="Key inside the Secret whose value is the credential, e.g. `password`.")


class Credential(SpecModel):
    """A password, user name or URL: a literal string or a reference to a Kubernetes Secret."""

    secret_key_ref: SecretKeyRef | None = Field(
        default=None, description="Read the value from this key of a Kubernetes Secret."
    )
    _literal: SecretStr | None = PrivateAttr(default=None)

    @classmethod
    def from_literal(cls, value: str) -> Self:
        """A literal credential; `${NAME}` references are expanded from the environment later."""
        _check_env_references(value)
        credential = cls.model_construct()
        credential._literal = SecretStr(value)
        return credential

    @model_validator(mode="after")
    def _require_reference(self) -> Self:
        if self._literal is None and self.secret_key_ref is None:
            raise ValueError("set secretKeyRef: {name, key}, or write the value as a string")
        return self

    @property
    def literal(self) -> SecretStr | None:
        """The literal text (before `${NAME}` expansion), or None for a `secretKeyRef`."""
        return self._literal

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        if self._literal is not None:
            yield "literal", self._literal
        else:
            yield "secret_key_ref", self.secret_key_ref

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        if self._literal is None:
            return handler(self)
        if info.context and info.context.get(REVEAL_CREDENTIALS):
            return self._literal.get_secret_value()
        return _MASK if info.mode == "json" else self._literal

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        reference = handler(schema)
        # In the object form secretKeyRef is required; None only marks the literal form.
        definition = handler.resolve_ref_schema(reference)
        field = definition["properties"]["secretKeyRef"]
        options = field.pop("anyOf", None)
        if options is not None:
            field.pop("default", None)
            field.update(next(option for option in options if option != {"type": "null"}))
        definition["required"] = ["secretKeyRef"]
        return {
            "anyOf": [
                {
                    "type": "string",
                    "description": "The value itself; `${NAME}` expands an environment variable.",
                },
                reference,
            ]
        }


def _check_env_references(value: str) -> None:
    if "${" in _ENV_REF.sub("", value):
        raise ValueError(
            "malformed ${...} reference; write ${NAME} with letters, digits and '_' "
            "(store a value that contains '${' in a Secret)"
        )


def _validate_credential(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, str):
        return Credential.from_literal(value)
    if isinstance(value, SecretStr):
        return Credential.from_literal(value.get_secret_value())
    if isinstance(value, dict | Credential):
        return handler(value)
    raise PydanticCustomError(
        "credential_type",
        "must be a string (quote it if it looks like a number) or {secretKeyRef: {name, key}}",
    )


CredentialField = Annotated[Credential, WrapValidator(_validate_credential)]
"""The annotation for a credential field: accepts a string or `{secretKeyRef: {name, key}}`."""


def resolve(
    credential: Credential,
    environ: Mapping[str, str] | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
    *,
    field: str = "credential",
) -> str:
    """The credential's value: `${NAME}` expanded from `environ`, or the Secret file's content.

    Secrets are read from `<secrets_dir>/<name>/<key>`, where the operator mounts them;
    `secrets_dir` defaults to $DELTAFORGE_SECRETS_DIR, then /etc/deltaforge/secrets. `field` is
    the manifest path named in errors, e.g. `spec.source.postgres.password`.
    """
    env = os.environ if environ is None else environ
    if credential.literal is not None:
        return _expand(credential.literal.get_secret_value(), env, field)
    reference = credential.secret_key_ref
    if reference is None:
        raise CredentialError([(field, "the credential has neither a value nor a secretKeyRef")])
    base = Path(secrets_dir if secrets_dir is not None else env.get(SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR))
    path = base / reference.name / reference.key
    where = f"key {reference.key!r} of Secret {reference.name!r}"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"{where} not found: no file {path} (is the Secret mounted there?)"
    except UnicodeDecodeError:
        message = f"{where} at {path} is not UTF-8 text"
    except OSError as exc:
        message = f"cannot read {where} at {path}: {exc.strerror}"
    raise CredentialError([(field, message)])


def _expand(text: str, environ: Mapping[str, str], field: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        try:
            return environ[name]
        except KeyError:
            raise CredentialError([(field, f"environment variable {name} is not set")]) from None

    return _ENV_REF.sub(substitute, text)


def iter_credentials(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Credential]]:
    """Every credential in a model with its manifest path, e.g. to find the Secrets to mount."""
    for name, info in type(model).model_fields.items():
        path = f"{prefix}.{info.alias or name}" if prefix else info.alias or name
        yield from _credentials_in(getattr(model, name), path)


def _credentials_in(value: object, path: str) -> Iterator[tuple[str, Credential]]:
    if isinstance(value, Credential):
        yield path, value
    elif isinstance(value, BaseModel):
        yield from iter_credentials(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _credentials_in(item, f"{path}[{index}]")
