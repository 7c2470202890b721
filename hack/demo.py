"""`make demo`: the README's main job.

Today DeltaForge has its foundation only: the local real stack (data servers and a Kubernetes
control plane) is up and every server is reachable.
The operator, the worker runtime and the example Pipelines do not exist yet, so this says so and
shows how to use what runs, rather than pretending to stream changes.
"""

from __future__ import annotations

import sys

import hack.stack

NOT_YET = """\
Not built yet, and so not shown here:
  - the worker runtime (`deltaforge run pipeline.yaml`): PostgreSQL and MariaDB changes into Kafka and Redis
  - the operator, its Pipeline CRD and Helm chart (the control plane below is ready for them)
When they land, `make demo` installs the chart, applies the examples/ Pipelines, writes rows and
shows `kubectl get pipelines` turning Ready while the change events arrive."""

LOOK_AROUND = """\
Look around:
  eval "$(python3 -m hack.stack env)"      # connection settings as environment variables
  psql "$DELTAFORGE_PG_ADMIN_DSN"           # PostgreSQL 15, wal_level=logical
  mariadb -h 127.0.0.1 -P "$DELTAFORGE_MYSQL_PORT" -u admin -padmin   # MariaDB 10.11, ROW binlog
  redis-cli -p "$DELTAFORGE_REDIS_PORT"                               # Redis 7
  "$DELTAFORGE_KUBECTL" get namespaces      # Kubernetes 1.34 API server (KUBECONFIG is set)
Tear down:
  make stack-down      # stop the servers, keep their data
  make stack-clean     # stop them and delete their data"""


def main() -> int:
    lines, all_running = hack.stack.status()
    print("DeltaForge demo: the local real stack\n")
    print("\n".join("  " + line for line in lines))
    if not all_running:
        print("\nSome servers are not running: start them with `make stack-up`.", file=sys.stderr)
        return 1
    print("\nConnection settings:")
    for key, value in hack.stack.environment().items():
        print(f"  {key}={value}")
    print()
    print(NOT_YET)
    print()
    print(LOOK_AROUND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
