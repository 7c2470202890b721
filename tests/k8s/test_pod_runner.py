"""The local pod runner runs a Deployment's pod as a process, with real probes and status."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any

from tests.fixtures.control_plane import ControlPlane, PodRunnerHandle, wait_for

# A container's program: serves its config file and env, /readyz until told to stop being ready.
SERVER = """
import http.server, os, sys
state = {"ready": True}
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def reply(self, code, body):
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body.encode())
    def do_GET(self):
        if self.path == "/readyz":
            self.reply(200 if state["ready"] else 503, "ready" if state["ready"] else "not ready")
        elif self.path == "/facts":
            facts = {
                "pid": os.getpid(),
                "greeting": open("/etc/hello/greeting").read(),
                "password": os.environ.get("HELLO_PASSWORD"),
                "mode": os.environ.get("HELLO_MODE"),
                "pod": os.environ.get("POD_NAME"),
            }
            import json
            self.reply(200, json.dumps(facts))
        else:
            self.reply(404, "")
    def do_POST(self):
        if self.path == "/unready":
            state["ready"] = False
        self.reply(200, "ok")
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"""


def _deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": "hello", "app.kubernetes.io/part-of": "deltaforge"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "server",
                            "image": "example.invalid/hello:1",
                            "command": [sys.executable, "-c", SERVER, "$(POD_IP)", "8080"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "HELLO_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "hello-secret", "key": "password"}
                                    },
                                },
                            ],
                            "envFrom": [{"configMapRef": {"name": "hello-config"}}],
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/hello", "readOnly": True}],
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "http"},
                                "periodSeconds": 1,
                                "failureThreshold": 1,
                            },
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "hello-config"}}],
                },
            },
        },
    }


def _config(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hello-config", "namespace": namespace},
            "data": {"greeting": "hello from a ConfigMap", "HELLO_MODE": "envFrom works"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hello-secret", "namespace": namespace},
            "stringData": {"password": "s3cret"},
        },
    ]


def _apply(control_plane: ControlPlane, *objects: dict[str, Any]) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_deployment_runs_turns_ready_then_not_ready_and_stops_on_delete(
    control_plane: ControlPlane, pod_runner: PodRunnerHandle, namespace: str
) -> None:
    _apply(control_plane, *_config(namespace), _deployment(namespace))

    def available() -> bool:
        status = control_plane.get_json("deployment", "hello", "-n", namespace).get("status", {})
        return bool(status.get("availableReplicas") == 1)

    wait_for(available, timeout=90, what="the Deployment to become available")

    [pod] = control_plane.get_json("pods", "-n", namespace, "-l", "app=hello")["items"]
    pod_name, pod_ip = pod["metadata"]["name"], pod["status"]["podIP"]
    assert pod["spec"]["nodeName"] == pod_runner.node
    assert pod_ip.startswith("127.0.")
    with urllib.request.urlopen(f"http://{pod_ip}:8080/facts", timeout=5) as response:
        facts = json.load(response)
    assert facts["greeting"] == "hello from a ConfigMap"
    assert facts["mode"] == "envFrom works"
    assert facts["password"] == "s3cret"
    assert facts["pod"] == pod_name
    pid = int(facts["pid"])
    assert _pid_alive(pid)

    urllib.request.urlopen(urllib.request.Request(f"http://{pod_ip}:8080/unready", method="POST"), timeout=5)

    def pod_not_ready() -> bool:
        conditions = control_plane.get_json("pod", pod_name, "-n", namespace)["status"]["conditions"]
        return any(c["type"] == "Ready" and c["status"] == "False" for c in conditions)

    wait_for(pod_not_ready, timeout=30, what="the pod to turn NotReady")
    wait_for(lambda: not available(), timeout=30, what="the Deployment to lose its available replica")
    assert _pid_alive(pid), "a readiness failure must not restart the container"

    control_plane.kubectl("delete", "deployment", "hello", "-n", namespace, "--wait=false")
    wait_for(
        lambda: not _pid_alive(pid),
        timeout=60,
        what="the pod's process to stop after the Deployment was deleted",
    )
    wait_for(
        lambda: not control_plane.get_json("pods", "-n", namespace, "-l", "app=hello")["items"],
        timeout=60,
        what="garbage collection to remove the ReplicaSet's pod",
    )


# Liveness: /healthz answers until /break is posted; the pod runner must restart the container.
FRAGILE = """
import http.server, os, sys
state = {"healthy": True}
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        code = 200 if self.path == "/pid" or state["healthy"] else 500
        self.send_response(code)
        self.end_headers()
        self.wfile.write(str(os.getpid()).encode())
    def do_POST(self):
        state["healthy"] = False
        self.send_response(200)
        self.end_headers()
http.server.ThreadingHTTPServer((sys.argv[1], 8080), Handler).serve_forever()
"""


def _single_container_pod(namespace: str, name: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "deltaforge"},
        },
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "example.invalid/main:1",
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    **container,
                }
            ],
        },
    }


def _container_status(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    statuses = (
        control_plane.get_json("pod", name, "-n", namespace).get("status", {}).get("containerStatuses", [])
    )
    return statuses[0] if statuses else {}


def test_crashing_container_is_restarted_and_counted(
    control_plane: ControlPlane, pod_runner: PodRunnerHandle, namespace: str
) -> None:
    pod = _single_container_pod(namespace, "crasher", {"command": ["/bin/sh", "-c", "exit 3"]})
    _apply(control_plane, pod)
    wait_for(
        lambda: _container_status(control_plane, namespace, "crasher").get("restartCount", 0) >= 2,
        timeout=60,
        what="two restarts of a container that exits with 3",
    )
    last = _container_status(control_plane, namespace, "crasher")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")


def test_failed_liveness_probe_restarts_the_container(
    control_plane: ControlPlane, pod_runner: PodRunnerHandle, namespace: str
) -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2}
    pod = _single_container_pod(
        namespace,
        "fragile",
        {"command": [sys.executable, "-c", FRAGILE, "$(POD_IP)"], "livenessProbe": probe},
    )
    _apply(control_plane, pod)

    def pod_ip() -> str:
        running = _container_status(control_plane, namespace, "fragile").get("state", {}).get("running")
        return (
            str(control_plane.get_json("pod", "fragile", "-n", namespace)["status"]["podIP"])
            if running
            else ""
        )

    address = str(wait_for(pod_ip, timeout=60, what="the fragile pod to run"))

    def answering_pid() -> int:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/pid", timeout=2) as response:
                return int(response.read())
        except OSError:
            return 0

    first_pid = int(str(wait_for(answering_pid, timeout=30, what="the fragile server to answer")))
    urllib.request.urlopen(urllib.request.Request(f"http://{address}:8080/break", method="POST"), timeout=5)
    wait_for(
        lambda: _container_status(control_plane, namespace, "fragile").get("restartCount", 0) == 1,
        timeout=30,
        what="the liveness failure to restart the container",
    )
    second_pid = int(str(wait_for(answering_pid, timeout=30, what="the restarted server to answer")))
    assert second_pid != first_pid
    assert not _pid_alive(first_pid)
    assert _container_status(control_plane, namespace, "fragile")["lastState"]["terminated"]["message"] == (
        "liveness probe failed"
    )
