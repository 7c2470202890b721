"""The worker's HTTP endpoints: `/metrics`, `/healthz`, `/readyz` and `/status`.

A deliberately small HTTP/1.1 server on asyncio streams (no web framework dependency): four
read-only GET/HEAD routes, one request per connection (`Connection: close`). Every request is
counted and timed with bounded labels (unknown paths and methods collapse to `other`), and a bad
or slow client costs one connection task and never the worker: a malformed head gets 400, a head
that does not arrive in time gets 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, Final, Protocol

import orjson
import structlog
from prometheus_client.exposition import choose_encoder

from deltaforge.observability.logging import get_logger
from deltaforge.observability.metrics import PipelineMetrics

DEFAULT_HOST: Final = "0.0.0.0"
DEFAULT_PORT: Final = 9000
ROUTE_OTHER: Final = "other"
METHOD_OTHER: Final = "other"
ROUTES: Final = ("/metrics", "/healthz", "/readyz", "/status")
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
_ALLOWED: Final = "GET, HEAD"
_MAX_HEAD_BYTES: Final = 16 * 1024
_MAX_LINGER_BYTES: Final = 1024 * 1024
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_JSON: Final = "application/json"


class HealthSource(Protocol):
    """What the runtime tells the probes; each call must be cheap and must not block."""

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason): False only when a restart would help, e.g. the pipeline stopped progressing."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): False while connecting, failing or paused; the reason explains the probe."""
        ...

    def status(self) -> Mapping[str, Any]:
        """A JSON-serialisable snapshot of the pipeline for humans and the operator."""
        ...


class ReadinessTracker:
    """Turns readiness observations into transitions: one log line and one count per flip.

    The runtime calls `update` when its state changes and `/readyz` calls it on every probe, so a
    flip is recorded even when only the probe notices it. The first observation counts as a
    transition, so the log explains the very first failing probe too.
    """

    def __init__(self, metrics: PipelineMetrics, logger: structlog.stdlib.BoundLogger | None = None) -> None:
        self._metrics = metrics
        self._log = logger or get_logger(__name__, pipeline=metrics.pipeline, tenant=metrics.tenant)
        self._lock = threading.Lock()
        self._ready: bool | None = None

    @property
    def ready(self) -> bool | None:
        """The last observed readiness, None before the first observation."""
        return self._ready

    def update(self, ready: bool, reason: str) -> bool:
        """Records an observation; returns True when readiness flipped."""
        with self._lock:
            if self._ready is ready:
                return False
            self._ready = ready
            self._metrics.readiness_changed(ready)
        self._log.info("readiness_changed", ready=ready, reason=reason)
        return True


class _BadRequest(Exception):
    pass


