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


@dataclass
class OperatorProcess:
    kubeconfig: str
    log_path: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "deltaforge", "operator", "--all-namespaces",
                 "--http-host", "127.0.0.1", "--http-port", str(self.port),
                 "--resync-interval", str(RESYNC_SECONDS), "--watch-timeout", "60",
                 "--worker-image", "deltaforge:e2e", "--log-format", "console"],
                cwd=REPO, env={**os.environ, "KUBECONFIG": self.kubeconfig}, stdin=subprocess.DEVNULL,
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

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@contextmanager
def running_operator(kubeconfig: str, work_dir: Path) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(
        kubeconfig=kubeconfig, log_path=work_dir / "operator.log", port=free_ports(1)[0]
    )
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
