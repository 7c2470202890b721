"""Fixtures of the operator's end-to-end modules (test_operator_*.py): one operator process per
module, a PostgreSQL source per test, and the test's namespace, emptied of Pipelines afterwards.
What they build is in tests/support/operator_cluster.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hack.operator_process import OperatorProcess, running_operator
from hack.stack.config import Settings
from tests.fixtures.control_plane import ControlPlane, PodRunnerHandle, wait_for
from tests.fixtures.data_stack import PgDatabase
from tests.support.operator_cluster import PIPELINES, Cluster, Source, drop_source, make_source


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    pipeline_crd: None,
    pod_runner: PodRunnerHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(control_plane.kubeconfig, tmp_path_factory.mktemp("operator")) as process:
        yield process


@pytest.fixture
def source(pg_database: PgDatabase, postgres_server: Settings, kafka_server: Settings) -> Iterator[Source]:
    found = make_source(
        pg_database,
        postgres_server.postgres_port,
        postgres_server.postgres_dsn(),
        kafka_server.kafka_bootstrap,
    )
    yield found
    drop_source(found)


@pytest.fixture
def cluster(control_plane: ControlPlane, namespace: str, operator: OperatorProcess) -> Iterator[Cluster]:
    """The test's namespace; afterwards its Pipelines are deleted and their workers gone, so no
    worker still holds a slot when the database is dropped."""
    found = Cluster(control_plane, namespace, operator)
    yield found
    found.kubectl("delete", PIPELINES, "--all", "--wait=true")
    wait_for(lambda: not found.pods(), timeout=60, what="the workers to stop")
