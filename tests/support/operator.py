"""`deltaforge operator` as a process of its own for end-to-end tests, with its /metrics and /healthz."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hack.stack.process import free_ports

REPO = Path(__file__).resolve().parents[2]
RESYNC_SECONDS = 10
CLEANUP_TIMEOUT_SECONDS = 30  # bounds a deletion's slot cleanup; short, so tests of it are too


@dataclass
class OperatorProcess:
    kubeconfig: str
    log_path: Path
    port: int
    resync_seconds: float = RESYNC_SECONDS
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "deltaforge", "operator", "--all-namespaces",
                 "--http-host", "127.0.0.1", "--http-port", str(self.port),
                 "--resync-interval", str(self.resync_seconds), "--watch-timeout", "60",
                 "--worker-image", "deltaforge:e2e", "--log-format", "console"],
                cwd=REPO, stdin=subprocess.DEVNULL,
                env={**os.environ, "KUBECONFIG": self.kubeconfig,
                     "DELTAFORGE_CLEANUP_TIMEOUT": str(CLEANUP_TIMEOUT_SECONDS)},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.get("/healthz")[0] != 200:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the operator did not come up:\n{self.log_tail()}", pytrace=False)
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

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
        status, text = self.get("/metrics")
        assert status == 200, text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def memory_mib(self) -> tuple[float, float]:
        """(resident, peak resident) memory of the operator process in MiB, from /proc."""
        assert self.popen is not None
        lines = Path(f"/proc/{self.popen.pid}/status").read_text().splitlines()
        kib = {name: int(value.split()[0]) for name, value in (line.split(":", 1) for line in lines)
               if name in ("VmRSS", "VmHWM")}  # fmt: skip
        return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@contextmanager
def running_operator(
    kubeconfig: str, work_dir: Path, *, resync_seconds: float = RESYNC_SECONDS
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(
        kubeconfig=kubeconfig, log_path=work_dir / "operator.log", port=free_ports(1)[0],
        resync_seconds=resync_seconds,
    )  # fmt: skip
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
