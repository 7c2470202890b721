"""The Pipeline spec: the typed model every part of DeltaForge validates manifests with.

The worker's config, `deltaforge validate` and the operator (including the CRD schema it
ships) all come from these models, so a manifest means the same thing everywhere.
"""

from deltaforge.spec.base import OneOfModel, SpecModel
from deltaforge.spec.credentials import (
    DEFAULT_SECRETS_DIR,
    REVEAL_CREDENTIALS,
    SECRETS_DIR_ENV,
    Credential,
    CredentialError,
    SecretKeyRef,
    iter_credentials,
    resolve,
)
from deltaforge.spec.errors import Issue, SpecError
from deltaforge.spec.loading import load_manifest, load_manifest_file, parse_pipeline, validate_manifest_file
from deltaforge.spec.pipeline import (
    API_VERSION,
    KIND,
    MAX_SINKS,
    BatchSpec,
    CheckpointSpec,
    CommitPolicy,
    FileCheckpointSpec,
    KubernetesCheckpointSpec,
    Metadata,
    Pipeline,
    PipelineSpec,
    State,
    default_database_object_name,
)
from deltaforge.spec.processors import FilterSpec, MaskMethod, MaskSpec, OpCode, ProcessorSpec, SelectSpec
from deltaforge.spec.schema import spec_json_schema
from deltaforge.spec.sinks import (
    Compression,
    Envelope,
    KafkaSinkSpec,
    RedisSinkSpec,
    SinkSpec,
    StdoutSinkSpec,
)
from deltaforge.spec.sources import (
    HeartbeatSpec,
    MysqlSourceSpec,
    MysqlSslMode,
    PostgresSourceSpec,
    PublicationSpec,
    ReclaimPolicy,
    SlotSpec,
    SourceSpec,
    SslMode,
)
from deltaforge.spec.tables import TableMatcher
from deltaforge.spec.templates import PLACEHOLDERS, Template
from deltaforge.spec.units import parse_duration, parse_quantity

__all__ = [
    "API_VERSION",
    "DEFAULT_SECRETS_DIR",
    "KIND",
    "MAX_SINKS",
    "PLACEHOLDERS",
    "REVEAL_CREDENTIALS",
    "SECRETS_DIR_ENV",
    "BatchSpec",
    "CheckpointSpec",
    "CommitPolicy",
    "Compression",
    "Credential",
    "CredentialError",
    "Envelope",
    "FileCheckpointSpec",
    "FilterSpec",
    "HeartbeatSpec",
    "Issue",
    "KafkaSinkSpec",
    "KubernetesCheckpointSpec",
    "MaskMethod",
    "MaskSpec",
    "Metadata",
    "MysqlSourceSpec",
    "MysqlSslMode",
    "OneOfModel",
    "OpCode",
    "Pipeline",
    "PipelineSpec",
    "PostgresSourceSpec",
    "ProcessorSpec",
    "PublicationSpec",
    "ReclaimPolicy",
    "RedisSinkSpec",
    "SecretKeyRef",
    "SelectSpec",
    "SinkSpec",
    "SlotSpec",
    "SourceSpec",
    "SpecError",
    "SpecModel",
    "SslMode",
    "State",
    "StdoutSinkSpec",
    "TableMatcher",
    "Template",
    "default_database_object_name",
    "iter_credentials",
    "load_manifest",
    "load_manifest_file",
    "parse_duration",
    "parse_pipeline",
    "parse_quantity",
    "resolve",
    "spec_json_schema",
    "validate_manifest_file",
]
