"""Unhandled exceptions in the main thread, other threads and asyncio are counted and logged."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
import structlog

from deltaforge.observability import PipelineMetrics, get_logger, install_panic_hooks, spawn

PT = {"pipeline": "orders", "tenant": "shop"}


@pytest.fixture
def metrics() -> PipelineMetrics:
    return PipelineMetrics("orders", tenant="shop", source="postgres")


@pytest.fixture
def logs() -> Iterator[list[structlog.typing.EventDict]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def _panics(metrics: PipelineMetrics, component: str) -> float | None:
    return metrics.registry.get_sample_value("deltaforge_panics_total", {**PT, "component": component})


def _install(metrics: PipelineMetrics, loop: asyncio.AbstractEventLoop | None = None) -> Callable[[], None]:
    return install_panic_hooks(metrics, get_logger("deltaforge.test"), loop)


def test_exception_in_a_thread_is_counted_and_logged(
    metrics: PipelineMetrics, logs: list[structlog.typing.EventDict]
) -> None:
    def crash() -> None:
        raise RuntimeError("bug in reader")

    uninstall = _install(metrics)
    try:
        thread = threading.Thread(target=crash, name="binlog-reader")
        thread.start()
        thread.join()
        quiet = threading.Thread(target=sys.exit, name="exits-quietly")
        quiet.start()
        quiet.join()
    finally:
        uninstall()

    assert _panics(metrics, "binlog-reader") == 1
    assert _panics(metrics, "exits-quietly") is None
    [entry] = [e for e in logs if e["event"] == "unhandled_exception"]
    assert entry["component"] == "binlog-reader"
    assert entry["log_level"] == "error"
    exc_type, exc, traceback = entry["exc_info"]
    assert exc_type is RuntimeError
    assert str(exc) == "bug in reader"
    assert traceback is not None


def test_main_thread_exception_is_counted(
    metrics: PipelineMetrics, logs: list[structlog.typing.EventDict]
) -> None:
    uninstall = _install(metrics)
    try:
        try:
            raise ValueError("bug in main")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        uninstall()

    assert _panics(metrics, "main") == 1
    assert [(e["event"], e["log_level"], e["component"]) for e in logs] == [
        ("unhandled_exception", "critical", "main")
    ]


def test_uninstall_restores_the_previous_hooks(metrics: PipelineMetrics) -> None:
    before = (sys.excepthook, threading.excepthook)
    uninstall = _install(metrics)
    assert (sys.excepthook, threading.excepthook) != before
    uninstall()
    assert (sys.excepthook, threading.excepthook) == before


async def test_asyncio_loop_errors_are_counted(
    metrics: PipelineMetrics, logs: list[structlog.typing.EventDict]
) -> None:
    def crash() -> None:
        raise KeyError("bug in callback")

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    uninstall = _install(metrics)
    try:
        loop.call_soon(crash)
        await asyncio.sleep(0.01)
    finally:
        uninstall()

    assert loop.get_exception_handler() is previous
    assert _panics(metrics, "asyncio") == 1
    [entry] = logs
    assert entry["component"] == "asyncio"
    assert isinstance(entry["exc_info"], KeyError)


async def test_spawned_task_failure_is_counted_once_and_still_raised(
    metrics: PipelineMetrics, logs: list[structlog.typing.EventDict]
) -> None:
    async def crash() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("bug in coordinator")

    uninstall = _install(metrics, asyncio.get_running_loop())
    try:
        task = spawn(
            crash(), metrics, get_logger("deltaforge.test"), name="coordinator", component="coordinator"
        )
        with pytest.raises(RuntimeError, match="bug in coordinator"):
            await task
        await asyncio.sleep(0)
    finally:
        uninstall()

    assert _panics(metrics, "coordinator") == 1
    assert _panics(metrics, "asyncio") is None
    [entry] = logs
    assert (entry["event"], entry["task"]) == ("unhandled_exception", "coordinator")


async def test_cancelled_or_successful_tasks_are_not_panics(metrics: PipelineMetrics) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def fine() -> int:
        return 7

    logger = get_logger("deltaforge.test")
    cancelled = spawn(forever(), metrics, logger)
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await spawn(fine(), metrics, logger) == 7
    assert _panics(metrics, "asyncio") is None
