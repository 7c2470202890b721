"""The schema of a Pipeline's `status`: what the operator observed, never what a user asks for.

Written only through the status subresource, so a user's `kubectl apply` cannot overwrite it and
the operator's status writes cannot change the spec. Ready is derived from runtime facts (the
worker's heartbeat, source and sinks connected), which is why those facts have fields here:
`kubectl get pipeline -o yaml` then shows why a pipeline is or is not Ready.
"""

from __future__ import annotations

from typing import Final

from deltaforge.spec import MAX_SINKS
from deltaforge_operator.structural import Schema

_TIMESTAMP: Final[Schema] = {"type": "string", "format": "date-time"}


def _timestamp(description: str) -> Schema:
    return {**_TIMESTAMP, "description": description}


# The shape of metav1.Condition, with the API server's own limits, as `kubectl wait
# --for=condition=Ready` and every Kubernetes tool expect it.
_CONDITION: Final[Schema] = {
    "type": "object",
    "description": "One aspect of the pipeline's state, in the shape of a Kubernetes metav1.Condition.",
    "required": ["type", "status", "reason", "message", "lastTransitionTime"],
    "properties": {
        "type": {
            "type": "string",
            "maxLength": 316,
            "pattern": (
                r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
            ),
            "description": "Condition type in CamelCase, e.g. `Ready`.",
        },
        "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "Status."},
        "reason": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            "description": "Why the condition has this status, in CamelCase, e.g. `Streaming` or `InvalidSpec`.",
        },
        "message": {
            "type": "string",
            "maxLength": 32768,
            "description": "What happened, for people: the field and the fix, never a credential.",
        },
        "observedGeneration": {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "description": "The metadata.generation the condition was computed for.",
        },
        "lastTransitionTime": _timestamp("When the status last changed (not when it was last checked)."),
    },
}

STATUS_SCHEMA: Final[Schema] = {
    "type": "object",
    "description": "The state the operator observed; written by the operator only.",
    "properties": {
        "observedGeneration": {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "description": (
                "The metadata.generation this status describes; when it is lower, the operator has not "
                "acted on the newest spec yet."
            ),
        },
        "phase": {
            "type": "string",
            "enum": ["Pending", "Running", "Paused", "Stopped", "Degraded", "Failed"],
            "description": (
                "Summary: Pending (starting), Running (streaming), Paused or Stopped (as spec.state asks), "
                "Degraded (streaming while a sink that is not required fails), Failed (see the conditions)."
            ),
        },
        "conditions": {
            "type": "array",
            "description": "Ready and the conditions it is derived from, one per type.",
            "maxItems": 16,
            "items": _CONDITION,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        "source": {
            "type": "object",
            "description": "What the worker last reported about its source.",
            "properties": {
                "kind": {"type": "string", "enum": ["postgres", "mysql"], "description": "The source kind."},
                "position": {
                    "type": "string",
                    "description": (
                        "The last acknowledged position: a PostgreSQL LSN such as `0/16B6C50`, or a MySQL "
                        "GTID set or binlog file and position."
                    ),
                },
                "lagSeconds": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Seconds between the newest change written to the sinks and its commit in the source.",
                },
                "lastEventTime": _timestamp("Commit time of the newest change written to the sinks."),
            },
        },
        "sinksReady": {
            "type": "string",
            "description": "Sinks connected out of configured, e.g. `2/2`.",
        },
        "sinks": {
            "type": "array",
            "description": "One entry per sink of the spec.",
            "maxItems": MAX_SINKS,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "description": "The sink's name in the spec."},
                    "connected": {"type": "boolean", "description": "Whether the sink accepts writes."},
                    "lastError": {"type": "string", "description": "The sink's most recent error, if any."},
                },
            },
        },
        "worker": {
            "type": "object",
            "description": "The worker process that runs the pipeline.",
            "properties": {
                "lastHeartbeatTime": _timestamp(
                    "When the worker last reported; Ready turns False when this is too old."
                ),
                "restarts": {
                    "type": "integer",
                    "format": "int32",
                    "minimum": 0,
                    "description": "How often the worker's container restarted.",
                },
                "lastError": {
                    "type": "string",
                    "description": "The worker's most recent error, naming the setting and the fix; never a credential.",
                },
            },
        },
    },
}
