"""The operator process: kopf's watches, the reconciler, and `/healthz` + `/metrics` on one port.

Runs as one replica (its Deployment uses `Recreate`), so kopf's peering is off (`standalone`):
two operators would both reconcile, which server-side apply makes harmless but wasteful.
`/healthz` fails when no reconciliation or resync pass completed for `stale_after` seconds, so a
wedged event loop or a reconciler that died is restarted by the kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deltaforge_operator.handlers import build_registry, build_settings
from deltaforge_operator.kube import Kube, new_api_client
from deltaforge_operator.metrics import OperatorMetrics
from deltaforge_operator.reconciler import Reconciler, ReconcilerSettings

log = logging.getLogger("deltaforge.operator")


@dataclass(frozen=True)
class OperatorOptions:
    reconciler: ReconcilerSettings
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    watch_timeout: float = 300.0
    stale_after: float | None = None  # default: three resync intervals plus a minute

    @property
    def liveness_limit(self) -> float:
        return self.stale_after or 3 * self.reconciler.resync_seconds + 60


def http_app(idle_seconds: Callable[[], float], metrics: OperatorMetrics, limit: float) -> web.Application:
    """`/healthz` (503 once `idle_seconds()` passes `limit`) and `/metrics`."""

    async def healthz(_request: web.Request) -> web.Response:
        idle = idle_seconds()
        if idle > limit:
            return web.Response(
                status=503, text=f"nothing reconciled for {idle:.0f} s (limit {limit:.0f} s)\n"
            )
        return web.Response(text=f"ok: last pass {idle:.1f} s ago\n")

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def run_operator(options: OperatorOptions) -> None:
    """Until SIGTERM/SIGINT (kopf handles them): watch, reconcile, serve health and metrics."""
    metrics = OperatorMetrics()
    api = new_api_client()
    reconciler = Reconciler(Kube(api), options.reconciler, metrics)
    app = http_app(lambda: time.monotonic() - reconciler.last_activity, metrics, options.liveness_limit)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.http_host, options.http_port).start()
    namespaces = options.reconciler.namespaces
    log.info(
        "operator starting: %s, /healthz and /metrics on %s:%d",
        f"namespaces {', '.join(namespaces)}" if namespaces else "all namespaces",
        options.http_host,
        options.http_port,
    )
    work = asyncio.create_task(reconciler.run(), name="reconciler")
    try:
        await kopf.operator(
            registry=build_registry(reconciler),
            settings=build_settings(watch_timeout=options.watch_timeout),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
        )
    finally:
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await runner.cleanup()
        api.close()  # type: ignore[no-untyped-call]
