"""`up`, `down`, `status` and `env` over the stack's services, serialized by a lock file."""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from hack.stack import packages
from hack.stack.config import Settings
from hack.stack.controlplane import Etcd, KubeApiserver, KubeControllerManager
from hack.stack.errors import StackError
from hack.stack.kafka import Kafka
from hack.stack.mariadb import MariaDB
from hack.stack.postgres import Postgres
from hack.stack.redis import Redis
from hack.stack.service import Service, elapsed

# In start order: a service comes after the services it depends on.
SERVICE_TYPES: dict[str, type[Service]] = {
    "postgres": Postgres,
    "mariadb": MariaDB,
    "redis": Redis,
    "kafka": Kafka,
    "etcd": Etcd,
    "kube-apiserver": KubeApiserver,
    "kube-controller-manager": KubeControllerManager,
}
SERVICE_NAMES = tuple(SERVICE_TYPES)
GROUPS = {
    "data": ("postgres", "mariadb", "redis", "kafka"),
    "k8s": ("etcd", "kube-apiserver", "kube-controller-manager"),
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def services(
    names: Sequence[str] = (), settings: Settings | None = None, *, with_dependencies: bool = True
) -> list[Service]:
    """The named services or groups (all by default), with their dependencies, in start order."""
    unknown = [name for name in names if name not in SERVICE_TYPES and name not in GROUPS]
    if unknown:
        choices = ", ".join([*SERVICE_NAMES, *GROUPS])
        raise StackError(f"unknown service {', '.join(unknown)}: choose from {choices}")
    settings = settings or Settings.from_environment()
    chosen = {member for name in names for member in GROUPS.get(name, (name,))} or set(SERVICE_NAMES)
    pending = list(chosen) if with_dependencies else []
    while pending:
        for dependency in SERVICE_TYPES[pending.pop()].depends_on:
            if dependency not in chosen:
                chosen.add(dependency)
                pending.append(dependency)
    return [SERVICE_TYPES[name](settings) for name in SERVICE_NAMES if name in chosen]


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One `up`/`down` at a time per stack, so parallel test runs do not start servers twice."""
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    settings.stack_dir.chmod(0o755)
    with open(settings.stack_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prepare(chosen: Sequence[Service]) -> None:
    """Install every missing package in one apt run, then let each service fetch its extras."""
    packages.ensure([requirement for service in chosen for requirement in service.requirements()])
    for service in chosen:
        service.prepare()


def up(names: Sequence[str] = ()) -> dict[str, str]:
    """Start the named services (all by default), reusing running ones; return their environment."""
    settings = Settings.from_environment()
    chosen = services(names, settings)
    with _locked(settings):
        started = time.monotonic()
        to_start = []
        for service in chosen:
            if service.running():
                _say(f"{service.name}: already running (pid {service.pid()}), reusing it")
            else:
                service.check_port_free()
                to_start.append(service)
        prepare(to_start)
        # Servers start in parallel; one waits only for the servers it depends on.
        readiness: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=len(to_start) or 1) as pool:
            for service in to_start:
                for dependency in service.depends_on:
                    if dependency in readiness:
                        readiness[dependency].result()
                _say(f"{service.name}: starting on port {service.port}")
                service.launch()
                readiness[service.name] = pool.submit(_wait_ready, service, time.monotonic())
            for future in readiness.values():
                future.result()
        for service in chosen:
            service.configure()
        if to_start:
            _say(f"stack: up in {elapsed(started)}")
    return _environment(chosen)


def _wait_ready(service: Service, launch_time: float) -> None:
    service.wait_ready()
    _say(f"{service.name}: ready in {elapsed(launch_time)}")


def down(names: Sequence[str] = ()) -> None:
    settings = Settings.from_environment()
    with _locked(settings):
        for service in reversed(services(names, settings, with_dependencies=False)):
            if service.stop():
                _say(f"{service.name}: stopped")


def clean() -> None:
    """Stop everything and delete the stack's data (the download cache stays)."""
    settings = Settings.from_environment()
    down()
    shutil.rmtree(settings.stack_dir, ignore_errors=True)
    _say(f"stack: removed {settings.stack_dir}")


def status(names: Sequence[str] = ()) -> tuple[list[str], bool]:
    """One line per service, and whether all of them run."""
    chosen = services(names)
    return [service.describe() for service in chosen], all(service.running() for service in chosen)


def environment(names: Sequence[str] = ()) -> dict[str, str]:
    return _environment(services(names))


def _environment(chosen: Sequence[Service]) -> dict[str, str]:
    settings = chosen[0].settings if chosen else Settings.from_environment()
    result = {"DELTAFORGE_STACK_DIR": str(settings.stack_dir), "DELTAFORGE_CACHE": str(settings.cache_dir)}
    for service in chosen:
        result.update(service.environment())
    return result
