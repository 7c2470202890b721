"""What the operator's end-to-end tests (tests/k8s/test_operator_*.py) share: a PostgreSQL source
with a replication role of its own, kubectl in the test's namespace, and the manifests they apply.
The fixtures that build these are in tests/k8s/conftest.py.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from deltaforge_operator.render import PIPELINE_LABEL
from deltaforge_operator.status import CONDITION_TYPES
from hack.operator_process import OperatorProcess
from hack.stack.config import HOST
from tests.fixtures.control_plane import ControlPlane, wait_for
from tests.fixtures.data_stack import PgDatabase, unique_name
from tests.support.worker import consume, values

PIPELINES = "pipelines.deltaforge.io"
CHILD_KINDS = ("deployments", "services", "configmaps", "secrets", "roles", "rolebindings", "serviceaccounts")


@dataclass(frozen=True)
class Source:
    """A table with a publication, read by a replication role of its own whose password is planted."""

    database: PgDatabase
    port: int
    role: str
    password: str
    admin_dsn: str
    kafka: str

    def insert(self, *ids: int) -> None:
        with psycopg.connect(self.database.admin_dsn, autocommit=True) as admin:
            for row in ids:
                admin.execute("INSERT INTO orders (id, note) VALUES (%s, 'row')", [row])

    def set_password(self, password: str, *, create: bool = False) -> None:
        statement = "CREATE ROLE {} LOGIN REPLICATION PASSWORD {}" if create else "ALTER ROLE {} PASSWORD {}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL(statement).format(sql.Identifier(self.role), sql.Literal(password)))

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database.admin_dsn, autocommit=True) as admin:
            return admin.execute(statement).fetchall()


def make_source(
    database: PgDatabase, port: int, admin_dsn: str, kafka: str, *, managed: bool = False
) -> Source:
    """The role and the table; the publication too, unless the worker is to create (manage) it, for
    which its role owns the table and may create in the database."""
    found = Source(database, port, unique_name("role"), f"planted-{uuid.uuid4().hex}", admin_dsn, kafka)
    found.set_password(found.password, create=True)
    with psycopg.connect(database.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE orders (id bigint PRIMARY KEY, note text)")
        if managed:
            role, name = sql.Identifier(found.role), sql.Identifier(database.name)
            admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(name, role))
            admin.execute(sql.SQL("ALTER TABLE orders OWNER TO {}").format(role))
        else:
            admin.execute("CREATE PUBLICATION df_orders FOR TABLE orders")
    return found


def drop_source(source: Source) -> None:
    """The role goes, after its sessions (a worker that outlived its Pipeline) are ended."""
    with psycopg.connect(source.admin_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [source.role]
        )
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(source.role)))


@dataclass(frozen=True)
class Cluster:
    """kubectl in the test's namespace, with the lookups the scenarios repeat."""

    control_plane: ControlPlane
    namespace: str
    operator: OperatorProcess

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.control_plane.kubectl(*args, "-n", self.namespace, check=check).stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        self.control_plane.kubectl("apply", "-n", self.namespace, "-f", "-", input_text=document)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.control_plane.get_json(kind, name, "-n", self.namespace)
        return found

    def exists(self, kind: str, name: str) -> bool:
        result = self.control_plane.kubectl("get", kind, name, "-n", self.namespace, check=False)
        return result.returncode == 0

    def items(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.control_plane.get_json(kind, "-n", self.namespace, *selector)[
            "items"
        ]
        return found

    def pods(self) -> list[dict[str, Any]]:
        return [pod for pod in self.items("pods") if not pod["metadata"].get("deletionTimestamp")]

    def worker_pod(self) -> str:
        def one() -> str:
            pods = self.pods()
            return str(pods[0]["metadata"]["name"]) if len(pods) == 1 else ""

        return str(wait_for(one, timeout=60, what="exactly one worker pod"))

    def template(self, pipeline: str) -> dict[str, Any]:
        template: dict[str, Any] = self.get("deployment", f"deltaforge-{pipeline}")["spec"]["template"]
        return template

    def condition(self, pipeline: str, kind: str) -> dict[str, Any]:
        conditions = self.get(PIPELINES, pipeline).get("status", {}).get("conditions", [])
        return next((condition for condition in conditions if condition["type"] == kind), {})

    def wait_ready(self, pipeline: str) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            found = self.get(PIPELINES, pipeline)
            status = found.get("status", {})
            conditions = {
                condition["type"]: condition["status"] for condition in status.get("conditions", [])
            }
            current = status.get("observedGeneration") == found["metadata"]["generation"]
            return found if current and conditions.get("Ready") == "True" else None

        try:
            found = wait_for(ready, timeout=90, what=f"Pipeline {pipeline} to be Ready")
        except BaseException:
            print(self.operator.log_tail(), json.dumps(self.get(PIPELINES, pipeline).get("status"), indent=1))
            raise
        assert isinstance(found, dict)
        return found

    def wait_not_ready(self, pipeline: str) -> dict[str, Any]:
        def not_ready() -> dict[str, Any]:
            condition = self.condition(pipeline, "Ready")
            return condition if condition.get("status") == "False" else {}

        found = wait_for(not_ready, timeout=60, what=f"Pipeline {pipeline} to lose Ready")
        assert isinstance(found, dict)
        return found

    def child_counts(self) -> dict[str, dict[str, int]]:
        """Pipeline -> kind -> how many objects of that kind carry the Pipeline's label; one list
        request per kind, however many Pipelines the namespace holds."""
        counts: dict[str, dict[str, int]] = {}
        for kind in CHILD_KINDS:
            for item in self.items(kind, "-l", PIPELINE_LABEL):
                owner = item["metadata"]["labels"][PIPELINE_LABEL]
                counts.setdefault(owner, dict.fromkeys(CHILD_KINDS, 0))[kind] += 1
        return counts

    def converged(self, pipeline: dict[str, Any]) -> bool:
        """Whether the status describes the Pipeline's current generation, with every condition."""
        status, generation = pipeline.get("status", {}), pipeline["metadata"]["generation"]
        conditions = status.get("conditions", [])
        return (
            status.get("observedGeneration") == generation
            and tuple(condition["type"] for condition in conditions) == CONDITION_TYPES
            and all(condition.get("observedGeneration") == generation for condition in conditions)
        )

    def events(self, pipeline: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=Pipeline,involvedObject.name={pipeline}"
        return self.items("events", "--field-selector", selector)

    def event_reasons(self, pipeline: str) -> list[str]:
        return [event["reason"] for event in self.events(pipeline)]

    def lifecycle_count(self, action: str, **labels: str) -> float:
        return self.operator.metric(
            "deltaforge_operator_lifecycle_actions_total", namespace=self.namespace, action=action, **labels
        )

    def transitions(self, to: str) -> float:
        return self.operator.metric(
            "deltaforge_operator_readiness_transitions_total", namespace=self.namespace, to=to
        )


# One of each child, but two ConfigMaps: the worker's config and its checkpoint.
ONE_OF_EACH = {kind: 2 if kind == "configmaps" else 1 for kind in CHILD_KINDS}


def secret(username: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-cdc"},
        "stringData": {"username": username, "password": password},
    }  # fmt: skip


def pipeline(name: str, source: Source, topic: str) -> dict[str, Any]:
    postgres = {
        "host": HOST, "port": source.port, "database": source.database.name,
        "user": {"secretKeyRef": {"name": "pg-cdc", "key": "username"}},
        "password": {"secretKeyRef": {"name": "pg-cdc", "key": "password"}},
        "tables": ["public.orders"], "slot": {"name": unique_name("slot")}, "publication": {"name": "df_orders"},
        "heartbeat": {"interval": "1s"}, "connectTimeout": "5s",
    }  # fmt: skip
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"postgres": postgres},
            "sinks": [{"name": "events", "kafka": {"bootstrapServers": source.kafka, "topic": topic}}],
            "batch": {"maxEvents": 100, "maxDelay": "20ms"},
        },
    }


def reclaimed(name: str, source: Source, topic: str) -> dict[str, Any]:
    """A Pipeline whose slot is dropped when it is deleted (reclaimPolicy Delete)."""
    manifest = pipeline(name, source, topic)
    manifest["spec"]["source"]["postgres"]["slot"]["reclaimPolicy"] = "Delete"
    return manifest


def delivered_ids(source: Source, topic: str, expected: int) -> set[int]:
    return {
        int(record["after"]["id"]) for record in values(consume(source.kafka, [topic], expected, timeout=60))
    }
