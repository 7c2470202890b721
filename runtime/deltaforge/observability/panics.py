"""Count and log every unhandled exception, wherever it escapes.

An exception nobody caught is a bug, not a user error: it must show up in
`deltaforge_panics_total{component}` (so it can be alerted on) and in the structured log with its
traceback (so it can be fixed), instead of a raw traceback on stderr that log aggregation splits
into meaningless lines. Covered: the main thread (`sys.excepthook`), other threads
(`threading.excepthook`), callbacks and unretrieved task exceptions of an asyncio loop, and tasks
started with `spawn`/`watch_task`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Final, TypeVar

import structlog

from deltaforge.observability.metrics import PipelineMetrics

COMPONENT_MAIN: Final = "main"
COMPONENT_ASYNCIO: Final = "asyncio"
PANIC_EVENT: Final = "unhandled_exception"

_T = TypeVar("_T")
_ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]
_ThreadHook = Callable[[threading.ExceptHookArgs], Any]
_background: set[asyncio.Task[Any]] = set()


def install_panic_hooks(
    metrics: PipelineMetrics,
    logger: structlog.stdlib.BoundLogger,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Callable[[], None]:
    """Installs the hooks and returns a function that restores the previous ones.

    Without `loop`, the running loop (if any) gets the asyncio handler; a worker calls this from
    inside its loop. The hooks replace the default printers rather than chaining to them: the
    structured log line already carries the traceback, and a second raw copy would only add noise.
    """
    previous_sys: _ExceptHook = sys.excepthook
    previous_thread: _ThreadHook = threading.excepthook
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    previous_loop_handler = loop.get_exception_handler() if loop is not None else None

    def main_hook(exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous_sys(exc_type, exc, traceback)
            return
        metrics.panic(COMPONENT_MAIN)
        logger.critical(PANIC_EVENT, component=COMPONENT_MAIN, exc_info=(exc_type, exc, traceback))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, SystemExit):
            return  # a thread calling sys.exit() ends quietly, as with the default hook
        component = args.thread.name if args.thread is not None else "thread"
        metrics.panic(component)
        exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
        logger.error(PANIC_EVENT, component=component, exc_info=exc_info)

    def loop_handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        metrics.panic(COMPONENT_ASYNCIO)
        future = context.get("future") or context.get("task")
        logger.error(
            PANIC_EVENT,
            component=COMPONENT_ASYNCIO,
            message=context.get("message", ""),
            task=future.get_name() if isinstance(future, asyncio.Task) else None,
            exc_info=context.get("exception"),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
    if loop is not None:
        loop.set_exception_handler(loop_handler)

    def uninstall() -> None:
        sys.excepthook = previous_sys
        threading.excepthook = previous_thread
        if loop is not None and not loop.is_closed():
            loop.set_exception_handler(previous_loop_handler)

    return uninstall


def watch_task(
    task: asyncio.Task[_T],
    metrics: PipelineMetrics,
    logger: structlog.stdlib.BoundLogger,
    *,
    component: str = COMPONENT_ASYNCIO,
) -> asyncio.Task[_T]:
    """Counts and logs the task's exception as soon as it fails, not when it is garbage collected.

    Meant for long-lived or fire-and-forget tasks whose failure is a bug; an awaiting caller still
    receives the exception. Cancellation is not a failure.
    """

    def report(done: asyncio.Task[_T]) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None:
            return
        metrics.panic(component)
        logger.error(PANIC_EVENT, component=component, task=done.get_name(), exc_info=exc)

    task.add_done_callback(report)
    return task


def spawn(
    coro: Coroutine[Any, Any, _T],
    metrics: PipelineMetrics,
    logger: structlog.stdlib.BoundLogger,
    *,
    name: str | None = None,
    component: str = COMPONENT_ASYNCIO,
) -> asyncio.Task[_T]:
    """Starts a watched task and keeps a strong reference, since the loop holds tasks weakly."""
    task = watch_task(asyncio.create_task(coro, name=name), metrics, logger, component=component)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
