"""A wrong environment gives the stack tool one clear message, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.data_stack import start_server

REPO = Path(__file__).resolve().parents[2]


def _stack(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hack.stack", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose stack lives in a temporary directory and never installs packages."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("DELTAFORGE_", "JAVA_HOME"))
    }
    env["DELTAFORGE_STACK_DIR"] = str(tmp_path / "stack")
    env["DELTAFORGE_STACK_INSTALL"] = "0"
    return env


@pytest.fixture
def foreign_listener() -> Iterator[int]:
    """A port held by a process that is not the stack's."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _assert_clear_failure(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_java_names_the_package(isolated_env: dict[str, str], tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    isolated_env["PATH"] = str(empty_bin)
    result = _stack("install", "kafka", env=isolated_env)
    _assert_clear_failure(
        result,
        "Java 17 is required to run the local Kafka broker: apt-get install openjdk-17-jre-headless",
    )


def test_old_java_is_refused_with_its_version(isolated_env: dict[str, str], tmp_path: Path) -> None:
    java_home = tmp_path / "jdk11"
    (java_home / "bin").mkdir(parents=True)
    java = java_home / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    java.chmod(0o755)
    isolated_env["JAVA_HOME"] = str(java_home)
    result = _stack("install", "kafka", env=isolated_env)
    _assert_clear_failure(result, "is Java 11): apt-get install openjdk-17-jre-headless")


def test_port_variable_that_is_not_a_number(isolated_env: dict[str, str]) -> None:
    isolated_env["DELTAFORGE_PG_PORT"] = "fivefour"
    result = _stack("status", env=isolated_env)
    _assert_clear_failure(result, "DELTAFORGE_PG_PORT='fivefour' is not a TCP port")


def test_port_taken_by_another_process(isolated_env: dict[str, str], foreign_listener: int) -> None:
    isolated_env["DELTAFORGE_REDIS_PORT"] = str(foreign_listener)
    result = _stack("up", "redis", env=isolated_env)
    _assert_clear_failure(result, f"redis: port 127.0.0.1:{foreign_listener} is taken")


def test_unknown_service_lists_the_choices(isolated_env: dict[str, str]) -> None:
    result = _stack("up", "oracle", env=isolated_env)
    _assert_clear_failure(result, "unknown service oracle: choose from postgres, mariadb, redis, kafka")


def test_fixture_fails_the_test_when_its_server_cannot_start(
    isolated_env: dict[str, str], foreign_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [key for key in os.environ if key.startswith("DELTAFORGE_")]:
        monkeypatch.delenv(key)
    for key in ("DELTAFORGE_STACK_DIR", "DELTAFORGE_STACK_INSTALL"):
        monkeypatch.setenv(key, isolated_env[key])
    monkeypatch.setenv("DELTAFORGE_REDIS_PORT", str(foreign_listener))
    with pytest.raises(pytest.fail.Exception, match="needs the local redis server") as failure:
        start_server("redis")
    assert f"port 127.0.0.1:{foreign_listener} is taken" in str(failure.value)
