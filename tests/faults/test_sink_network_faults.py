"""The network between the worker and its sink breaks mid-stream, under a steady write load.

The sink connection goes through a TCP proxy of ours (tests/support/tcp_proxy.py): first it
resets every connection, and every new one, for RESET_SECONDS (a sink that keeps crashing); then
it drops everything for BLACKHOLE_SECONDS (a network that loses packets: longer than the Redis
sink's 10 s socket timeout and the Kafka sink's 5 s acknowledgement limit). Each time the worker
must stay up, report itself not ready naming the sink while it lasts, and turn ready again by
itself once the network is back. In the end nothing may be lost, and a duplicate must be an exact
replay, bounded by a batch per repeat; the verifier reads the sink directly, not through the proxy.

Redis: the shared server, behind a proxy on a free port. Kafka: a client connects to the address
the broker advertises, not to the bootstrap one, so the shared broker has a second listener
advertised at the fixed port DELTAFORGE_KAFKA_PROXY_PORT, where this test's proxy listens
(hack/stack/kafka.py). The proxy's schedule is fixed; the seed drives the writer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from hack.stack.config import HOST, Settings
from hack.stack.process import port_open
from tests.fixtures.data_stack import PgDatabase, start_server, unique_name
from tests.fixtures.fault_reports import FaultReport
from tests.support.faults import (
    Reader,
    assert_at_least_once,
    cleanup,
    drain_and_verify,
    fail,
    fault_topics,
    kafka_reader,
    kafka_sink,
    watch_outage,
)
from tests.support.load import LoadWriter, postgres_target
from tests.support.pg_faults import (
    TABLES,
    WORKER_ENV,
    assert_acknowledged_on_stop,
    fault_manifest,
    prepare_source,
)
from tests.support.redis_streams import redis_reader
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from tests.support.worker import Worker, start_worker, write_manifest

RESET_SECONDS = 8.0
BLACKHOLE_SECONDS = 20.0
READY_AGAIN_WITHIN = 90.0  # a blackholed Kafka request is given up only after its 30 s timeout


@dataclass(frozen=True)
class _Sink:
    """The pipeline's sink as the worker reaches it (through `proxy`), and how the verifier reads
    it (directly)."""

    proxy: TcpProxy
    spec: dict[str, Any]
    read: Reader


@contextmanager
def _redis_sink() -> Iterator[_Sink]:
    settings = start_server("redis")
    prefix = unique_name("sinknet")
    streams = [f"{prefix}:{table}" for table in TABLES]
    try:
        with tcp_proxy(HOST, settings.redis_port) as proxy:
            url, stream = f"redis://{HOST}:{proxy.port}/0", f"{prefix}:${{source.table}}"
            sink = {"required": True, "redis": {"url": url, "stream": stream}}
            yield _Sink(proxy, sink, redis_reader(settings.redis_url(), streams))
    finally:
        with redis.Redis.from_url(settings.redis_url()) as client:
            client.delete(*streams)


@contextmanager
def _kafka_sink() -> Iterator[_Sink]:
    settings = start_server("kafka")
    if not port_open(HOST, settings.kafka_proxied_port):
        fail(
            f"the broker has no listener on {HOST}:{settings.kafka_proxied_port} (PROXIED, advertised at "
            f"{settings.kafka_proxy_port}): it was started before hack/stack/kafka.py had it; restart it "
            "once with `python3 -m hack.stack down kafka && python3 -m hack.stack up kafka`"
        )
    bootstrap = settings.kafka_bootstrap
    with (
        fault_topics(bootstrap, "sinknet", TABLES) as (prefix, topics),
        tcp_proxy(HOST, settings.kafka_proxied_port, settings.kafka_proxy_port) as proxy,
    ):
        yield _Sink(proxy, kafka_sink(f"{HOST}:{proxy.port}", prefix), kafka_reader(bootstrap, topics))


def _outage(
    what: str,
    begin: Callable[[], None],
    seconds: float,
    *,
    proxy: TcpProxy,
    worker: Worker,
    writer: LoadWriter,
) -> str:
    """Break the sink connection with `begin` for `seconds` while the writer goes on: the worker
    must stay up and turn unready naming the sink, then be ready again once the proxy forwards.
    Returns a line for the report."""
    rows, began = writer.rows_so_far(), time.monotonic()
    begin()
    unready = watch_outage(worker, writer, seconds, f"the sink connection ({what})", began=began)
    proxy.restore()
    restored = time.monotonic()
    worker.wait_ready(timeout=READY_AGAIN_WITHIN)
    line = (
        f"{what} {seconds:.0f} s, {writer.rows_so_far() - rows} rows written meanwhile: /readyz 503 after "
        f"{unready.after} s ({unready.reason}); ready again {time.monotonic() - restored:.1f} s after restore"
    )
    print(line)
    if unready.after is None:
        fail(f"/readyz stayed 200 while the proxy {what} the sink connection for {seconds:.0f} s", worker)
    if "sink events" not in unready.reason:
        fail(f"the reason must name the sink: {unready.reason}", worker)
    return line


@pytest.mark.parametrize("sink_for", [_redis_sink, _kafka_sink], ids=["redis", "kafka"])
def test_sink_connection_resets_and_blackhole_lose_nothing(
    sink_for: Callable[[], AbstractContextManager[_Sink]],
    pg_database: PgDatabase,
    postgres_server: Settings,
    tmp_path: Path,
    fault_report: FaultReport,
) -> None:
    seed = fault_report.seed
    prepare_source(pg_database)
    writer = LoadWriter(postgres_target(pg_database.admin_dsn), TABLES, seed=seed, rows_per_second=200)
    worker: Worker | None = None
    with sink_for() as sink:
        manifest = fault_manifest(pg_database, postgres_server.postgres_port, sink.spec)
        try:
            worker = start_worker(write_manifest(tmp_path, manifest), env=WORKER_ENV)
            worker.wait_ready(timeout=60)
            writer.start()
            time.sleep(3.0)
            notes: list[str] = []
            for what, begin, seconds in (
                ("reset", sink.proxy.refuse, RESET_SECONDS),
                ("blackholed", sink.proxy.blackhole, BLACKHOLE_SECONDS),
            ):
                notes.append(_outage(what, begin, seconds, proxy=sink.proxy, worker=worker, writer=writer))
                time.sleep(2.0)  # streaming live rows again, after the backlog
            failures = int(worker.metric("deltaforge_sink_failures_total"))
            report, _ = drain_and_verify(
                writer, sink.read, worker, on_stopped=partial(assert_acknowledged_on_stop, pg_database)
            )
        finally:
            cleanup(writer, worker)
    fault_report(
        report,
        peak_rss_mib=worker.peak_rss_mib,
        notes=[
            f"writer {writer.stats}",
            *notes,
            f"sink failures counted: {failures}; proxy connections {sink.proxy.connections}",
        ],
    )
    assert_at_least_once(report, seed)
    # Two outages, each longer than the Redis socket timeout and the Kafka acknowledgement limit.
    assert failures >= 2, f"deltaforge_sink_failures_total counted {failures} failures for two outages"
