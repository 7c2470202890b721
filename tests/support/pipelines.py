"""Pipeline manifests for tests that run a real worker against PostgreSQL."""

from __future__ import annotations

from typing import Any

from hack.stack.config import HOST

STDOUT_SINK: dict[str, Any] = {"name": "out", "stdout": {}}


def postgres_pipeline(
    name: str,
    *,
    port: int,
    database: str,
    user: str,
    tables: list[str],
    slot: str,
    publication: str,
    create_publication: bool = False,
    password: str = "${PG_PASSWORD}",
    heartbeat: str = "1s",
    sinks: list[dict[str, Any]] | None = None,
    processors: list[dict[str, Any]] | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """A Pipeline reading `tables` of `database` on 127.0.0.1:`port`, checkpointing to ./checkpoint.json.

    The password defaults to `${PG_PASSWORD}`, so the value itself comes from the environment.
    """
    metadata: dict[str, Any] = {"name": name.replace("_", "-"), "namespace": "tests"}
    spec: dict[str, Any] = {
        "source": {
            "postgres": {
                "host": HOST,
                "port": port,
                "database": database,
                "user": user,
                "password": password,
                "tables": tables,
                "slot": {"name": slot},
                "publication": {"name": publication, "create": create_publication},
                "heartbeat": {"interval": heartbeat},
                "connectTimeout": "5s",
            }
        },
        "sinks": sinks if sinks is not None else [dict(STDOUT_SINK)],
        "batch": {"maxEvents": 100, "maxDelay": "20ms"},
        "checkpoint": {"file": {"path": "checkpoint.json"}},
    }
    if processors:
        spec["processors"] = processors
    if tenant is not None:
        spec["tenant"] = tenant
    return {"apiVersion": "deltaforge.io/v1alpha1", "kind": "Pipeline", "metadata": metadata, "spec": spec}
