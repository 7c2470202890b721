"""Worker observability: Prometheus metrics, structured logs, HTTP probes and panic accounting.

One `PipelineMetrics` per pipeline (own registry, `pipeline`/`tenant` bound), structlog JSON logs
that also carry library loggers, an `ObservabilityServer` for `/metrics`, `/healthz`, `/readyz` and
`/status`, and hooks that turn every unhandled exception into a counted, logged panic.
"""

from deltaforge.observability.http import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HealthSource,
    ObservabilityServer,
    ReadinessTracker,
)
from deltaforge.observability.logging import (
    LOG_ENV_VAR,
    LevelSpec,
    configure_logging,
    get_logger,
    parse_level_spec,
    redact_secrets,
)
from deltaforge.observability.metrics import (
    METRIC_FAMILIES,
    BatchTrigger,
    LifecycleAction,
    LifecycleResult,
    PipelineMetrics,
    Readiness,
    SinkFailureKind,
)
from deltaforge.observability.panics import install_panic_hooks, spawn, watch_task

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LOG_ENV_VAR",
    "METRIC_FAMILIES",
    "BatchTrigger",
    "HealthSource",
    "LevelSpec",
    "LifecycleAction",
    "LifecycleResult",
    "ObservabilityServer",
    "PipelineMetrics",
    "Readiness",
    "ReadinessTracker",
    "SinkFailureKind",
    "configure_logging",
    "get_logger",
    "install_panic_hooks",
    "parse_level_spec",
    "redact_secrets",
    "spawn",
    "watch_task",
]
