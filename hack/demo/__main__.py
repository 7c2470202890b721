"""`python -m hack.demo [up|down|events TOPIC]`: the steps, with a progress line each (see __init__)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import hack.demo
import hack.stack
from hack.demo import data
from hack.demo.cluster import OPERATOR_NAMESPACE, RELEASE, REPO, Cluster, Example
from hack.stack import config
from hack.stack.config import Settings
from hack.stack.errors import StackError

CHART = REPO / "helm" / "deltaforge"
LOCAL_VALUES = REPO / "hack" / "podrunner" / "chart-values.yaml"
# The Secrets the examples reference, with the local stack's CDC users.
SECRETS = {
    "pg-cdc": (config.PG_CDC_USER, config.PG_CDC_PASSWORD),
    "mariadb-cdc": (config.MYSQL_CDC_USER, config.MYSQL_CDC_PASSWORD),
}


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def _show(output: str) -> None:
    print(_indent(output))


def _examples() -> tuple[Example, Example]:
    return Example.load("postgres-to-kafka-and-redis.yaml"), Example.load("mariadb-to-kafka.yaml")


def _watch_ready(cluster: Cluster, namespace: str, names: list[str]) -> None:
    """Print `kubectl get pipelines` whenever a Pipeline's status changes, until all are Ready."""
    shown: list[Any] = [None]
    deadline = time.monotonic() + 180
    while True:
        items = cluster.get("pipelines.deltaforge.io", *names, "-n", namespace)["items"]
        statuses = [item.get("status", {}) for item in items]
        # Not the messages: some count seconds, and each would be a new table.
        seen = [
            (status.get("phase"), status.get("sinksReady"),
             [(c["type"], c["status"], c["reason"]) for c in status.get("conditions", [])])
            for status in statuses
        ]  # fmt: skip
        if seen != shown:
            table = cluster.kubectl("get", "pipelines.deltaforge.io", *names, "-n", namespace)
            print(f"    [{time.strftime('%H:%M:%S')}]\n{_indent(table)}")
            shown = seen
        ready = [
            any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
            for status in statuses
        ]
        if len(ready) == len(names) and all(ready):
            return
        if time.monotonic() > deadline:
            conditions = {
                item["metadata"]["name"]: item.get("status", {}).get("conditions") for item in items
            }
            raise SystemExit(f"not Ready within 180 s:\n{json.dumps(conditions, indent=1)}")
        time.sleep(0.5)


def up() -> int:
    lines, all_running = hack.stack.status()
    print("DeltaForge demo on the local real stack\n")
    _show("\n".join(lines))
    if not all_running:
        print("\nSome servers are not running: start them with `make stack-up`.", file=sys.stderr)
        return 1
    settings = Settings.from_environment()
    cluster = Cluster.from_stack(settings)
    postgres, mariadb = _examples()
    namespace, pg = postgres.namespace, postgres.source

    database, publication, slot = pg["database"], pg["publication"]["name"], pg["slot"]["name"]
    _step(f"PostgreSQL: database {database}, tables orders and order_items, publication {publication}")
    data.prepare_postgres(settings, database, publication, slot)
    _step("MariaDB: database inventory, table products")
    data.prepare_mariadb(settings)

    _step("the local pod runner: a stand-in kubelet that runs the demo's pods as local processes")
    cluster.start_pod_runner([postgres, mariadb])

    _step(f"namespace {namespace} and the Secrets the Pipelines' credentials come from: {', '.join(SECRETS)}")
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}] + [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
         "stringData": {"username": user, "password": password}}
        for name, (user, password) in SECRETS.items()
    ]  # fmt: skip
    _show(cluster.apply(*objects))

    _step(f"helm upgrade --install {RELEASE} helm/deltaforge -n {OPERATOR_NAMESPACE} (watching {namespace})")
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace",
        "-f", str(LOCAL_VALUES), "--set", f"watchNamespaces={{{namespace}}}",
        # The CRD may exist already, applied by the tests or kept from an earlier release.
        "--take-ownership", "--wait", "--timeout", "180s",
    )  # fmt: skip
    _show(cluster.helm("status", RELEASE, "-n", OPERATOR_NAMESPACE).split("NOTES:")[0])
    _show(cluster.kubectl("get", "deployments,pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"))

    _step(f"kubectl apply -f {postgres.path.relative_to(REPO)} -f {mariadb.path.relative_to(REPO)}")
    _show(cluster.kubectl("apply", "-f", str(postgres.path), "-f", str(mariadb.path)))
    _step(f"kubectl get pipelines -n {namespace}, until both are Ready (the operator deploys a worker each)")
    _watch_ready(cluster, namespace, [postgres.name, mariadb.name])

    _step("writing rows: an order with two items, an update, a delete; a product and a stock change")
    order, product = data.write_postgres(settings, database), data.write_mariadb(settings)
    print(f"    PostgreSQL order {order}, MariaDB product {product}")

    _step("their change events")
    found = data.wait_for_events(settings.kafka_bootstrap, {
        "shop.orders": lambda row: row.get("id") == order,
        "shop.order_items": lambda row: row.get("order_id") == order,
        "inventory.products": lambda row: row.get("id") == product,
    })  # fmt: skip
    for topic, events in found.items():
        print(f"    Kafka topic {topic}:\n" + "\n".join(f"      {data.describe(event)}" for event in events))
    cached = data.redis_events(settings, "cdc:orders", lambda row: row.get("id") == order)
    print("    Redis stream cdc:orders (the best-effort sink):")
    print("\n".join(f"      {data.describe(event)}" for event in cached))

    _step(f"kubectl get pipelines,deployments,pods -n {namespace}")
    _show(cluster.kubectl("get", "pipelines.deltaforge.io,deployments,pods", "-n", namespace))
    _step(f"kubectl get events -n {namespace}: what the operator reported")
    _show(cluster.kubectl("get", "events", "-n", namespace, "--field-selector=involvedObject.kind=Pipeline"))
    logs = [
        cluster.pod_log(namespace, f"deltaforge.io/pipeline={postgres.name}", "worker"),
        cluster.pod_log(OPERATOR_NAMESPACE, f"app.kubernetes.io/instance={RELEASE}", "operator"),
    ]
    print(_look_around(namespace, postgres.name, logs))
    return 0


