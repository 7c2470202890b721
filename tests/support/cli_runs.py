"""Running the real `deltaforge` CLI to a (failing) end, and judging what a user would read.

A misconfiguration must end the worker quickly with exit code 1 and one error that names the
problem: never a traceback, never a retry loop, never a /readyz that says 200.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.worker import SCRIPT, start_worker

CONFIG_ERROR_EXIT = 1
EXIT_TIMEOUT = 45.0  # a config error must end the worker long before this


@dataclass
class Run:
    """One finished CLI run: its exit code, its combined stdout/stderr and the /readyz answers seen."""

    argv: list[str]
    returncode: int
    output: str
    readyz: list[int] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records in the output (other lines, e.g. plain CLI messages, are skipped)."""
        found: list[dict[str, Any]] = []
        for line in self.output.splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "level" in record and "event" in record:
                found.append(record)
        return found

    def errors(self) -> list[dict[str, Any]]:
        return [record for record in self.records() if record["level"] in ("error", "critical")]

    def describe(self) -> str:
        return f"`{' '.join(self.argv)}` exited {self.returncode}; its output:\n{self.output[-6000:]}"


def run_cli(args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    """`deltaforge <args>` to completion, stdout and stderr combined."""
    argv = [str(SCRIPT), *args]
    try:
        completed = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.output or b"").decode(errors="replace")
        pytest.fail(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s:\n{output}", pytrace=False)
    return Run(argv, completed.returncode, completed.stdout.decode(errors="replace"))


def run_worker_to_exit(
    manifest: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = EXIT_TIMEOUT,
    log_name: str = "worker.log",
) -> Run:
    """`deltaforge run manifest` until it exits, probing /readyz all the while.

    A worker still running after `timeout` is killed and the test fails: a misconfiguration
    must fail fast, not retry forever.
    """
    worker = start_worker(manifest, env=env, log_name=log_name)
    argv = [str(SCRIPT), "run", str(manifest)]
    readyz: list[int] = []
    deadline = time.monotonic() + timeout
    while worker.process.poll() is None:
        if time.monotonic() > deadline:
            worker.kill()
            pytest.fail(
                f"the worker was still running {timeout:.0f} s after start; a configuration error must "
                f"end it (retrying forever?). Its output:\n{worker.log()[-6000:]}",
                pytrace=False,
            )
        status, _ = worker.get("/readyz")
        if status:
            readyz.append(status)
        time.sleep(0.02)
    return Run(argv, worker.process.returncode, worker.log(), readyz)


def assert_config_error(run: Run, *fragments: str) -> str:
    """Exit 1, no traceback, exactly one error record containing every fragment, never ready.

    Returns the error message, for the test's own further checks.
    """
    assert "Traceback" not in run.output, f"a traceback reached the user: {run.describe()}"
    assert run.returncode == CONFIG_ERROR_EXIT, (
        f"a configuration error must exit {CONFIG_ERROR_EXIT}: {run.describe()}"
    )
    errors = run.errors()
    assert len(errors) == 1, f"expected exactly one error record, got {len(errors)}: {run.describe()}"
    message = str(errors[0].get("reason") or errors[0]["event"])
    missing = [fragment for fragment in fragments if fragment not in message]
    assert not missing, f"the error {message!r} does not mention {missing}: {run.describe()}"
    assert 200 not in run.readyz, f"/readyz answered 200 before the worker failed: {run.describe()}"
    became_ready = [
        record for record in run.records() if record["event"] == "readiness_changed" and record.get("ready")
    ]
    assert not became_ready, f"the worker reported itself ready: {became_ready}"
    retries = [record for record in run.records() if record["event"] == "source_reconnecting"]
    assert not retries, f"a configuration error was retried as a connection fault: {retries}"
    return message