class _Request:
    __slots__ = ("headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.headers = headers


class _Response:
    __slots__ = ("body", "content_type", "extra_headers", "status")

    def __init__(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = _JSON,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.extra_headers = extra_headers


def _json(
    status: HTTPStatus, document: Mapping[str, Any], extra_headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    body = orjson.dumps(document, default=str, option=orjson.OPT_NON_STR_KEYS)
    return _Response(status, body, extra_headers=extra_headers)


def _parse_head(head: bytes) -> _Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _BadRequest("request line must be `METHOD target HTTP/1.x`")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not target.startswith("/") or not version.startswith("HTTP/1."):
        raise _BadRequest("invalid request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _BadRequest("invalid header line")
        headers[name.lower()] = value.strip()
    return _Request(method, target.split("?", 1)[0], headers)


class ObservabilityServer:
    """Serves one pipeline's metrics and probes; `port=0` picks a free port (see `port`)."""

    def __init__(
        self,
        metrics: PipelineMetrics,
        health: HealthSource,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        read_timeout: float = 5.0,
        readiness: ReadinessTracker | None = None,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._host = host
        self._requested_port = port
        self._read_timeout = read_timeout
        self.readiness = readiness or ReadinessTracker(metrics)
        self._log = get_logger(__name__, pipeline=metrics.pipeline, tenant=metrics.tenant)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._routes: dict[str, Callable[[_Request], _Response]] = {
            "/metrics": self._get_metrics,
            "/healthz": self._get_healthz,
            "/readyz": self._get_readyz,
            "/status": self._get_status,
        }

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the observability server is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._requested_port, limit=_MAX_HEAD_BYTES, reuse_address=True
        )
        self._log.info("http_listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> ObservabilityServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            await self._serve_one(reader, writer)
            await self._linger(reader, writer)
        except Exception:
            self._log.exception("http_connection_failed")
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await self._reject(
                writer, HTTPStatus.REQUEST_TIMEOUT, "request head not received in time", started
            )
            return
        except asyncio.LimitOverrunError:
            await self._reject(
                writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large", started
            )
            return
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._reject(writer, HTTPStatus.BAD_REQUEST, "incomplete request head", started)
            return  # otherwise connected and left without a request (a TCP probe): nothing to answer
        try:
            request = _parse_head(head)
        except _BadRequest as exc:
            await self._reject(writer, HTTPStatus.BAD_REQUEST, str(exc), started)
            return
        method = request.method if request.method in _KNOWN_METHODS else METHOD_OTHER
        route = request.path if request.path in self._routes else ROUTE_OTHER
        response = self._dispatch(request, route)
        await self._write(writer, response, head_only=request.method == "HEAD")
        self._record(route, method, response.status, started)

    async def _reject(
        self, writer: asyncio.StreamWriter, status: HTTPStatus, error: str, started: float
    ) -> None:
        await self._write(writer, _json(status, {"error": error}), head_only=False)
        self._record(ROUTE_OTHER, METHOD_OTHER, status, started)

    def _record(self, route: str, method: str, status: HTTPStatus, started: float) -> None:
        seconds = time.perf_counter() - started
        self._metrics.api_request(route, method, status.value, seconds)
        self._log.debug("http_request", route=route, method=method, status=status.value, seconds=seconds)

    def _dispatch(self, request: _Request, route: str) -> _Response:
        handler = self._routes.get(route)
        if handler is None:
            return _json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint; try one of {', '.join(ROUTES)}"})
        if request.method not in ("GET", "HEAD"):
            return _json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"{route} only answers {_ALLOWED}"},
                extra_headers=(("Allow", _ALLOWED),),
            )
        try:
            return handler(request)
        except Exception as exc:
            self._log.exception("http_handler_failed", route=route)
            status = (
                HTTPStatus.INTERNAL_SERVER_ERROR
                if route in ("/metrics", "/status")
                else HTTPStatus.SERVICE_UNAVAILABLE
            )
            return _json(status, {"error": f"{route} failed: {type(exc).__name__}: {exc}"})

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-closes, then reads until the client closes.

        Closing a socket that still holds unread request bytes (a body, an oversized head) makes
        the kernel send a reset, which can destroy the answer before the client has read it.
        """
        if writer.is_closing():
            return
        with contextlib.suppress(OSError, TimeoutError):
            if writer.can_write_eof():
                writer.write_eof()
            received = 0
            async with asyncio.timeout(self._read_timeout):
                while received < _MAX_LINGER_BYTES and (chunk := await reader.read(_MAX_HEAD_BYTES)):
                    received += len(chunk)

    async def _write(self, writer: asyncio.StreamWriter, response: _Response, *, head_only: bool) -> None:
        status = response.status
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.extra_headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        try:
            async with asyncio.timeout(self._read_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            self._log.debug("http_client_gone", status=status.value)

    def _get_metrics(self, request: _Request) -> _Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return _Response(HTTPStatus.OK, encode(self._metrics.registry), content_type)

    def _get_healthz(self, _request: _Request) -> _Response:
        alive, reason = self._health.liveness()
        status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
        return _json(status, {"alive": alive, "reason": reason})

    def _get_readyz(self, _request: _Request) -> _Response:
        ready, reason = self._health.readiness()
        self.readiness.update(ready, reason)
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        return _json(status, {"ready": ready, "reason": reason})

    def _get_status(self, _request: _Request) -> _Response:
        return _json(HTTPStatus.OK, self._health.status())
