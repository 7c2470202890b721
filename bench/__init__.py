"""DeltaForge benchmarks: the worker against a reference reader of the same change set, same run.

`python -m bench run <scenario>`: pg-kafka, mysql-kafka, pg-redis, pg-latency and mysql-latency
(see bench/README.md). Everything here uses the standard library and the project's own dependencies
only; profilers are optional extras.
"""

from __future__ import annotations

import os
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def checkout_environment(env: dict[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH: a child started as `python -m bench...` (or
    the sampler wrapping the worker) imports it whatever its working directory is."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))}
