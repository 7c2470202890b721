"""Per-event transformations applied between the source and the sinks, in list order."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from deltaforge.spec.base import NonEmptyStr, OneOfModel, SpecModel
from deltaforge.spec.credentials import CredentialField
from deltaforge.spec.tables import TablePattern

OpCode = Literal["c", "u", "d", "r", "t"]
"""Change operations as events carry them: create, update, delete, read (snapshot), truncate."""

Columns = Annotated[list[NonEmptyStr], Field(min_length=1)]
_TABLES = (
    "Apply only to tables matching these `schema.table` patterns (`*` globs allowed). Default: every table."
)


class MaskMethod(StrEnum):
    """How a masked column's value is replaced."""

    HASH = "hash"
    REDACT = "redact"


class FilterSpec(SpecModel):
    """Keep only the events that match; every other event is dropped."""

    ops: Annotated[list[OpCode], Field(min_length=1)] | None = Field(
        default=None,
        description=(
            "Keep only these operations: c (insert), u (update), d (delete), r (snapshot read), "
            "t (truncate). Default: every operation."
        ),
    )
    tables: Annotated[list[TablePattern], Field(min_length=1)] | None = Field(
        default=None,
        description="Keep only changes to tables matching these `schema.table` patterns. Default: every table.",
    )

    @model_validator(mode="after")
    def _has_a_condition(self) -> Self:
        if self.ops is None and self.tables is None:
            raise ValueError("set ops, tables or both; a filter without a condition keeps everything")
        return self


class SelectSpec(SpecModel):
    """Keep or drop columns; set exactly one of `include` or `exclude`."""

    tables: Annotated[list[TablePattern], Field(min_length=1)] | None = Field(
        default=None, description=_TABLES
    )
    include: Columns | None = Field(default=None, description="Keep only these columns.")
    exclude: Columns | None = Field(default=None, description="Drop these columns and keep the rest.")

    @model_validator(mode="after")
    def _include_or_exclude(self) -> Self:
        if (self.include is None) == (self.exclude is None):
            raise ValueError("set exactly one of include or exclude")
        return self


class MaskSpec(SpecModel):
    """Replace sensitive column values before any sink sees them."""

    tables: Annotated[list[TablePattern], Field(min_length=1)] | None = Field(
        default=None, description=_TABLES
    )
    columns: Columns = Field(description="Columns whose values are masked.")
    method: MaskMethod = Field(
        default=MaskMethod.HASH,
        description=(
            "`hash` replaces a value with its HMAC-SHA256 hex digest, keyed with `salt` when set (equal "
            "values stay equal, so joins still work); `redact` replaces it with the string `***`. "
            "Nulls stay null. Masked columns are masked in the key too."
        ),
    )
    salt: CredentialField | None = Field(
        default=None,
        description=(
            "Secret key mixed into `hash`, so hashes cannot be reversed by hashing guesses: a string "
            "(may use `${ENV_NAME}`) or a secretKeyRef."
        ),
    )

    @model_validator(mode="after")
    def _salt_needs_hash(self) -> Self:
        if self.salt is not None and self.method is not MaskMethod.HASH:
            raise ValueError("salt applies only to method hash")
        return self


class ProcessorSpec(OneOfModel):
    """One processing step; set exactly one of `filter`, `select` or `mask`."""

    variants = ("filter", "select", "mask")

    filter: FilterSpec | None = Field(default=None, description="Drop events by operation or table.")
    select: SelectSpec | None = Field(default=None, description="Keep or drop columns.")
    mask: MaskSpec | None = Field(default=None, description="Hash or redact column values.")

    @property
    def config(self) -> FilterSpec | SelectSpec | MaskSpec:
        """The settings of whichever processor is set."""
        chosen = self.filter or self.select or self.mask
        if chosen is None:
            raise AssertionError("validation guarantees one processor kind")
        return chosen
