"""The worker's HTTP endpoints over a real socket: probes, metrics, request accounting, bad clients."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
import structlog

from deltaforge.observability import ObservabilityServer, PipelineMetrics, ReadinessTracker

PT = {"pipeline": "orders", "tenant": "shop"}


class FakeHealth:
    def __init__(self) -> None:
        self.alive = (True, "streaming")
        self.ready = (False, "connecting to postgres at pg:5432")
        self.document: dict[str, Any] = {"phase": "Running", "position": "0/16B6C50", "lagSeconds": 0.4}
        self.fail_liveness = False

    def liveness(self) -> tuple[bool, str]:
        if self.fail_liveness:
            raise RuntimeError("state unavailable")
        return self.alive

    def readiness(self) -> tuple[bool, str]:
        return self.ready

    def status(self) -> Mapping[str, Any]:
        return self.document


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}

    def json(self) -> Any:
        return orjson.loads(self.body)


@pytest.fixture
def metrics() -> PipelineMetrics:
    return PipelineMetrics("orders", tenant="shop", source="postgres")


@pytest.fixture
def health() -> FakeHealth:
    return FakeHealth()


@pytest.fixture
async def server(metrics: PipelineMetrics, health: FakeHealth) -> AsyncIterator[ObservabilityServer]:
    async with ObservabilityServer(metrics, health, host="127.0.0.1", port=0, read_timeout=0.3) as srv:
        yield srv


async def _send(port: int, raw: bytes) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    return Response(data)


async def _request(port: int, method: str, path: str, *headers: str) -> Response:
    head = "\r\n".join([f"{method} {path} HTTP/1.1", "Host: localhost", *headers])
    return await _send(port, f"{head}\r\n\r\n".encode())


def _requests(metrics: PipelineMetrics, route: str, method: str, status: int) -> float | None:
    labels = {
        "pipeline": metrics.pipeline,
        "tenant": metrics.tenant,
        "route": route,
        "method": method,
        "status": str(status),
    }
    return metrics.registry.get_sample_value("deltaforge_api_requests_total", labels)


async def test_metrics_endpoint_serves_the_registry(
    server: ObservabilityServer, metrics: PipelineMetrics
) -> None:
    metrics.source_events("public.orders", 5)
    response = await _request(server.port, "GET", "/metrics")

    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["connection"] == "close"
    assert int(response.headers["content-length"]) == len(response.body)
    text = response.body.decode()
    assert (
        'deltaforge_source_events_total{pipeline="orders",source="postgres",table="public.orders",tenant="shop"} 5.0'
        in text
    )
    assert _requests(metrics, "/metrics", "GET", 200) == 1
    duration = {"pipeline": "orders", "tenant": "shop", "route": "/metrics", "method": "GET"}
    assert metrics.registry.get_sample_value("deltaforge_api_request_duration_seconds_count", duration) == 1


async def test_metrics_negotiates_openmetrics(server: ObservabilityServer) -> None:
    response = await _request(server.port, "GET", "/metrics", "Accept: application/openmetrics-text")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


async def test_metrics_with_a_real_http_client(server: ObservabilityServer) -> None:
    def fetch() -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics?x=1", timeout=5) as reply:
            return reply.status, reply.read()

    status, body = await asyncio.to_thread(fetch)
    assert status == 200
    assert b"deltaforge_pipeline_info" in body


async def test_head_has_headers_and_no_body(server: ObservabilityServer, metrics: PipelineMetrics) -> None:
    response = await _request(server.port, "HEAD", "/metrics")
    assert response.status == 200
    assert int(response.headers["content-length"]) > 0
    assert response.body == b""
    assert _requests(metrics, "/metrics", "HEAD", 200) == 1


async def test_healthz(server: ObservabilityServer, health: FakeHealth) -> None:
    alive = await _request(server.port, "GET", "/healthz")
    assert (alive.status, alive.json()) == (200, {"alive": True, "reason": "streaming"})

    health.alive = (False, "no progress for 300s")
    stuck = await _request(server.port, "GET", "/healthz")
    assert stuck.status == 503
    assert stuck.headers["content-type"] == "application/json"
    assert stuck.json() == {"alive": False, "reason": "no progress for 300s"}

    health.fail_liveness = True
    broken = await _request(server.port, "GET", "/healthz")
    assert broken.status == 503
    assert "state unavailable" in broken.json()["error"]


async def test_readyz_reports_the_reason_and_records_transitions(
    server: ObservabilityServer, metrics: PipelineMetrics, health: FakeHealth
) -> None:
    with structlog.testing.capture_logs() as logs:
        not_ready = await _request(server.port, "GET", "/readyz")
        await _request(server.port, "GET", "/readyz")
        health.ready = (True, "streaming")
        ready = await _request(server.port, "GET", "/readyz")

    assert not_ready.status == 503
    assert not_ready.json() == {"ready": False, "reason": "connecting to postgres at pg:5432"}
    assert (ready.status, ready.json()) == (200, {"ready": True, "reason": "streaming"})
    value = metrics.registry.get_sample_value
    assert value("deltaforge_readiness_transitions_total", {**PT, "to": "not_ready"}) == 1
    assert value("deltaforge_readiness_transitions_total", {**PT, "to": "ready"}) == 1
    assert value("deltaforge_pipeline_ready", PT) == 1
    changes = [(e["ready"], e["reason"]) for e in logs if e["event"] == "readiness_changed"]
    assert changes == [(False, "connecting to postgres at pg:5432"), (True, "streaming")]


def test_readiness_tracker_counts_only_flips(metrics: PipelineMetrics) -> None:
    tracker = ReadinessTracker(metrics)
    initial = tracker.ready
    assert tracker.update(True, "streaming")
    assert not tracker.update(True, "still streaming")
    assert tracker.update(False, "sink kafka unreachable")
    assert (initial, tracker.ready) == (None, False)
    value = metrics.registry.get_sample_value
    assert value("deltaforge_readiness_transitions_total", {**PT, "to": "ready"}) == 1
    assert value("deltaforge_pipeline_ready", PT) == 0


async def test_status_is_the_callback_document(server: ObservabilityServer) -> None:
    response = await _request(server.port, "GET", "/status")
    assert response.status == 200
    assert response.json() == {"phase": "Running", "position": "0/16B6C50", "lagSeconds": 0.4}


async def test_unknown_path_is_404_under_route_other(
    server: ObservabilityServer, metrics: PipelineMetrics
) -> None:
    for path in ("/nope", "/metrics/extra", "/secret-admin"):
        response = await _request(server.port, "GET", path)
        assert response.status == 404
    assert _requests(metrics, "other", "GET", 404) == 3
    assert 'route="/nope"' not in (await _request(server.port, "GET", "/metrics")).body.decode()


async def test_wrong_method_is_405_with_allow(server: ObservabilityServer, metrics: PipelineMetrics) -> None:
    body = b'{"state": "paused"}'
    raw = f"POST /status HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    response = await _send(server.port, raw)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert _requests(metrics, "/status", "POST", 405) == 1

    await _request(server.port, "BREW", "/metrics")
    assert _requests(metrics, "/metrics", "other", 405) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ],
)
async def test_malformed_request_is_400(
    server: ObservabilityServer, metrics: PipelineMetrics, raw: bytes
) -> None:
    response = await _send(server.port, raw)
    assert response.status == 400
    assert "error" in response.json()
    assert _requests(metrics, "other", "other", 400) == 1


async def test_slow_client_times_out_and_the_server_keeps_serving(
    server: ObservabilityServer, metrics: PipelineMetrics
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    await writer.drain()
    meanwhile = await _request(server.port, "GET", "/healthz")
    late = Response(await asyncio.wait_for(reader.read(), timeout=5))
    writer.close()
    await writer.wait_closed()

    assert meanwhile.status == 200
    assert late.status == 408
    assert _requests(metrics, "other", "other", 408) == 1


async def test_oversized_head_is_rejected(server: ObservabilityServer) -> None:
    response = await _send(server.port, b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    assert response.status == 431


async def test_unread_large_body_does_not_reset_the_answer(server: ObservabilityServer) -> None:
    body = b"x" * 500_000
    raw = f"PUT /status HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    response = await _send(server.port, raw)
    assert response.status == 405


async def test_client_that_leaves_without_a_request_is_not_counted(
    server: ObservabilityServer, metrics: PipelineMetrics
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()
    await writer.wait_closed()
    assert (await _request(server.port, "GET", "/healthz")).status == 200
    text = (await _request(server.port, "GET", "/metrics")).body.decode()
    assert 'route="other"' not in text


async def test_concurrent_requests(server: ObservabilityServer, metrics: PipelineMetrics) -> None:
    paths = ["/metrics", "/healthz", "/status", "/readyz"] * 10
    responses = await asyncio.gather(*(_request(server.port, "GET", path) for path in paths))
    assert [r.status for r in responses].count(200) == 30
    assert [r.status for r in responses].count(503) == 10
    assert _requests(metrics, "/metrics", "GET", 200) == 10


async def test_stop_closes_the_port(metrics: PipelineMetrics, health: FakeHealth) -> None:
    server = ObservabilityServer(metrics, health, host="127.0.0.1", port=0)
    await server.start()
    port = server.port
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="not listening"):
        _ = server.port
