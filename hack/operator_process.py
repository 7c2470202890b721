"""`deltaforge operator` as a process of its own, with its /metrics and /healthz.

The end-to-end tests (tests/k8s) and the `operator-scale` benchmark both run the operator this
way: a separate process measures its own memory and CPU, and can be killed and restarted, which
an operator inside the test process could not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from hack.stack.process import free_ports

REPO = Path(__file__).resolve().parents[1]
RESYNC_SECONDS = 10
CLEANUP_TIMEOUT_SECONDS = 30  # bounds a deletion's slot cleanup; short, so tests of it are too
START_TIMEOUT_SECONDS = 60


class OperatorFailed(RuntimeError):
    """The operator did not come up, or its /metrics did not answer; the message holds its log tail."""


@dataclass
class OperatorProcess:
    kubeconfig: str
    log_path: Path
    port: int
    resync_seconds: float = RESYNC_SECONDS
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise OperatorFailed("the operator was never started")
        return self.popen.pid

    def start(self) -> None:
        scope = [arg for namespace in self.namespaces for arg in ("--namespace", namespace)]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "deltaforge", "operator", *(scope or ["--all-namespaces"]),
                 "--http-host", "127.0.0.1", "--http-port", str(self.port),
                 "--resync-interval", str(self.resync_seconds), "--watch-timeout", "60",
                 "--worker-image", "deltaforge:e2e", "--log-format", "console",
                 # The pod runner's "pods" share this machine's network: each worker binds its own
                 # loopback address, as hack/podrunner/chart-values.yaml has the chart's operator do.
                 "--worker-http-host", "$(POD_IP)",
                 "--cleanup-timeout", str(CLEANUP_TIMEOUT_SECONDS)],
                cwd=REPO, stdin=subprocess.DEVNULL,
                env={**os.environ, "KUBECONFIG": self.kubeconfig},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.get("/healthz")[0] != 200:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise OperatorFailed(f"the operator did not come up:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError as error:
            return 0, str(error)

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every sample of `name` whose labels include `labels`."""
        status, text = self.get("/metrics")
        if status != 200:
            raise OperatorFailed(f"GET /metrics answered {status}: {text}")
        return [
            (sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
        return sum(value for _, value in self.samples(name, **labels))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def memory_mib(self) -> tuple[float, float]:
        """(resident, peak resident) memory of the operator process in MiB, from /proc."""
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        kib = {name: int(value.split()[0]) for name, value in (line.split(":", 1) for line in lines)
               if name in ("VmRSS", "VmHWM")}  # fmt: skip
        return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def paused_pipeline(name: str) -> dict[str, Any]:
    """A Pipeline the operator reconciles fully without a worker or a database.

    Paused, so its Deployment has no replicas: no pod is created for any pod runner to start, and
    reconciling it (its eight children applied, its status written) is the operator's work alone.
    Its source host does not exist and its Secret is missing; the operator never connects to either.
    """
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "state": "paused",
            "source": {"postgres": {
                "host": "pg.example", "database": "shop", "tables": ["public.orders"], "user": "cdc",
                "password": {"secretKeyRef": {"name": "pg-cdc", "key": "password"}},
            }},
            "sinks": [{"name": "events", "kafka": {"bootstrapServers": "kafka:9092", "topic": f"{name}.orders"}}],
        },
    }  # fmt: skip


@contextmanager
def running_operator(
    kubeconfig: str,
    work_dir: Path,
    *,
    resync_seconds: float = RESYNC_SECONDS,
    namespaces: Sequence[str] = (),
) -> Iterator[OperatorProcess]:
    """The operator started (its /healthz answering) in `work_dir`, stopped on exit whatever happened.

    `namespaces` limits it to those (`--namespace`); by default it watches all of them.
    """
    operator = OperatorProcess(
        kubeconfig=kubeconfig, log_path=work_dir / "operator.log", port=free_ports(1)[0],
        resync_seconds=resync_seconds, namespaces=tuple(namespaces),
    )  # fmt: skip
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
