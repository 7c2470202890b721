"""Apache Kafka 4.x as a single-node KRaft broker and controller, from Maven Central jars, on Java 17."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import sys
import time
import uuid
from pathlib import Path

from hack.stack import packages, process
from hack.stack.config import HOST, Settings
from hack.stack.packages import Requirement
from hack.stack.service import Service, elapsed

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"  # the Log4j 2 line this Kafka release is built against
POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"

# Rewritten at every start. Internal topics get one replica and few partitions: one broker,
# and a quick first consumer group or transaction. PROXIED is a second client listener that
# advertises another port: clients connect to the advertised address from the metadata, not to
# the bootstrap one, so a fault test's TCP proxy can sit between a client and the broker only if
# the broker names the proxy's port (tests/support/tcp_proxy.py).
_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},PROXIED://{host}:{proxied_port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port},PROXIED://{host}:{proxy_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dirs}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""

_LOG4J2_PROPERTIES = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class Kafka(Service):
    name = "kafka"
    command_marker = "kafka.Kafka"
    start_timeout = 120

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def libs_dir(self) -> Path:
        return self.settings.cache_dir / "kafka" / KAFKA_VERSION / "libs"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def requirements(self) -> list[Requirement]:
        needed = []
        if packages.java_command() is None and not os.environ.get("JAVA_HOME"):
            needed.append(packages.JAVA_REQUIREMENT)
        if not (self.libs_dir / ".complete").exists():
            needed.append(
                Requirement("mvn", "maven", "Maven resolves the Kafka broker's jars from Maven Central")
            )
        return needed

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._java_command: str | None = None

    def prepare(self) -> None:
        self._java_command = packages.ensure_java()
        if (self.libs_dir / ".complete").exists():
            return
        super().prepare()
        started = time.monotonic()
        print(
            f"kafka: resolving Kafka {KAFKA_VERSION} jars from Maven Central into {self.libs_dir} (first run only)",
            file=sys.stderr,
            flush=True,
        )
        staging = self.libs_dir.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        process.run(
            [
                "mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
                f"-Dkafka.version={KAFKA_VERSION}", f"-Dlog4j.version={LOG4J_VERSION}",
            ],
            what=f"resolving the Kafka {KAFKA_VERSION} jars with Maven",
        )  # fmt: skip
        (staging / ".complete").write_text(KAFKA_VERSION + "\n")
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.rename(self.libs_dir)
        print(f"kafka: jars ready in {elapsed(started)}", file=sys.stderr, flush=True)

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file)

    def _java(self, main_class: str, *args: str, heap: str) -> list[str]:
        if self._java_command is None:
            self._java_command = packages.ensure_java()
        return [
            self._java_command,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def launch(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        properties = self.home / "server.properties"
        properties.write_text(
            _SERVER_PROPERTIES.format(
                host=HOST,
                port=self.port,
                controller_port=self.settings.kafka_controller_port,
                proxied_port=self.settings.kafka_proxied_port,
                proxy_port=self.settings.kafka_proxy_port,
                log_dirs=self.data_dir,
            )
        )
        (self.home / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = _cluster_id()
            process.run(
                self._java(
                    "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties), "--standalone",
                    heap="256m",
                ),
                what="formatting the Kafka KRaft storage",
            )  # fmt: skip
        pid = process.spawn_detached(
            self._java("kafka.Kafka", str(properties), heap="512m"), self.log_path, cwd=self.home
        )
        self.pid_file.write_text(f"{pid}\n")

    def accepting(self) -> bool:
        """Ask the broker for its API versions: it answers only once its request handlers run."""
        correlation_id = 7
        client_id = b"deltaforge-stack"
        # ApiVersions (key 18) v0: header = api key, version, correlation id, client id.
        body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
        try:
            with socket.create_connection((HOST, self.port), timeout=2) as connection:
                connection.sendall(struct.pack(">i", len(body)) + body)
                header = _recv_exactly(connection, 10)
        except OSError:
            return False
        _size, answered_id, error_code = struct.unpack(">iih", header)
        return bool(answered_id == correlation_id and error_code == 0)

    def environment(self) -> dict[str, str]:
        return {
            "DELTAFORGE_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "DELTAFORGE_KAFKA_PORT": str(self.port),
            "DELTAFORGE_KAFKA_PROXIED_PORT": str(self.settings.kafka_proxied_port),
            "DELTAFORGE_KAFKA_PROXY_PORT": str(self.settings.kafka_proxy_port),
        }

    def stop(self) -> bool:
        stopped = super().stop()
        if stopped:
            self.pid_file.unlink(missing_ok=True)
        return stopped


def _recv_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def _cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's own `Uuid.randomUuid()` makes them: URL-safe base64
    of 16 random bytes that does not start with "-" (one in 64 would, and the storage tool's
    argument parser then takes it for an option: "--cluster-id: expected one argument")."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate
