"""Our worker: `deltaforge run` on a manifest source -> a sink, timed until the sink holds every row.

It is timed by `bench.delivery`: from spawning the process until the destination (a Kafka topic
or a Redis stream) holds the number of rows, so interpreter start-up, preflight, connecting to
the sink and its last acknowledgements are all inside the figure. The source part of the manifest,
the secrets it refers to, an optional start checkpoint and the server-side process to watch come
from the scenario (`Source`).
"""

from __future__ import annotations

import compileall
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deltaforge
from bench import checkout_environment, delivery
from bench.measurement import Measurement
from deltaforge.checkpoints import codec
from deltaforge.events import Checkpoint
from hack.stack.process import free_ports

NAME = "deltaforge"
SCRIPT = Path(sys.executable).with_name("deltaforge")
CHECKPOINT = "checkpoint.json"  # in the worker's directory, its working directory


@dataclass(frozen=True)
class Source:
    """What the worker reads, from the scenario: `spec.source` of its manifest and the rest."""

    scenario: str  # the Pipeline is named bench-<scenario>
    spec: dict[str, Any]  # spec.source
    change_set: delivery.ChangeSet
    env: dict[str, str] = field(default_factory=dict)  # the secrets the spec refers to (${...})
    start: str | None = None  # a position to start from, handed over as the worker's checkpoint


@dataclass(frozen=True)
class WorkerOptions:
    destination: delivery.Destination  # its sink is the only one in the manifest
    batch_events: int
    profile: str | None = None  # None, "sample", "cprofile", "pyinstrument" or "memray"
    profile_path: Path | None = None


def manifest(source: Source, options: WorkerOptions) -> dict[str, Any]:
    return {
        "apiVersion": "deltaforge.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": f"bench-{source.scenario}", "namespace": "bench"},
        "spec": {
            "source": source.spec,
            "sinks": [options.destination.sink()],
            "batch": {"maxEvents": options.batch_events},
            "checkpoint": {"file": {"path": CHECKPOINT}},
        },
    }


def command(manifest_path: Path, port: int, options: WorkerOptions) -> list[str]:
    run = ["run", str(manifest_path), "--http-host", "127.0.0.1", "--http-port", str(port)]
    if options.profile == "sample":
        assert options.profile_path is not None
        return [
            sys.executable,
            "-m",
            "bench.sampler",
            str(options.profile_path),
            "--",
            "-m",
            "deltaforge",
            *run,
        ]
    if options.profile == "cprofile":
        assert options.profile_path is not None
        return [sys.executable, "-m", "cProfile", "-o", str(options.profile_path), "-m", "deltaforge", *run]
    if options.profile == "pyinstrument":
        assert options.profile_path is not None
        return [
            sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(options.profile_path),
            "-m", "deltaforge", *run,
        ]  # fmt: skip
    if options.profile == "memray":
        assert options.profile_path is not None
        return [
            sys.executable, "-m", "memray", "run", "--native", "--force", "-o", str(options.profile_path),
            "-m", "deltaforge", *run,
        ]  # fmt: skip
    return [str(SCRIPT), *run]


def byte_compile_runtime() -> None:
    """Byte-compile the worker's package, as installing a wheel or building the image does.

    A checkout installed in editable mode is compiled on import, and where bytecode writing is
    off (PYTHONDONTWRITEBYTECODE) that happens again at every start: measured at about 0.15 s of
    the worker's start-up, which no deployment pays.
    """
    compileall.compile_dir(Path(deltaforge.__file__).parent, quiet=1)


def run(source: Source, options: WorkerOptions, *, directory: Path) -> Measurement:
    byte_compile_runtime()
    manifest_path = directory / "pipeline.json"
    manifest_path.write_text(json.dumps(manifest(source, options), indent=2))
    if source.start is not None:  # the checkpoint store is how a pipeline is told where to resume
        (directory / CHECKPOINT).write_bytes(codec.dump(Checkpoint(position=source.start)))
    argv = command(manifest_path, free_ports(1)[0], options)
    env = {**os.environ, **source.env}
    if options.profile == "sample":  # bench.sampler runs from the checkout, whatever the cwd
        env = checkout_environment(env)
    process = delivery.Process(
        name="the worker", argv=argv, env=env, directory=directory, log_path=directory / "worker.log"
    )
    observed = delivery.measure(process, source.change_set, options.destination)
    return observed.measurement(
        NAME,
        source.change_set,
        options.destination,
        {
            "batchMaxEvents": options.batch_events,
            "sink": options.destination.sink(),
            "profile": options.profile,
            "command": " ".join(argv),
        },
    )
