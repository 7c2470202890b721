"""The Pipeline resource: metadata, the spec and the defaults derived from the two together."""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from deltaforge.spec.base import DnsLabel, DnsSubdomain, NonEmptyStr, OneOfModel, SpecModel, schema_pattern
from deltaforge.spec.credentials import REVEAL_CREDENTIALS
from deltaforge.spec.processors import ProcessorSpec
from deltaforge.spec.sinks import SinkSpec
from deltaforge.spec.sources import SourceSpec
from deltaforge.spec.units import PositiveDuration, PositiveQuantity

API_VERSION: Final = "deltaforge.io/v1alpha1"
KIND: Final = "Pipeline"
MAX_SINKS: Final = 16

# Set by the API server on every object; the operator may hand them over with the manifest.
_SERVER_METADATA = frozenset(
    {
        "creationTimestamp",
        "deletionGracePeriodSeconds",
        "deletionTimestamp",
        "finalizers",
        "generateName",
        "generation",
        "managedFields",
        "ownerReferences",
        "resourceVersion",
        "selfLink",
        "uid",
    }
)
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_NOT_IN_DB_NAMES = re.compile(r"[^a-z0-9_]")


def _check_tenant(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid tenant; use at most 63 letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit (it becomes a label value)"
        )
    return value


def default_database_object_name(namespace: str, name: str) -> str:
    """The default slot and publication name: `df_<namespace>__<name>`, fit for PostgreSQL.

    The double underscore keeps `shop-eu/orders` and `shop/eu-orders` apart once '-' becomes
    '_'; a name too long for PostgreSQL's 63 characters is cut and given a hash suffix, so two
    long names that share a prefix still differ.
    """
    raw = f"df_{namespace}__{name}"
    sanitized = _NOT_IN_DB_NAMES.sub("_", raw.lower())
    if len(sanitized) <= 63:
        return sanitized
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{sanitized[:54]}_{digest}"


