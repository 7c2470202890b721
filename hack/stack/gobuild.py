"""Building the control plane's Go binaries from the Go module proxy, cached by version.

A cold build of kube-apiserver takes 10-20 minutes on two cores, so it prints a line every
minute, keeps go's output in a log next to the binaries, and installs atomically: a directory
is used only once it holds every binary and a `.complete` marker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hack.stack import process
from hack.stack.errors import StackError
from hack.stack.service import elapsed

MODULES_DIR = Path(__file__).resolve().parent.parent / "controlplane"
MINIMUM_GO = (1, 24)


def go_command() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )
    if go is None:
        raise StackError(
            "Go 1.24 or newer is required to build the local Kubernetes control plane "
            "(Debian 12's golang-go is 1.19, too old): install Go and put it on PATH"
        )
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"go(\d+)\.(\d+)", version.strip())
    if not match or (int(match.group(1)), int(match.group(2))) < MINIMUM_GO:
        raise StackError(
            f"Go 1.24 or newer is required to build the local control plane; {go} is {version.strip()!r}"
        )
    return go


def build(
    *,
    what: str,
    module: str,
    packages: Sequence[str],
    binaries: Sequence[str],
    target: Path,
    ldflags: str = "",
) -> None:
    """Build `packages` of the Go module `hack/controlplane/<module>` into `target` unless cached."""
    if (target / ".complete").exists() and all((target / name).exists() for name in binaries):
        return
    go = go_command()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log_path = target.parent / "build.log"
    _say(f"building {what} from the Go module proxy into {target} (first run only; log: {log_path})")
    started = time.monotonic()
    # A build cache of its own (about 3 GB for Kubernetes), removed once the binaries are in place;
    # the module cache stays shared in GOMODCACHE.
    build_cache = target.parent / "go-build-cache"
    environment = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
        "GOCACHE": str(build_cache),
    }
    argv = [go, "build", "-trimpath", "-ldflags", f"-s -w {ldflags}".strip(), "-o", f"{staging}/", *packages]
    with open(log_path, "w") as log:
        build_process = subprocess.Popen(
            argv,
            cwd=MODULES_DIR / module,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        next_report = time.monotonic() + 60
        while build_process.poll() is None:
            time.sleep(1)
            if time.monotonic() >= next_report:
                _say(f"  still building {what}: {elapsed(started)}")
                next_report += 60
    if build_process.returncode != 0:
        raise StackError(
            f"building {what} failed (exit {build_process.returncode}):\n{process.log_tail(log_path)}"
        )
    if len(binaries) == 1 and not (staging / binaries[0]).exists():
        # `go build -o dir/` names a single binary after its package's last path element.
        built = [path for path in staging.iterdir() if path.is_file()]
        if len(built) == 1:
            built[0].rename(staging / binaries[0])
    missing = [name for name in binaries if not (staging / name).exists()]
    if missing:
        raise StackError(f"building {what} produced no {', '.join(missing)}; see {log_path}")
    (staging / ".complete").write_text("\n".join(binaries) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    shutil.rmtree(build_cache, ignore_errors=True)
    _say(f"built {what} in {elapsed(started)} ({_size_mb(target)} MB)")


def _size_mb(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir()) // (1024 * 1024)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
