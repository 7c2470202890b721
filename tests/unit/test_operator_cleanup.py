"""cleanup.py: the finalizer only with `reclaimPolicy: Delete`, the cleanup Job without a credential
in sight, and the steps of a deletion that always ends."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge.spec import Pipeline, parse_pipeline
from deltaforge_operator.cleanup import (
    FINALIZER,
    JobFacts,
    Step,
    failure_message,
    finalizer_patch,
    job,
    job_inputs,
    manual_fix,
    needed,
    next_step,
    slot_and_publication,
)
from deltaforge_operator.render import WorkerSettings, selector

PASSWORD = "hunter2-planted"


def _pipeline(reclaim: str = "Delete", *, create_publication: bool = False) -> Pipeline:
    return parse_pipeline({
        "apiVersion": "deltaforge.io/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {
            "source": {"postgres": {
                "host": "pg", "database": "shop", "user": "cdc", "password": PASSWORD, "tables": ["public.orders"],
                "slot": {"name": "df_orders", "reclaimPolicy": reclaim},
                "publication": {"name": "df_pub", "create": create_publication},
            }},
            "sinks": [{"name": "events", "kafka": {"bootstrapServers": "kafka:9092", "topic": "t"},
                       "required": True}],
        },
    })  # fmt: skip


def test_only_a_reclaimed_postgres_slot_needs_the_finalizer() -> None:
    assert needed(_pipeline("Delete"))
    assert not needed(_pipeline("Retain"))
    mysql = parse_pipeline({
        "apiVersion": "deltaforge.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "m", "namespace": "s"},
        "spec": {"source": {"mysql": {"host": "db", "user": "u", "tables": ["shop.*"]}},
                 "sinks": [{"name": "out", "stdout": {}}]},
    })  # fmt: skip
    assert not needed(mysql)


def test_the_finalizer_patch_adds_and_removes_only_ours_at_the_version_read() -> None:
    metadata = {"finalizers": ["other/keep"], "resourceVersion": "7"}
    assert finalizer_patch(metadata, wanted=True) == {
        "metadata": {"finalizers": ["other/keep", FINALIZER], "resourceVersion": "7"}
    }
    assert finalizer_patch(metadata, wanted=False) is None
    ours = {"finalizers": ["other/keep", FINALIZER], "resourceVersion": "8"}
    assert finalizer_patch(ours, wanted=True) is None
    assert finalizer_patch(ours, wanted=False) == {
        "metadata": {"finalizers": ["other/keep"], "resourceVersion": "8"}
    }


def test_the_job_mounts_credentials_and_shows_none() -> None:
    pipeline = _pipeline()
    found = job(pipeline, settings=WorkerSettings(image="img:1"), deadline_seconds=3.5)
    assert PASSWORD not in json.dumps(found)
    spec = found["spec"]
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (10, 6)  # never below 10 s
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "deltaforge.reclaim",
        "/etc/deltaforge/config/pipeline.yaml",
    ]
    assert (pod["restartPolicy"], pod["automountServiceAccountToken"]) == ("Never", False)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The Job's own copies, mounted where the manifest's secretKeyRef to the credentials Secret points.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert volumes[mounts["/etc/deltaforge/config"]]["configMap"]["name"] == "deltaforge-orders-cleanup"
    literal = volumes[mounts["/etc/deltaforge/secrets/deltaforge-orders-credentials"]]["secret"]
    assert literal["secretName"] == "deltaforge-orders-cleanup"
    # Not a worker: neither the worker's Deployment, its Service nor the operator's lookups select it.
    labels = spec["template"]["metadata"]["labels"]
    assert not selector("orders").items() <= labels.items()
    assert labels["app.kubernetes.io/part-of"] == "deltaforge"
    assert "ownerReferences" not in found["metadata"]  # a foreground deletion would take it at once


def test_the_jobs_inputs_are_owned_by_it() -> None:
    config_map, secret = job_inputs(_pipeline(), job_uid="job-uid")
    for owned in (config_map, secret):
        assert owned["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert PASSWORD not in json.dumps(config_map)
    manifest = yaml.safe_load(config_map["data"]["pipeline.yaml"])
    reference = manifest["spec"]["source"]["postgres"]["password"]["secretKeyRef"]
    assert reference["name"] == "deltaforge-orders-credentials"
    assert base64.b64decode(secret["data"][reference["key"]]).decode() == PASSWORD


def test_a_publication_is_dropped_only_when_the_pipeline_manages_it() -> None:
    assert slot_and_publication(_pipeline()) == ("df_orders", None)
    assert slot_and_publication(_pipeline(create_publication=True)) == ("df_orders", "df_pub")


def test_job_facts() -> None:
    assert JobFacts.of({}) == JobFacts(succeeded=False, failed=False, reason="")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert JobFacts.of(done).succeeded
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    assert JobFacts.of(failed) == JobFacts(succeeded=False, failed=True, reason="DeadlineExceeded")


RUNNING, DONE, FAILED = (JobFacts(False, False, ""), JobFacts(True, False, ""),
                         JobFacts(False, True, "BackoffLimitExceeded"))  # fmt: skip
BASE: dict[str, Any] = {"finalizer": True, "skip": False, "valid": True, "elapsed": 5.0, "timeout": 30.0,
                        "workers": 0, "job": None}  # fmt: skip
STEPS: list[tuple[dict[str, Any], Step]] = [
    ({"finalizer": False}, Step.NOTHING),
    ({"skip": True, "workers": 1, "job": RUNNING}, Step.SKIP),
    ({"valid": False}, Step.INVALID),
    ({"workers": 1}, Step.STOP_WORKER),
    ({}, Step.START_JOB),
    ({"job": RUNNING}, Step.WAIT),
    ({"job": DONE, "elapsed": 99.0}, Step.DONE),  # an outcome counts even when it came late
    ({"job": FAILED}, Step.FAILED),
    ({"job": RUNNING, "elapsed": 31.0}, Step.TIMED_OUT),
    ({"workers": 1, "elapsed": 31.0}, Step.TIMED_OUT),  # a worker that does not stop does not hold it up
]


@pytest.mark.parametrize(("changes", "expected"), STEPS)
def test_every_deletion_reaches_an_end(changes: dict[str, Any], expected: Step) -> None:
    assert next_step(**(BASE | changes)) is expected


def test_a_failure_says_what_is_left_and_how_to_remove_it() -> None:
    fix = manual_fix("df_orders", "df_pub", "pg:5432/shop")
    message = failure_message(Step.TIMED_OUT, detail="the cleanup Job did not finish", fix=fix, timeout=300)
    assert message == (
        "not done within 300 s (the cleanup Job did not finish); the replication slot 'df_orders' on "
        "pg:5432/shop is left and retains WAL: drop it with SELECT pg_drop_replication_slot('df_orders'); "
        'DROP PUBLICATION "df_pub"'
    )
