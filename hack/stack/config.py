"""Where the local stack lives and how to reach it: the one place for ports, paths and credentials.

Every value can be overridden by an environment variable, so two stacks can run side by side
(for example `DELTAFORGE_STACK_DIR=/tmp/other DELTAFORGE_PG_PORT=35432`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hack.stack.errors import StackError

HOST = "127.0.0.1"

# Test-only credentials of a throwaway local stack; production credentials come from Secrets.
PG_ADMIN_USER = "postgres"
PG_ADMIN_PASSWORD = "postgres"
PG_CDC_USER = "deltaforge"
PG_CDC_PASSWORD = "deltaforge"
MYSQL_ADMIN_USER = "admin"
MYSQL_ADMIN_PASSWORD = "admin"
MYSQL_CDC_USER = "deltaforge"
MYSQL_CDC_PASSWORD = "deltaforge"


def _port(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{variable}={raw!r} is not a TCP port: use a number from 1 to 65535")
    return int(raw)


def cache_dir() -> Path:
    """Downloaded jars and built binaries, by version; outside the checkout so fresh clones reuse it."""
    configured = os.environ.get("DELTAFORGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "deltaforge"


@dataclass(frozen=True)
class Settings:
    """The resolved layout of one local stack."""

    stack_dir: Path
    cache_dir: Path
    postgres_port: int
    mariadb_port: int
    redis_port: int
    kafka_port: int
    kafka_controller_port: int
    kafka_proxied_port: int  # a second client listener, advertised at `kafka_proxy_port`
    kafka_proxy_port: int  # where a test's TCP proxy listens, forwarding to `kafka_proxied_port`
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    controller_manager_port: int

    @classmethod
    def from_environment(cls) -> Settings:
        # One stack per machine by default: its ports are fixed, so its data lives in a
        # machine-wide place that the service users (postgres, mysql) can traverse.
        stack_dir = Path(os.environ.get("DELTAFORGE_STACK_DIR") or "/var/tmp/deltaforge-stack")
        return cls(
            stack_dir=stack_dir,
            cache_dir=cache_dir(),
            postgres_port=_port("DELTAFORGE_PG_PORT", 25432),
            mariadb_port=_port("DELTAFORGE_MYSQL_PORT", 23306),
            redis_port=_port("DELTAFORGE_REDIS_PORT", 26379),
            kafka_port=_port("DELTAFORGE_KAFKA_PORT", 29092),
            kafka_controller_port=_port("DELTAFORGE_KAFKA_CONTROLLER_PORT", 29093),
            kafka_proxied_port=_port("DELTAFORGE_KAFKA_PROXIED_PORT", 29094),
            kafka_proxy_port=_port("DELTAFORGE_KAFKA_PROXY_PORT", 29095),
            etcd_port=_port("DELTAFORGE_ETCD_PORT", 22379),
            etcd_peer_port=_port("DELTAFORGE_ETCD_PEER_PORT", 22380),
            apiserver_port=_port("DELTAFORGE_APISERVER_PORT", 26443),
            controller_manager_port=_port("DELTAFORGE_CONTROLLER_MANAGER_PORT", 20257),
        )

    def service_dir(self, name: str) -> Path:
        return self.stack_dir / name

    # Connection settings, also printed by `python -m hack.stack env`.
    def postgres_dsn(self, database: str = "postgres", *, cdc: bool = False) -> str:
        user, password = (PG_CDC_USER, PG_CDC_PASSWORD) if cdc else (PG_ADMIN_USER, PG_ADMIN_PASSWORD)
        return f"postgresql://{user}:{password}@{HOST}:{self.postgres_port}/{database}"

    def redis_url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.redis_port}/{db}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def kube_dir(self) -> Path:
        """Shared control-plane files: PKI, admin token, kubeconfig."""
        return self.stack_dir / "kube"

    @property
    def kubeconfig(self) -> Path:
        return self.kube_dir / "kubeconfig"