def _look_around(namespace: str, pipeline: str, logs: list[str]) -> str:
    tails = "\n".join(f"  tail -f {log}" for log in logs)
    return f"""
DeltaForge runs: the operator in {OPERATOR_NAMESPACE}, a worker for each Pipeline in {namespace}. Look around:
  eval "$(python3 -m hack.stack env)"             # KUBECONFIG, $DELTAFORGE_KUBECTL, $DELTAFORGE_HELM, DSNs
  "$DELTAFORGE_KUBECTL" get dfp -A                 # the Pipelines (pipelines.deltaforge.io)
  "$DELTAFORGE_KUBECTL" describe dfp {pipeline} -n {namespace}   # conditions and Events
  "$DELTAFORGE_HELM" status {RELEASE} -n {OPERATOR_NAMESPACE}
  # a worker's and the operator's log, kept by the pod runner (`kubectl logs` needs a kubelet):
{tails}
  psql postgresql://postgres:postgres@127.0.0.1:25432/shop -c "INSERT INTO orders (customer, total) VALUES ('you', 1)"
  .venv/bin/python -m hack.demo events shop.orders  # consume a topic: its change events, one JSON a line
  redis-cli -p 26379 XRANGE cdc:orders - +         # the same changes in Redis
Tear down:
  make demo-down     # the Pipelines, the release and the pod runner (the CRD stays); drops the demo's slot
  make stack-down    # then stop the servers (their data stays; `make stack-clean` deletes it)"""


def down() -> int:
    settings = Settings.from_environment()
    cluster = Cluster.from_stack(settings)
    postgres, mariadb = _examples()
    namespace, pg = postgres.namespace, postgres.source
    # Only a kubelet (here the pod runner) finishes a pod's deletion: it must run until the end.
    _step("the pod runner, which finishes the deletion of the demo's pods")
    cluster.start_pod_runner([postgres, mariadb])
    _step(f"deleting namespace {namespace}: its Pipelines (their workers stop), Secrets and checkpoints")
    _show(cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=120s"))
    _step(f"helm uninstall {RELEASE} -n {OPERATOR_NAMESPACE}: the Pipeline CRD stays (resource policy keep)")
    _show(cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait"))
    _show(cluster.kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--timeout=120s"))
    _step("stopping the pod runner")
    _show(cluster.stop_pod_runner())
    slot = pg["slot"]["name"]
    _step(f"dropping the replication slot {slot}: reclaimPolicy Retain kept it, and it would retain WAL")
    dropped = data.drop_slot(settings, pg["database"], slot)
    print(f"    {'dropped' if dropped else 'there was none'}; the tables, topics and streams stay")
    print("\nThe demo is gone; the servers still run (`make stack-down` stops them).")
    return 0


def events(topic: str) -> int:
    for event in data.kafka_events(Settings.from_environment().kafka_bootstrap, topic):
        print(json.dumps(event))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.demo", description=(hack.demo.__doc__ or "").split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser(
        "up", help="install the chart, run the examples, write rows, show the events (default)"
    )
    commands.add_parser("down", help="remove what `up` installed and started")
    topic = commands.add_parser("events", help="print the change events of a Kafka topic, one JSON a line")
    topic.add_argument("topic")
    args = parser.parse_args(argv)
    if args.command == "events":
        return events(args.topic)
    if os.geteuid() != 0:
        print("The local pod runner needs root (it mounts volumes in mount namespaces, as a kubelet "
              "does): run `sudo make demo`.", file=sys.stderr)  # fmt: skip
        return 1
    try:
        return down() if args.command == "down" else up()
    except StackError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