class State(StrEnum):
    """Desired state of the pipeline."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class CommitPolicy(StrEnum):
    """Which sinks must have written a change before the source position advances past it."""

    ALL = "all"
    REQUIRED = "required"


class Metadata(SpecModel):
    """Kubernetes object metadata; fields the API server sets are accepted and ignored."""

    name: DnsLabel = Field(description="Name of the Pipeline (a DNS-1123 label, at most 63 characters).")
    namespace: DnsLabel = Field(default="default", description="Namespace of the Pipeline.")
    labels: dict[str, str] = Field(default_factory=dict, description="Kubernetes labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Kubernetes annotations.")

    @model_validator(mode="before")
    @classmethod
    def _drop_server_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in _SERVER_METADATA}
        return data


class BatchSpec(SpecModel):
    """How many changes are grouped before they are written to the sinks."""

    max_events: Annotated[int, Field(gt=0)] = Field(
        default=2000, description="Largest number of events in one batch."
    )
    max_bytes: PositiveQuantity = Field(
        default="4Mi", validate_default=True, description="Largest batch size in bytes, e.g. `4Mi`."
    )
    max_delay: PositiveDuration = Field(
        default="50ms",
        validate_default=True,
        description="Longest time a change waits for its batch to fill before it is written, e.g. `50ms`.",
    )


class FileCheckpointSpec(SpecModel):
    """Keep the source position in a local file (standalone runs, or a persistent volume)."""

    path: NonEmptyStr = Field(description="Path of the checkpoint file; written atomically.")


class KubernetesCheckpointSpec(SpecModel):
    """Keep the source position in a ConfigMap next to the Pipeline."""

    config_map: DnsSubdomain | None = Field(
        default=None, description="Name of the ConfigMap. Default: `<pipeline name>-checkpoint`."
    )


class CheckpointSpec(OneOfModel):
    """Where the acknowledged source position is stored; set exactly one of `file` or `kubernetes`."""

    variants = ("file", "kubernetes")

    file: FileCheckpointSpec | None = Field(default=None, description="Store the position in a file.")
    kubernetes: KubernetesCheckpointSpec | None = Field(
        default=None, description="Store the position in a ConfigMap in the Pipeline's namespace."
    )


class PipelineSpec(SpecModel):
    """Desired state of a DeltaForge Pipeline: one source, optional processors, one or more sinks."""

    tenant: (
        Annotated[str, AfterValidator(_check_tenant), schema_pattern(_LABEL_VALUE.pattern, max_length=63)]
        | None
    ) = Field(
        default=None,
        description="Tenant the pipeline belongs to, used as a label on metrics and logs. Default: the namespace.",
    )
    state: State = Field(
        default=State.RUNNING,
        description=(
            "`running` streams changes; `paused` and `stopped` stop streaming and keep the position "
            "(in a cluster the worker scales to zero; a standalone `deltaforge run` exits at once)."
        ),
    )
    source: SourceSpec = Field(description="The database to capture changes from.")
    processors: list[ProcessorSpec] = Field(
        default_factory=list, description="Processing steps applied to every event, in order."
    )
    # The bound keeps the cost of the CRD's CEL rule for unique names (quadratic) within the API
    # server's budget; in the model too, so `deltaforge validate` accepts what a cluster accepts.
    sinks: Annotated[list[SinkSpec], Field(min_length=1, max_length=MAX_SINKS)] = Field(
        description=f"Destinations for the change events; 1 to {MAX_SINKS}, with unique names."
    )
    batch: BatchSpec = Field(
        default_factory=BatchSpec, description="Limits that close a batch of changes for the sinks."
    )
    commit_policy: CommitPolicy = Field(
        default=CommitPolicy.REQUIRED,
        description=(
            "`required`: the source position advances once every sink with `required: true` has "
            "written a change; `all`: once every sink has."
        ),
    )
    checkpoint: CheckpointSpec | None = Field(
        default=None,
        description=(
            "Where the acknowledged source position is stored. Default: in a pod, the ConfigMap "
            "`<pipeline name>-checkpoint`; elsewhere, the file `.deltaforge/<namespace>.<name>.json`."
        ),
    )

    @field_validator("sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: list[SinkSpec]) -> list[SinkSpec]:
        first_index: dict[str, int] = {}
        for index, sink in enumerate(sinks):
            if sink.name in first_index:
                raise ValueError(
                    f"sink name {sink.name!r} is used by sinks[{first_index[sink.name]}] and "
                    f"sinks[{index}]; names must be unique"
                )
            first_index[sink.name] = index
        return sinks

    @model_validator(mode="after")
    def _something_gates_the_position(self) -> Self:
        if self.commit_policy is CommitPolicy.REQUIRED and not any(sink.required for sink in self.sinks):
            raise ValueError(
                "with commitPolicy 'required' at least one sink needs required: true, otherwise the "
                "position advances before any sink has written the change; or use commitPolicy 'all'"
            )
        return self

    @model_validator(mode="after")
    def _idempotent_redis_needs_lsns(self) -> Self:
        if self.source.mysql is None:
            return self
        for index, sink in enumerate(self.sinks):
            if sink.redis is not None and sink.redis.idempotent:
                raise ValueError(
                    f"sinks[{index}].redis.idempotent needs a postgres source: entry ids come from "
                    "commit LSNs (not built for MySQL yet); remove it"
                )
        return self

    @model_validator(mode="after")
    def _exactly_once_owns_the_position(self) -> Self:
        """In exactly-once mode the Kafka transaction is the commit point: nothing else may hold
        the position back, or a crash between the two would lose that sink's changes."""
        chosen = [index for index, sink in enumerate(self.sinks) if sink.kafka and sink.kafka.exactly_once]
        if not chosen:
            return self
        first = chosen[0]
        if len(chosen) > 1:
            raise ValueError(
                f"sinks[{first}] and sinks[{chosen[1]}] both set kafka.exactlyOnce; one exactly-once sink "
                "per Pipeline holds the position: use one Pipeline per exactly-once destination"
            )
        if not self.sinks[first].required:
            raise ValueError(f"sinks[{first}] sets kafka.exactlyOnce and must be required: true")
        for index, sink in enumerate(self.sinks):
            if index != first and sink.required:
                raise ValueError(
                    f"sinks[{index}] ({sink.name}) must be required: false, because sinks[{first}] sets "
                    "kafka.exactlyOnce and its Kafka transaction is the commit point"
                )
        if self.commit_policy is CommitPolicy.ALL:
            raise ValueError(
                f"commitPolicy 'all' cannot be used with sinks[{first}].kafka.exactlyOnce: the Kafka "
                "transaction is the commit point; use commitPolicy 'required'"
            )
        if self.checkpoint is not None:
            raise ValueError(
                f"remove spec.checkpoint: with sinks[{first}].kafka.exactlyOnce the position is stored "
                "in Kafka, in the same transaction as the changes"
            )
        return self

    def with_defaults(self, namespace: str, name: str) -> PipelineSpec:
        """This spec with every default that depends on the Pipeline's namespace and name filled in."""
        updates: dict[str, Any] = {}
        if self.tenant is None:
            updates["tenant"] = namespace
        postgres = self.source.postgres
        if postgres is not None and (postgres.slot.name is None or postgres.publication.name is None):
            default = default_database_object_name(namespace, name)
            slot = postgres.slot.model_copy(update={"name": postgres.slot.name or default})
            publication = postgres.publication.model_copy(
                update={"name": postgres.publication.name or default}
            )
            postgres = postgres.model_copy(update={"slot": slot, "publication": publication})
            updates["source"] = self.source.model_copy(update={"postgres": postgres})
        checkpoint = self.checkpoint
        if (
            checkpoint is not None
            and checkpoint.kubernetes is not None
            and checkpoint.kubernetes.config_map is None
        ):
            kubernetes = checkpoint.kubernetes.model_copy(update={"config_map": f"{name}-checkpoint"})
            updates["checkpoint"] = checkpoint.model_copy(update={"kubernetes": kubernetes})
        return self.model_copy(update=updates) if updates else self


