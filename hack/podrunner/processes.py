"""Starting a container as a local process, with its volumes bind-mounted at their mount paths.

Each container runs in a mount namespace of its own (`unshare --mount`), where its volumes are
bind-mounted where the pod spec says (`/etc/deltaforge`, the service-account token directory),
so programs read the same paths as in a real pod. This needs root, as a kubelet does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hack.podrunner.spec import Launch


def _covers(mount_path: str, path: str) -> bool:
    root = mount_path.rstrip("/") or "/"
    return path == root or path.startswith(root.rstrip("/") + "/")


def mount_script(launch: Launch, volumes_dir: Path, protected: Sequence[str] = ()) -> str:
    """Shell lines that bind-mount each volume (or its subPath) at its mount path, then exec argv.

    A volume that would cover one of `protected` (the Python environment and the checkout the
    pods' programs run from, e.g. a clone under /tmp and a pod's /tmp emptyDir) is not mounted:
    it would hide the program itself. A real pod has its own root filesystem; this stand-in
    shares the host's. For /tmp, TMPDIR points at the volume instead.
    """
    lines = ["set -e"]
    for mount in sorted(launch.mounts, key=lambda m: m.mount_path.count("/")):
        source = volumes_dir / mount.volume / mount.sub_path if mount.sub_path else volumes_dir / mount.volume
        target = shlex.quote(mount.mount_path)
        if any(_covers(mount.mount_path, path) for path in protected):
            lines.append(
                f"echo {shlex.quote(f'podrunner: {mount.mount_path} not mounted, it holds the program')} >&2"
            )
            if mount.mount_path.rstrip("/") == "/tmp":
                lines.append(f"export TMPDIR={shlex.quote(str(source))}")
            continue
        if source.is_file():
            lines.append(f"mkdir -p {shlex.quote(os.path.dirname(mount.mount_path))} && touch {target}")
        else:
            lines.append(f"mkdir -p {target}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {target}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def start(launch: Launch, volumes_dir: Path, home: Path, log_path: Path) -> subprocess.Popen[bytes]:
    protected = (sys.prefix, str(Path(__file__).resolve().parents[2]))  # the venv and the checkout
    argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            mount_script(launch, volumes_dir, protected), "podrunner-mounts", *launch.argv]  # fmt: skip
    working_dir = launch.working_dir or str(home)
    with open(log_path, "ab") as log:
        log.write(
            f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} start: {shlex.join(launch.argv)}\n".encode()
        )
        log.flush()
        return subprocess.Popen(
            argv,
            env=launch.env,
            cwd=working_dir if os.path.isdir(working_dir) else str(home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(popen: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM the container's process group, then SIGKILL after the grace period (as the kubelet)."""
    if popen.poll() is not None:
        return
    signal_group(popen, signal.SIGTERM)
    try:
        popen.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        signal_group(popen, signal.SIGKILL)
        popen.wait(timeout=10)


def signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)
