"""Pure logic of the local pod runner: env resolution, $(VAR) expansion, volumes, probes, status."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hack.podrunner import probes, spec, status
from hack.podrunner.processes import mount_script


class FakeObjects:
    """ConfigMaps and Secrets held in memory (the runner's real source is the API server)."""

    def __init__(self) -> None:
        self.config_maps = {"app": {"MODE": b"fast", "pipeline.yaml": b"kind: Pipeline\n"}}
        self.secrets = {"db": {"password": b"hunter2"}}

    def config_map(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        return self.config_maps.get(name)

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        return self.secrets.get(name)

    def service_account_token(
        self, namespace: str, account: str, audience: str | None, expiration: int
    ) -> str:
        return f"token-for-{namespace}-{account}"


def _pod(**container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "w-1", "namespace": "shop", "uid": "u1", "labels": {"app": "w"}},
        "spec": {
            "containers": [{"name": "main", "command": ["run"], **container}],
            "serviceAccountName": "worker",
        },
        "status": {"podIP": "127.0.10.7"},
    }


def test_expand_replaces_known_variables_and_keeps_escapes() -> None:
    env = {"HOST": "127.0.10.7", "PORT": "9000"}
    assert spec.expand("$(HOST):$(PORT)", env) == "127.0.10.7:9000"
    assert spec.expand("$$(HOST) $(MISSING)", env) == "$(HOST) $(MISSING)"


def test_environment_layers_env_from_then_env_with_references() -> None:
    pod = _pod(
        envFrom=[{"configMapRef": {"name": "app"}, "prefix": "CFG_"}],
        env=[
            {"name": "CFG_MODE", "value": "slow"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "ADDR", "value": "$(IP):9000"},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {
                "name": "OPTIONAL",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}},
            },
        ],
    )
    env = spec.container_environment(pod, pod["spec"]["containers"][0], FakeObjects(), {"PATH": "/bin"})
    assert env["CFG_MODE"] == "slow"
    assert env["CFG_pipeline.yaml"] == "kind: Pipeline\n"
    assert env["ADDR"] == "127.0.10.7:9000"
    assert env["APP"] == "w"
    assert env["PASSWORD"] == "hunter2"
    assert "OPTIONAL" not in env
    assert env["PATH"] == "/bin"


def test_missing_secret_is_a_config_error_naming_it() -> None:
    pod = _pod(env=[{"name": "P", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}])
    with pytest.raises(spec.ContainerConfigError, match='secret "absent" not found'):
        spec.launch_for(pod, pod["spec"]["containers"][0], FakeObjects(), {})


def test_container_without_command_is_refused_with_the_reason() -> None:
    pod = _pod(command=[])
    with pytest.raises(spec.ContainerConfigError, match="does not pull images"):
        spec.launch_for(pod, pod["spec"]["containers"][0], FakeObjects(), {})


def test_volume_files_for_config_map_items_and_projected_token() -> None:
    pod = _pod()
    config_volume = {
        "name": "cfg",
        "configMap": {"name": "app", "items": [{"key": "pipeline.yaml", "path": "p.yaml"}]},
    }
    assert spec.volume_files(pod, config_volume, FakeObjects()) == {"p.yaml": (b"kind: Pipeline\n", 0o644)}
    token_volume = {
        "name": "kube-api-access",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {
                    "downwardAPI": {
                        "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                    }
                },
            ]
        },
    }
    files = spec.volume_files(pod, token_volume, FakeObjects())
    assert files == {"token": (b"token-for-shop-worker", 0o644), "namespace": (b"shop", 0o644)}
    assert spec.volume_files(pod, {"name": "tmp", "emptyDir": {}}, FakeObjects()) is None
    with pytest.raises(spec.ContainerConfigError, match="hostPath volumes are not supported"):
        spec.volume_files(pod, {"name": "h", "hostPath": {"path": "/"}}, FakeObjects())


def test_probe_flips_only_after_its_thresholds() -> None:
    probe = probes.Probe.start(
        {"periodSeconds": 1, "failureThreshold": 2, "successThreshold": 1},
        started_at=0.0,
        initially_healthy=False,
    )
    verdicts = []
    for succeeded, now in ((True, 0.0), (False, 1.0), (False, 2.0)):
        flipped = probe.record(succeeded, now)
        verdicts.append((flipped, probe.healthy))
    assert verdicts == [(True, True), (False, True), (True, False)]
    assert (probe.due(2.5), probe.due(3.0)) == (False, True)


def _ready_condition(previous: dict[str, Any], container: status.ContainerState, now: str) -> dict[str, Any]:
    reported = status.pod_status(
        previous,
        [container],
        restart_policy="Always",
        pod_ip="127.0.10.7",
        host_ip="127.0.0.1",
        start_time="t0",
        now=now,
    )
    return {**next(c for c in reported["conditions"] if c["type"] == "Ready"), "status_of_pod": reported}


def test_pod_status_keeps_transition_time_while_unchanged() -> None:
    container = status.ContainerState(
        name="main", image="img", state="running", started_at="t0", ready=True, pid=42
    )
    first = _ready_condition({}, container, "t1")
    second = _ready_condition(first["status_of_pod"], container, "t2")
    assert (second["status_of_pod"]["phase"], second["status"], second["lastTransitionTime"]) == (
        "Running",
        "True",
        "t1",
    )
    container.ready = False
    third = _ready_condition(second["status_of_pod"], container, "t3")
    assert (third["status"], third["lastTransitionTime"], third["reason"]) == (
        "False",
        "t3",
        "ContainersNotReady",
    )


def test_phase_of_finished_containers_follows_restart_policy() -> None:
    done = status.ContainerState(name="main", image="img", state="terminated", exit_code=0)
    failed = status.ContainerState(name="main", image="img", state="terminated", exit_code=1)
    assert status.phase([done], "Never") == "Succeeded"
    assert status.phase([failed], "Never") == "Failed"
    assert status.phase([failed], "Always") == "Running"
    assert status.phase([], "Always") == "Pending"


def test_a_volume_over_the_programs_own_files_is_not_mounted() -> None:
    launch = spec.Launch(
        argv=["deltaforge", "run"],
        env={},
        working_dir=None,
        mounts=[spec.Mount("tmp", "/tmp"), spec.Mount("config", "/etc/deltaforge/config", read_only=True)],
    )
    script = mount_script(launch, Path("/var/lib/pods/p1/volumes"), protected=("/tmp/clone/.venv",))
    assert "/var/lib/pods/p1/volumes/config /etc/deltaforge/config" in script
    assert "volumes/tmp /tmp" not in script
    assert "export TMPDIR=/var/lib/pods/p1/volumes/tmp" in script
