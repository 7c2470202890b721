"""The demo's side of the local control plane: kubectl and helm, the examples, the pod runner."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import hack.stack
from hack.stack import process
from hack.stack.config import Settings

REPO = Path(__file__).resolve().parents[2]
RELEASE, OPERATOR_NAMESPACE = "deltaforge", "deltaforge-system"
POD_RUNNER_NODE = "deltaforge-demo"


@dataclass(frozen=True)
class Example:
    """A Pipeline of examples/: what the demo applies, and prepares the database for."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, name: str) -> Example:
        path = REPO / "examples" / name
        return cls(path, yaml.safe_load(path.read_text()))

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.manifest["metadata"]["namespace"])

    @property
    def source(self) -> dict[str, Any]:
        """The settings of its source, whichever kind it is."""
        [settings] = self.manifest["spec"]["source"].values()
        return dict(settings)


@dataclass(frozen=True)
class Cluster:
    """kubectl and helm of the local control plane (KUBECONFIG is set for the whole process)."""

    kubectl_path: str
    helm_path: str
    pod_runner_dir: Path

    @classmethod
    def from_stack(cls, settings: Settings) -> Cluster:
        environment = hack.stack.environment(["k8s"])
        os.environ["KUBECONFIG"] = environment["KUBECONFIG"]
        directory = settings.stack_dir / "demo" / "podrunner"
        return cls(environment["DELTAFORGE_KUBECTL"], environment["DELTAFORGE_HELM"], directory)

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        return process.run([self.kubectl_path, *args], what=f"kubectl {args[0]}", input_text=input_text)

    def helm(self, *args: str) -> str:
        return process.run([self.helm_path, *args], what=f"helm {args[0]}")

    def apply(self, *objects: dict[str, Any]) -> str:
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        return self.kubectl("apply", "-f", "-", input_text=document)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def pod_log(self, namespace: str, selector: str, container: str) -> str:
        """Where the pod runner writes a pod's container log (`kubectl logs` needs a kubelet)."""
        pods = self.get("pods", "-n", namespace, "-l", selector)["items"]
        directory = (
            f"{namespace}_{pods[0]['metadata']['name']}_{pods[0]['metadata']['uid'][:8]}"
            if pods
            else f"{namespace}_*"
        )
        return str(self.pod_runner_dir / "pods" / directory / "logs" / f"{container}.log")

    # --- the pod runner ----------------------------------------------------------------------
    def start_pod_runner(self, examples: list[Example]) -> None:
        """The demo's own pod runner, in the background, unless it runs already.

        It runs only the demo's pods (the release's operator, and the workers, which carry their
        Pipeline's name as app.kubernetes.io/instance), so it never takes a pod of a test that
        runs on the same stack.
        """
        pid_file = self.pod_runner_dir / "podrunner.pid"
        running = process.read_pid(pid_file)
        if process.pid_alive(running, POD_RUNNER_NODE):
            print(f"    running already (pid {running}); its pods' logs: {self.pod_runner_dir}/pods/")
            return
        self.pod_runner_dir.mkdir(parents=True, exist_ok=True)
        instances = ",".join([RELEASE, *(example.name for example in examples)])
        selector = f"app.kubernetes.io/part-of=deltaforge,app.kubernetes.io/instance in ({instances})"
        log = self.pod_runner_dir / "podrunner.log"
        pid = process.spawn_detached(
            [sys.executable, "-m", "hack.podrunner", "--kubeconfig", os.environ["KUBECONFIG"],
             "--work-dir", str(self.pod_runner_dir), "--node", POD_RUNNER_NODE, "--selector", selector],
            log, cwd=REPO,
        )  # fmt: skip
        pid_file.write_text(f"{pid}\n")
        process.wait_until(
            lambda: any(node["metadata"]["name"] == POD_RUNNER_NODE for node in self.get("nodes")["items"]),
            timeout=30, still_starting=lambda: process.pid_alive(pid, POD_RUNNER_NODE),
            what="the pod runner", log_path=log,
        )  # fmt: skip
        print(
            f"    started (pid {pid}, node {POD_RUNNER_NODE}); log {log}, its pods' logs in {self.pod_runner_dir}/pods/"
        )

    def stop_pod_runner(self) -> str:
        """SIGTERM: the pod runner stops every container it runs, then exits; its Node goes too."""
        pid = process.read_pid(self.pod_runner_dir / "podrunner.pid")
        if pid is not None:
            process.stop_pid(pid, POD_RUNNER_NODE, sig=signal.SIGTERM, timeout=60)
        return self.kubectl("delete", "node", POD_RUNNER_NODE, "--ignore-not-found")
