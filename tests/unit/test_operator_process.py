"""The operator process: its command line, and /healthz failing once nothing was reconciled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from deltaforge import cli
from deltaforge.cli import operator_options
from deltaforge_operator.metrics import Action, OperatorMetrics
from deltaforge_operator.process import http_app

SCRIPT = Path(sys.executable).with_name("deltaforge")


def test_operator_command_line() -> None:
    result = subprocess.run(
        [str(SCRIPT), "operator", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--namespace", "--all-namespaces", "--liveness-port", "--resync-interval", "--worker-image",
                 "--worker-http-host", "--cleanup-timeout"):  # fmt: skip
        assert flag in result.stdout
    both = subprocess.run(
        [str(SCRIPT), "operator", "--namespace", "a", "--all-namespaces"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr


ENVIRONMENT = {"DELTAFORGE_CLEANUP_TIMEOUT": "45", "DELTAFORGE_WORKER_HTTP_HOST": "$(POD_IP)"}
FLAGS = ["--cleanup-timeout", "12.5", "--worker-http-host", "::"]


@pytest.mark.parametrize(
    ("argv", "environment", "timeout", "host"),
    [([], {}, 300.0, "0.0.0.0"), ([], ENVIRONMENT, 45.0, "$(POD_IP)"), (FLAGS, ENVIRONMENT, 12.5, "::")],
    ids=["default", "environment", "flag over environment"],
)
def test_cleanup_timeout_and_worker_host_come_from_flag_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], environment: dict[str, str], timeout: float, host: str
) -> None:
    for name in ("DELTAFORGE_CLEANUP_TIMEOUT", "DELTAFORGE_WORKER_HTTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # The parser reads the environment when it is built, as the command line does on each start.
    options = operator_options(cli._build_parser().parse_args(["operator", *argv]))
    assert options.reconciler.cleanup_timeout_seconds == timeout
    assert options.reconciler.worker.http_host == host


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_cleanup_timeout_must_be_positive_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.delenv("DELTAFORGE_CLEANUP_TIMEOUT", raising=False)
    with pytest.raises(SystemExit) as flag:
        cli._build_parser().parse_args(["operator", "--cleanup-timeout", value])
    monkeypatch.setenv("DELTAFORGE_CLEANUP_TIMEOUT", value)
    with pytest.raises(SystemExit) as environment:
        cli._build_parser().parse_args(["operator"])
    assert (flag.value.code, environment.value.code) == (2, 2)
    assert capsys.readouterr().err.count("is not a positive number of seconds") == 2


async def test_healthz_fails_when_nothing_was_reconciled_for_too_long() -> None:
    idle = [5.0]
    metrics = OperatorMetrics()
    metrics.action("shop", Action.CREATE)
    async with TestClient(TestServer(http_app(lambda: idle[0], metrics, limit=60))) as client:
        assert (await client.get("/healthz")).status == 200
        idle[0] = 61.0
        response = await client.get("/healthz")
        assert response.status == 503
        assert "nothing reconciled for 61 s" in await response.text()
        page = await (await client.get("/metrics")).text()
    assert (
        'deltaforge_operator_lifecycle_actions_total{action="create",namespace="shop",result="success"} 1.0'
        in page
    )


def test_per_pipeline_series_go_with_the_pipeline() -> None:
    metrics = OperatorMetrics()
    metrics.observe("shop", "orders", "acme", phase="Running", ready=True, paused=False)
    metrics.observe("shop", "audit", "shop", phase="Paused", ready=False, paused=True)
    sample = metrics.registry.get_sample_value
    assert sample("deltaforge_operator_pipelines", {"namespace": "shop", "phase": "Running"}) == 1
    assert sample("deltaforge_operator_pipelines_paused", {"namespace": "shop"}) == 1
    metrics.forget("shop", "orders")
    assert (
        sample(
            "deltaforge_operator_pipeline_ready",
            {"namespace": "shop", "pipeline": "orders", "tenant": "acme"},
        )
        is None
    )
    assert sample("deltaforge_operator_pipelines", {"namespace": "shop", "phase": "Running"}) == 0