class Pipeline(SpecModel):
    """A DeltaForge Pipeline manifest (`apiVersion: deltaforge.io/v1alpha1`, `kind: Pipeline`)."""

    api_version: Literal["deltaforge.io/v1alpha1"] = Field(description="Must be `deltaforge.io/v1alpha1`.")
    kind: Literal["Pipeline"] = Field(description="Must be `Pipeline`.")
    metadata: Metadata = Field(description="Kubernetes object metadata; `name` is required.")
    spec: PipelineSpec = Field(description="What to capture, how to process it and where to write it.")

    @model_validator(mode="before")
    @classmethod
    def _drop_status(cls, data: Any) -> Any:
        # The operator validates objects read from the API server, which carry the status it wrote.
        if isinstance(data, dict) and "status" in data:
            return {key: value for key, value in data.items() if key != "status"}
        return data

    @field_validator("spec")
    @classmethod
    def _apply_defaults(cls, spec: PipelineSpec, info: ValidationInfo) -> PipelineSpec:
        metadata = info.data.get("metadata")
        if not isinstance(metadata, Metadata):
            return spec  # metadata is invalid and already reported
        return spec.with_defaults(metadata.namespace, metadata.name)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def tenant(self) -> str:
        """The effective tenant: `spec.tenant`, or the namespace when it is not set."""
        return self.spec.tenant or self.metadata.namespace

    def to_manifest(self, *, reveal_credentials: bool = False) -> dict[str, Any]:
        """The manifest as plain JSON data with every default filled in.

        Literal credentials are masked unless `reveal_credentials`: only code that writes the
        worker's own config file should ask for them.
        """
        return self.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            context={REVEAL_CREDENTIALS: reveal_credentials},
        )
