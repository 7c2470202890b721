"""The installed `deltaforge` console script answers --help and version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import deltaforge

SCRIPT = Path(sys.executable).with_name("deltaforge")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def test_help_lists_the_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "change data capture" in result.stdout
    assert "version" in result.stdout


def test_version_prints_the_package_version() -> None:
    result = _run("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"deltaforge {deltaforge.__version__} ")


def test_no_command_prints_usage_and_fails() -> None:
    result = _run()
    assert result.returncode == 2
    assert "usage: deltaforge" in result.stdout


def test_unknown_command_is_a_clear_error_without_traceback() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr
