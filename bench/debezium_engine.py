"""Debezium as a contender: its embedded engine writing every change event to Kafka.

The harness (`bench/debezium/`, one Java class) is compiled with Maven at the start of each run,
outside the measurement. Its runtime jars (Debezium, the PostgreSQL and MySQL connectors, Kafka's
client) are resolved from Maven Central once, into the download cache
(`~/.cache/deltaforge/debezium/<version>/libs`, or `$DELTAFORGE_CACHE`); later builds run Maven
offline. The harness runs one connector in `DebeziumEngine` with the JSON format without schemas,
and a KafkaProducer set up as our worker's sink is (acks=all, idempotent, zstd, linger 5 ms,
256 KiB batches) writes each event's value, keyed by its key, to a fresh topic. Each batch is
acknowledged by Kafka before the engine may commit its offsets, as in Debezium Server.

It is timed exactly as our worker (`bench.delivery`): from spawning `java` until the topic holds
every row, JVM start-up included; then SIGTERM, exit 0, exactly the row count in the topic.
The scenario supplies the connector's properties and, for a connector without a slot, the start
offset written to the engine's offset file before it starts (`Connector`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench import delivery
from bench.measurement import Measurement
from hack.stack import packages, process
from hack.stack.errors import StackError
from hack.stack.packages import Requirement
from hack.stack.service import elapsed

NAME = "debezium"
DEBEZIUM_VERSION = "3.6.1.Final"
PROJECT = Path(__file__).resolve().parent / "debezium"
MAIN_CLASS = "io.deltaforge.bench.DebeziumToKafka"
MARIADB_DRIVER = "io.deltaforge.bench.MariaDbDriver"  # the MySQL connector's JDBC driver on MariaDB
HARNESS_JAR = "debezium-harness-0.jar"  # <artifactId>-<version> of bench/debezium/pom.xml
QUEUE_BATCHES = 4  # max.queue.size in batches: Debezium's own defaults are 2048 and 8192
REQUIREMENTS = (
    Requirement(
        "javac", "openjdk-17-jdk-headless", "the Debezium contender's harness is compiled at run time"
    ),
    Requirement("mvn", "maven", "Maven resolves Debezium's jars and builds the harness"),
)
# As our worker's Kafka sink: acks=all, idempotent, zstd, linger 5 ms, 256 KiB batches.
PRODUCER = {
    "acks": "all",
    "enable.idempotence": "true",
    "compression.type": "zstd",
    "linger.ms": "5",
    "batch.size": str(256 * 1024),
    "client.id": "bench-debezium",
}
OFFSETS_FILE = "offsets.dat"  # relative paths resolve in the harness's working directory


@dataclass(frozen=True)
class Connector:
    """What Debezium reads, from the scenario."""

    properties: dict[str, str]  # the connector's: connector.class, database.*, filters, snapshot.mode
    change_set: delivery.ChangeSet
    # A source partition and offset stored in the offset file before the engine starts:
    # {"partition": {...}, "offset": {...}}, for connectors that keep no position on the server.
    start: dict[str, dict[str, str | int]] | None = None


class Server(Protocol):
    """A database server as the workloads describe it (`PgTarget`, `MysqlTarget`)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def cdc_user(self) -> str: ...
    @property
    def cdc_password(self) -> str: ...


def connection(connector_class: str, server: Server, *, topic_prefix: str) -> dict[str, str]:
    """The properties every connector starts with: its class, the server and the CDC user, and the
    logical name that names its topics and its offsets' source partition."""
    return {
        "connector.class": connector_class,
        "database.hostname": server.host,
        "database.port": str(server.port),
        "database.user": server.cdc_user,
        "database.password": server.cdc_password,
        "topic.prefix": topic_prefix,
    }


def engine_properties(connector: Connector, *, batch_events: int) -> dict[str, str]:
    return {
        "name": "bench",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": OFFSETS_FILE,
        "converter.schemas.enable": "false",  # JSON without schemas, key and value
        "max.batch.size": str(batch_events),  # the worker's batch.maxEvents
        "max.queue.size": str(QUEUE_BATCHES * batch_events),
        "decimal.handling.mode": "string",  # exact decimals as text, as the worker writes them
        **connector.properties,
    }


def require() -> str:
    """Java 17 with `javac`, and Maven, installed from Debian when allowed (as the local stack
    does); the `java` command the harness runs with."""
    try:
        java = packages.ensure_java()
        packages.ensure(REQUIREMENTS)
    except StackError as error:
        raise RuntimeError(f"{NAME}: {error}") from error
    return java


def harness_command(cache_dir: Path, build_dir: Path) -> list[str]:
    """Build the harness into `build_dir` (resolving the jars on the first run) and return the
    command that starts it, without its configuration file."""
    java = require()
    libs = cache_dir / "debezium" / DEBEZIUM_VERSION / "libs"
    maven = [
        "mvn", "-B", "-q", "-f", str(PROJECT / "pom.xml"),
        f"-Ddebezium.version={DEBEZIUM_VERSION}", f"-Dharness.build={build_dir}",
    ]  # fmt: skip
    try:
        if (libs / ".complete").exists():
            process.run(
                [*maven, "-o", "package"],
                what=f"compiling the Debezium harness offline (if Maven's local repository lost "
                f"Debezium's jars or plugins, delete {libs} to resolve them again)",
            )
        else:
            _resolve(maven, libs)
    except StackError as error:
        raise RuntimeError(f"{NAME}: {error}") from error
    return [java, "-cp", f"{build_dir / HARNESS_JAR}{os.pathsep}{libs / '*'}", MAIN_CLASS]


def _resolve(maven: list[str], libs: Path) -> None:
    """Build once online, copying every runtime jar into the cache; later builds are offline."""
    started = time.monotonic()
    print(
        f"[{NAME}] resolving Debezium {DEBEZIUM_VERSION} jars from Maven Central into {libs} "
        "(first run only)...",
        flush=True,
    )
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    process.run(
        [*maven, "package", "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
         "-DincludeScope=runtime"],
        what=f"resolving Debezium {DEBEZIUM_VERSION} with Maven (needs Maven Central the first time)",
    )  # fmt: skip
    (staging / ".complete").write_text(DEBEZIUM_VERSION + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    print(f"[{NAME}] jars ready in {elapsed(started)}", flush=True)


def run(
    connector: Connector, topic: delivery.Topic, *, batch_events: int, cache_dir: Path, directory: Path
) -> Measurement:
    print(f"[{NAME}] compiling the harness with Maven...", flush=True)
    command = harness_command(cache_dir, directory / "build")
    config = {
        "engine": engine_properties(connector, batch_events=batch_events),
        "producer": {"bootstrap.servers": topic.bootstrap, **PRODUCER},
        "topic": topic.name,
        **({"start": connector.start} if connector.start is not None else {}),
    }
    config_path = directory / "debezium.json"
    config_path.write_text(json.dumps(config, indent=2))
    argv = [*command, str(config_path)]
    harness = delivery.Process(
        name=NAME, argv=argv, env=dict(os.environ), directory=directory, log_path=directory / "debezium.log"
    )
    observed = delivery.measure(harness, connector.change_set, topic)
    return observed.measurement(
        NAME,
        connector.change_set,
        topic,
        {
            "debeziumVersion": DEBEZIUM_VERSION,
            "connector": connector.properties["connector.class"],
            "batchMaxEvents": batch_events,
            "format": "JSON without schemas",
            "compression": "zstd",
            "start": connector.start,
            "command": " ".join(argv),
        },
    )
