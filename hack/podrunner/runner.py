"""The pod runner's loop: bind, start, probe, restart and stop pods, and report their status.

Level-based like a kubelet: every tick lists the pods it is responsible for and converges local
processes and reported status toward them, so a missed change is corrected on the next tick.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from hack.podrunner import probes, processes, spec, status
from hack.podrunner.kube import Kube

Json = dict[str, Any]
log = logging.getLogger("podrunner")

FIRST_POD_ADDRESS = ipaddress.IPv4Address("127.0.10.1")
LAST_POD_ADDRESS = ipaddress.IPv4Address("127.0.255.254")
# Shorter than the kubelet's 10 s..5 min so tests see restarts quickly.
RESTART_BACKOFF_START, RESTART_BACKOFF_MAX = 1.0, 30.0
STOP_GRACE_CAP = 30.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRun:
    spec: Json
    state: status.ContainerState
    popen: subprocess.Popen[bytes] | None = None
    readiness: probes.Probe | None = None
    liveness: probes.Probe | None = None
    next_start: float = 0.0
    backoff: float = RESTART_BACKOFF_START
    ever_started: bool = False


@dataclass
class PodRun:
    pod: Json
    ip: str
    directory: Path
    start_time: str
    containers: list[ContainerRun] = field(default_factory=list)
    reported: Json | None = None

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    @property
    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))

    @property
    def grace_seconds(self) -> float:
        return min(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), STOP_GRACE_CAP)


class PodRunner:
    def __init__(
        self, kube: Kube, *, node: str, selector: str, work_dir: Path, api_host: str, api_port: int
    ) -> None:
        self.kube, self.node, self.selector, self.work_dir = kube, node, selector, work_dir
        self.runs: dict[str, PodRun] = {}
        self.probe_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")])
        self.base_env = {
            "PATH": path,
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": api_host,
            "KUBERNETES_SERVICE_PORT": str(api_port),
            "KUBERNETES_PORT": f"tcp://{api_host}:{api_port}",
        }

    def register_node(self) -> None:
        self.kube.ensure_node(self.node, "127.0.0.1", {"deltaforge.io/pod-runner": "true"})
        log.info("node %s registered; running pods matching %r", self.node, self.selector)

    # --- one pass -------------------------------------------------------------------------
    def tick(self) -> None:
        seen = set()
        for pod in self.kube.list_pods(self.selector):
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            deleting = pod["metadata"].get("deletionTimestamp") is not None
            assigned = pod["spec"].get("nodeName")
            if not assigned:
                if not deleting:
                    self._bind(pod)
                continue
            if assigned != self.node:
                continue
            run = self.runs.get(uid)
            if deleting:
                if run is not None:
                    self._stop_pod(run, "pod deleted")
                self.kube.finish_deletion(pod)
                continue
            if run is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                run = self._adopt(pod)
            run.pod = pod
            run.pod.setdefault("status", {})["podIP"] = run.ip
            self._sync(run)
        for uid in [uid for uid in self.runs if uid not in seen]:
            self._stop_pod(self.runs[uid], "pod gone from the API server")

    def _bind(self, pod: Json) -> None:
        try:
            self.kube.bind(pod, self.node)
            log.info("bound %s/%s to %s", pod["metadata"]["namespace"], pod["metadata"]["name"], self.node)
        except ApiException as error:
            log.warning("binding %s failed: %s", pod["metadata"]["name"], error.reason)

    def _adopt(self, pod: Json) -> PodRun:
        metadata = pod["metadata"]
        directory = (
            self.work_dir / "pods" / f"{metadata['namespace']}_{metadata['name']}_{metadata['uid'][:8]}"
        )
        for sub in ("volumes", "logs", "home"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        run = PodRun(pod=pod, ip=self._address_for(pod), directory=directory, start_time=_now())
        run.containers = [
            ContainerRun(
                spec=container,
                state=status.ContainerState(name=container["name"], image=container.get("image", "")),
            )
            for container in pod["spec"]["containers"]
        ]
        self.runs[metadata["uid"]] = run
        log.info("pod %s/%s gets address %s", metadata["namespace"], metadata["name"], run.ip)
        return run

    def _address_for(self, pod: Json) -> str:
        taken = {run.ip for run in self.runs.values()}
        previous = pod.get("status", {}).get("podIP")
        if (
            previous
            and previous not in taken
            and FIRST_POD_ADDRESS <= ipaddress.IPv4Address(previous) <= LAST_POD_ADDRESS
        ):
            return str(previous)
        candidate = FIRST_POD_ADDRESS
        while str(candidate) in taken or candidate.packed[-1] in (0, 255):
            candidate += 1
            if candidate > LAST_POD_ADDRESS:
                raise RuntimeError("the pod runner ran out of loopback addresses")
        return str(candidate)

    # --- containers ----------------------------------------------------------------------
    def _sync(self, run: PodRun) -> None:
        now = time.monotonic()
        for container in run.containers:
            if container.popen is not None and container.popen.poll() is not None:
                self._record_exit(run, container, container.popen.returncode, "")
            if container.popen is None and now >= container.next_start and self._should_start(run, container):
                self._start(run, container)
        self._probe(run)
        self._report(run)

    def _should_start(self, run: PodRun, container: ContainerRun) -> bool:
        if not container.ever_started:
            return True
        if run.restart_policy == "Always":
            return True
        return run.restart_policy == "OnFailure" and container.state.exit_code not in (0, None)

    def _start(self, run: PodRun, container: ContainerRun) -> None:
        try:
            launch = spec.launch_for(
                run.pod,
                container.spec,
                self.kube,
                {
                    **self.base_env,
                    "HOSTNAME": run.pod["metadata"]["name"],
                    "HOME": str(run.directory / "home"),
                },
            )
            self._write_volumes(run, launch)
        except spec.ContainerConfigError as error:
            container.state.state, container.state.reason, container.state.message = (
                "waiting",
                error.reason,
                str(error),
            )
            container.next_start = time.monotonic() + RESTART_BACKOFF_START
            return
        log_path = run.directory / "logs" / f"{container.spec['name']}.log"
        container.popen = processes.start(launch, run.directory / "volumes", run.directory / "home", log_path)
        if container.ever_started:
            container.state.restart_count += 1
        container.ever_started = True
        started = time.monotonic()
        state = container.state
        state.state, state.reason, state.message = "running", "", ""
        state.started_at, state.pid, state.ready = _now(), container.popen.pid, False
        readiness, liveness = container.spec.get("readinessProbe"), container.spec.get("livenessProbe")
        container.readiness = (
            probes.Probe.start(readiness, started_at=started, initially_healthy=False) if readiness else None
        )
        container.liveness = (
            probes.Probe.start(liveness, started_at=started, initially_healthy=True) if liveness else None
        )
        state.ready = container.readiness is None
        log.info(
            "%s: started %s (pid %d, restarts %d)",
            run.key,
            container.spec["name"],
            container.popen.pid,
            state.restart_count,
        )

    def _write_volumes(self, run: PodRun, launch: spec.Launch) -> None:
        for volume in run.pod["spec"].get("volumes", []):
            files = spec.volume_files(run.pod, volume, self.kube)
            target = run.directory / "volumes" / volume["name"]
            if files is None:
                target.mkdir(parents=True, exist_ok=True)
                continue
            shutil.rmtree(target, ignore_errors=True)
            for relative, (content, mode) in files.items():
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                path.chmod(mode)
            target.mkdir(parents=True, exist_ok=True)

    def _record_exit(self, run: PodRun, container: ContainerRun, code: int, message: str) -> None:
        state = container.state
        state.state, state.exit_code, state.finished_at = "terminated", code, _now()
        state.reason = "Completed" if code == 0 else "Error"
        state.message, state.ready, state.pid = message, False, None
        state.last_terminated = state.terminated()
        container.popen, container.readiness, container.liveness = None, None, None
        container.next_start = time.monotonic() + container.backoff
        container.backoff = min(container.backoff * 2, RESTART_BACKOFF_MAX)
        log.info("%s: %s exited with %d %s", run.key, container.spec["name"], code, message)

    def _probe(self, run: PodRun) -> None:
        now = time.monotonic()
        due = [
            (container, kind, probe)
            for container in run.containers
            if container.popen is not None
            for kind, probe in (("readiness", container.readiness), ("liveness", container.liveness))
            if probe is not None and probe.due(now)
        ]
        results = self.probe_pool.map(
            lambda item: probes.check(item[2].spec, run.ip, item[0].spec, item[2].timeout), due
        )
        for (container, kind, probe), succeeded in zip(due, list(results), strict=True):
            if not probe.record(succeeded, time.monotonic()):
                continue
            if kind == "readiness":
                container.state.ready = probe.healthy
                log.info("%s: %s readiness -> %s", run.key, container.spec["name"], probe.healthy)
            elif not probe.healthy and container.popen is not None:
                log.info("%s: %s failed its liveness probe; restarting it", run.key, container.spec["name"])
                processes.stop(container.popen, run.grace_seconds)
                self._record_exit(run, container, container.popen.returncode, "liveness probe failed")

    def _report(self, run: PodRun) -> None:
        states = [container.state for container in run.containers]
        reported = status.pod_status(
            run.pod.get("status", {}), states, restart_policy=run.restart_policy,
            pod_ip=run.ip, host_ip="127.0.0.1", start_time=run.start_time, now=_now(),
        )  # fmt: skip
        if reported == run.reported:
            return
        try:
            self.kube.patch_status(run.pod, reported)
            run.reported = reported
        except ApiException as error:
            if error.status != 404:
                log.warning("%s: status update failed: %s", run.key, error.reason)

    # --- stopping ------------------------------------------------------------------------
    def _stop_pod(self, run: PodRun, why: str) -> None:
        for container in run.containers:
            if container.popen is not None:
                processes.stop(container.popen, run.grace_seconds)
                container.popen = None
        self.runs.pop(run.pod["metadata"]["uid"], None)
        log.info("%s: stopped (%s)", run.key, why)

    def stop_all(self) -> None:
        """On shutdown: every container gets SIGTERM at once, then SIGKILL after the grace cap."""
        running = [c.popen for run in self.runs.values() for c in run.containers if c.popen is not None]
        for popen in running:
            processes.signal_group(popen, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_CAP
        for popen in running:
            processes.stop(popen, max(deadline - time.monotonic(), 0.1))
        self.runs.clear()
        self.probe_pool.shutdown(wait=False)
