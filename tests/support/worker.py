"""Running a real `deltaforge run` worker process in tests, and reading what it wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from bench import procstat
from hack.stack.process import free_ports

SCRIPT = Path(sys.executable).with_name("deltaforge")


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    peak_rss_mib: float = 0.0  # VmHWM, read before every stop or kill (fault reports print it)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError as error:
            return 0, str(error)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """The sum of every sample of the metric family `name` on /metrics (0 if none is there yet)."""
        code, exposition = self.get("/metrics")
        if code != 200:
            pytest.fail(f"/metrics answered {code}: {exposition[:500]}\n{self.log()[-4000:]}", pytrace=False)
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in exposition.splitlines()
            if line.startswith((f"{name}{{", f"{name} "))
        )

    def sample_peak_rss(self) -> None:
        """Keep the process's peak RSS so far in `peak_rss_mib`: VmHWM covers the whole life of
        the process but vanishes with it, so it is read while the process still runs."""
        with contextlib.suppress(OSError, ValueError):  # already gone, or a zombie without memory
            self.peak_rss_mib = max(self.peak_rss_mib, procstat.peak_rss_mib(self.process.pid))

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the worker exited with {self.process.returncode}:\n{self.log()[-4000:]}", pytrace=False
                )
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        pytest.fail(
            f"the worker was not ready within {timeout} s: {self.get('/readyz')}\n{self.log()[-4000:]}",
            pytrace=False,
        )

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.sample_peak_rss()
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the worker ignored SIGTERM for {timeout} s:\n{self.log()[-4000:]}", pytrace=False)

    def kill(self) -> None:
        self.sample_peak_rss()
        self.process.kill()
        self.process.wait()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / "pipeline.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def start_worker(
    manifest: Path, *, env: dict[str, str] | None = None, log_name: str = "worker.log"
) -> Worker:
    port = free_port()
    log_path = manifest.parent / log_name
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(SCRIPT), "run", str(manifest), "--http-host", "127.0.0.1", "--http-port", str(port)],
            cwd=manifest.parent,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Worker(process, port, log_path)


@contextmanager
def running_worker(manifest: Path, *, env: dict[str, str] | None = None) -> Iterator[Worker]:
    worker = start_worker(manifest, env=env)
    try:
        worker.wait_ready()
        yield worker
    finally:
        if worker.process.poll() is None:
            worker.stop()


async def _consume(
    bootstrap: str, topics: list[str], expected: int, within: float
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )  # fmt: skip
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + within
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def consume(
    bootstrap: str, topics: list[str], expected: int, timeout: float = 60
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` from the start, once `expected` arrived or `timeout` passed."""
    return asyncio.run(_consume(bootstrap, topics, expected, timeout))


def values(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records if record.value is not None]
