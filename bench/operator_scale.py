"""Scenario `operator-scale`: how long the operator takes to reconcile N Pipelines applied at once.

On the local control plane (`python3 -m hack.stack up k8s`), in a namespace of its own, the
operator runs as its own process (`hack.operator_process`, as in tests/k8s) watching only that
namespace, with the default resync (60 s); `--clients` concurrent clients create N paused
Pipelines. Paused, their Deployments have no replicas: no pod exists for a pod runner to start.

- **All reconciled**: from the first create request until every Pipeline has a status for its
  generation (`status.observedGeneration`, seen through a watch) and its eight children (two
  ConfigMaps, Secret, ServiceAccount, Role, RoleBinding, Service, Deployment).
- **Reconcile latency** p50/p99/max: per Pipeline, from the answer to its create request until
  the watch shows its first status: what a user waits for after `kubectl apply`, the queue
  behind the other Pipelines included (this client's clock: `creationTimestamp` has whole
  seconds). The operator's `deltaforge_operator_reconcile_duration_seconds` is printed too, but
  it times one pass once started, not the wait for it: the cost of a pass, not the latency.
- **Operator resources**: CPU seconds, peak RSS (VmHWM), time runnable but waiting for a CPU;
  and the control plane's CPU meanwhile, which competes with it on a small machine.

Targets (issue 8), judged from 1,000 Pipelines on: all reconciled within 120 s; operator peak
RSS under 300 MB (10^6 bytes). Whatever happens, the operator is stopped and the namespace,
with its Pipelines, is deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config, watch
from urllib3.exceptions import HTTPError

import hack.stack
from bench import report
from bench.operator_report import TARGET_SECONDS, table, targets
from bench.procstat import CpuSpan, cpu_seconds, run_delay_seconds
from bench.scenario import RESULTS_DIR
from deltaforge_operator.crd import CRD_NAME, GROUP, PLURAL, VERSION
from deltaforge_operator.render import PIPELINE_LABEL
from hack.operator_process import REPO, OperatorProcess, paused_pipeline, running_operator
from hack.stack.orchestrate import services

NAME = "operator-scale"
TAG = f"[{NAME}]"
CHILDREN = {"ConfigMap": 2, "Secret": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Service": 1,
            "Deployment": 1}  # fmt: skip
Json = dict[str, Any]


@dataclass(frozen=True)
class ScaleOptions:
    pipelines: int = 1000
    clients: int = 8
    timeout: float = 600.0
    results_dir: Path = RESULTS_DIR
    keep_logs: bool = False


def add_parser(
    scenarios: argparse._SubParsersAction[argparse.ArgumentParser], positive: Callable[[str], int]
) -> None:
    parser = scenarios.add_parser(
        NAME, help="the operator reconciling N Pipelines applied at once on the local control plane",
        description=(__doc__ or "").strip(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--pipelines", type=positive, default=1000, help="Pipelines applied (default 1000)")
    parser.add_argument("--clients", type=positive, default=8, help="concurrent create requests (default 8)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for all (default 600)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    parser.add_argument("--keep-logs", action="store_true", help="copy the operator's log to the results")
    parser.set_defaults(handler=lambda args: run(ScaleOptions(
        pipelines=args.pipelines, clients=args.clients, timeout=args.timeout, results_dir=args.results_dir,
        keep_logs=args.keep_logs)))  # fmt: skip


class StatusWatch:
    """When this client first saw each Pipeline with a status for its generation (perf_counter).

    A watch, not polling: listing a thousand Pipelines every second would load the API server the
    operator is being measured against, and would round every latency up to the poll interval.
    """

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._custom, self._namespace = client.CustomObjectsApi(api), namespace
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._written: dict[str, float] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="status-watch", daemon=True)

    def start(self) -> StatusWatch:
        self._thread.start()
        return self

    def written(self) -> dict[str, float]:
        with self._lock:
            return dict(self._written)

    def _see(self, item: Json) -> None:
        status = item.get("status") or {}
        if status.get("observedGeneration") == item["metadata"].get("generation"):
            with self._lock:
                self._written.setdefault(item["metadata"]["name"], time.perf_counter())

    def _list(self) -> str:
        listed = cast(
            Json, self._custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL)
        )
        for item in listed["items"]:
            self._see(item)
        return str(listed["metadata"]["resourceVersion"])

    def _run(self) -> None:
        try:
            version = self._list()
            while not self._stop.is_set():
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self._custom.list_namespaced_custom_object, GROUP, VERSION, self._namespace, PLURAL,
                    resource_version=version, timeout_seconds=5)  # fmt: skip
                try:
                    for event in stream:
                        version = event["object"]["metadata"]["resourceVersion"]
                        self._see(event["object"])
                except client.ApiException as error:
                    if error.status != 410:  # Gone: this client fell too far behind; list again
                        raise
                    version = self._list()
        except BaseException as error:  # the main thread reports it; a dead watch must not hang the run
            self.error = error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _items(lister: Callable[..., Any], namespace: str, **query: str) -> list[Json]:
    """A namespaced list as plain JSON: the client's models would cost seconds of CPU for thousands."""
    items: list[Json] = json.loads(lister(namespace, _preload_content=False, **query).data)["items"]
    return items


def _children(api: client.ApiClient, namespace: str) -> int:
    """How many of the Pipelines' children exist, each kind counted up to what one Pipeline has."""
    core, rbac, apps = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.AppsV1Api(api)
    listers = {
        "ConfigMap": core.list_namespaced_config_map, "Secret": core.list_namespaced_secret,
        "ServiceAccount": core.list_namespaced_service_account, "Service": core.list_namespaced_service,
        "Role": rbac.list_namespaced_role, "RoleBinding": rbac.list_namespaced_role_binding,
        "Deployment": apps.list_namespaced_deployment,
    }  # fmt: skip
    found = 0
    for kind, lister in listers.items():
        items = _items(lister, namespace, label_selector=PIPELINE_LABEL)
        per_pipeline = Counter(item["metadata"]["labels"][PIPELINE_LABEL] for item in items)
        found += sum(min(count, CHILDREN[kind]) for count in per_pipeline.values())
    return found


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _histogram(operator: OperatorProcess, namespace: str) -> Json:
    """The operator's pass-duration histogram: count, mean and the bucket bounds of p50 and p99."""
    name = "deltaforge_operator_reconcile_duration_seconds"
    buckets = sorted((float(labels["le"]), value)
                     for labels, value in operator.samples(f"{name}_bucket", namespace=namespace))  # fmt: skip
    count = operator.metric(f"{name}_count", namespace=namespace)
    total = operator.metric(f"{name}_sum", namespace=namespace)

    def bound(share: float) -> float | None:
        return next((le for le, cumulative in buckets if count and cumulative >= share * count), None)

    return {"passes": count, "meanSeconds": total / count if count else None, "p50AtMostSeconds": bound(0.5),
            "p99AtMostSeconds": bound(0.99)}  # fmt: skip


def _create_all(
    api: client.ApiClient, namespace: str, options: ScaleOptions
) -> tuple[float, dict[str, float]]:
    """Create the Pipelines with `clients` concurrent requests: (first request, answered at per name)."""
    custom, answered = client.CustomObjectsApi(api), {}

    def create(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, paused_pipeline(name))
        answered[name] = time.perf_counter()

    started = time.perf_counter()
    with ThreadPoolExecutor(options.clients) as pool:
        list(pool.map(create, [f"p-{number:05d}" for number in range(options.pipelines)]))
    return started, answered


def _api(kubeconfig: str, clients: int) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = clients + 4  # the creators, the watch and the listings
    return client.ApiClient(configuration)


def _own_cpu() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # ru_utime + ru_stime, every thread


def _is_operator(pid: str) -> bool:
    try:
        return b"deltaforge\0operator" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # a process that just ended
        return False


def _other_operators(own: int) -> set[int]:
    """Other `deltaforge operator` processes here: one watching every namespace (a test session's)
    reconciles these Pipelines too, competing with the one measured."""
    return {int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
            and entry.name != str(own) and _is_operator(entry.name)}  # fmt: skip


def _wait(api: client.ApiClient, operator: OperatorProcess, statuses: StatusWatch, *, options: ScaleOptions,
          namespace: str, started: float, others: set[int]) -> float | None:  # fmt: skip
    """Seconds from the first create until every Pipeline is reconciled; None after `--timeout`."""
    count, expected = options.pipelines, options.pipelines * sum(CHILDREN.values())
    deadline, shown, late = started + options.timeout, time.perf_counter(), False
    while time.perf_counter() < deadline:
        if operator.popen is not None and operator.popen.poll() is not None:
            raise RuntimeError(
                f"the operator exited with {operator.popen.returncode}:\n{operator.log_tail()}"
            )
        if statuses.error is not None:
            raise RuntimeError(f"watching the Pipelines failed: {statuses.error!r}")
        others |= _other_operators(operator.pid)
        written = statuses.written()
        if len(written) == count:
            if _children(api, namespace) == expected:
                # A pass applies the children before it writes the status: they were all there
                # when the last status was, unless a listing already found one missing.
                return (time.perf_counter() if late else max(written.values())) - started
            late = True
        elif time.perf_counter() - shown >= 10:
            shown = time.perf_counter()
            print(
                f"{TAG}   {len(written):,} of {count:,} have a status after {shown - started:.0f} s",
                flush=True,
            )
        time.sleep(1.0 if late else 0.2)
    return None


def _measure(
    api: client.ApiClient, kubeconfig: str, options: ScaleOptions, namespace: str, work_dir: Path
) -> Json:
    with running_operator(kubeconfig, work_dir, resync_seconds=60, namespaces=[namespace]) as operator:
        pid = operator.pid
        cpu_start, delay_start, rss_start = cpu_seconds(pid), run_delay_seconds(pid), operator.memory_mib()[0]
        control = {service.name: CpuSpan(service.pid()).start() for service in services(["k8s"])}
        own_cpu, statuses, others = _own_cpu(), StatusWatch(api, namespace).start(), _other_operators(pid)
        try:
            print(
                f"{TAG} creating {options.pipelines:,} Pipelines, {options.clients} at a time, in {namespace}"
            )
            started, answered = _create_all(api, namespace, options)
            print(f"{TAG}   created in {max(answered.values()) - started:.1f} s", flush=True)
            took = _wait(api, operator, statuses, options=options, namespace=namespace, started=started,
                         others=others)  # fmt: skip
        finally:
            statuses.stop()
        cpu, delay, (rss, peak) = cpu_seconds(pid), run_delay_seconds(pid), operator.memory_mib()
        written = statuses.written()
        latencies = sorted(max(0.0, at - answered[name]) for name, at in written.items())
        phases = operator.samples("deltaforge_operator_pipelines", namespace=namespace)
        return {
            "pipelines": options.pipelines, "createdSeconds": max(answered.values()) - started,
            "reconciledSeconds": took, "withStatus": len(written),
            "withStatusWithinTarget": sum(1 for at in written.values() if at - started <= TARGET_SECONDS),
            "latencySeconds": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                               "max": latencies[-1]} if latencies else None,
            "operatorPasses": _histogram(operator, namespace),
            "failedPasses": operator.metric("deltaforge_operator_reconciliation_failures_total", namespace=namespace),
            "phases": {labels["phase"]: value for labels, value in phases if value},
            "operator": {"cpuSeconds": cpu - cpu_start, "cpuSecondsWithStartUp": cpu, "peakRssMiB": peak,
                         "rssMiB": rss, "rssAfterStartUpMiB": rss_start, "waitingForCpuSeconds": delay - delay_start},
            "otherOperatorProcesses": len(others),
            "createdByThisOperator": len(set(re.findall(rf"Created {namespace}/(\S+):", operator.log()))),
            "controlPlaneCpuSeconds": {name: span.sample() for name, span in control.items()},
            "benchClientCpuSeconds": _own_cpu() - own_cpu,
            "workerPods": len(_items(client.CoreV1Api(api).list_namespaced_pod, namespace)),
            "latenciesSeconds": [round(value, 3) for value in latencies],
        }  # fmt: skip


def _delete(api: client.ApiClient, namespace: str, timeout: float = 300.0) -> None:
    """Delete the Pipelines and the namespace, and wait until the namespace is gone.

    Errors are retried until `timeout`: the API server is shared, and another session's test may
    be restarting it just now; giving up at once would leave a thousand Pipelines behind.
    """
    core, deadline = client.CoreV1Api(api), time.monotonic() + timeout
    asked, problem = False, "it is still there"
    print(f"{TAG} deleting namespace {namespace} ...", flush=True)
    while time.monotonic() < deadline:
        try:
            if not asked:
                client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)  # fmt: skip
                core.delete_namespace(namespace)
                asked = True
            core.read_namespace(namespace, _preload_content=False)
        except client.ApiException as error:
            if error.status == 404:
                return
            problem = f"{error.status} {error.reason}"
        except (HTTPError, OSError) as error:
            problem = str(error)
        time.sleep(2)
    print(f"{TAG} could not delete namespace {namespace} within {timeout:.0f} s ({problem}); delete it by hand: "
          f"kubectl delete namespace {namespace}", file=sys.stderr)  # fmt: skip


def _control_plane() -> dict[str, str]:
    """The local control plane's environment; exits saying how to start it when it is down."""
    lines, running = hack.stack.status(["k8s"])
    if not running:
        raise SystemExit("bench: the local control plane is not running; start it first: "
                         "python3 -m hack.stack up k8s\n" + "\n".join(lines))  # fmt: skip
    return hack.stack.environment(["k8s"])


def _install_crd(environment: dict[str, str]) -> None:
    """The committed Pipeline CRD, applied and Established (as the tests' `pipeline_crd` does)."""
    for args in (("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / f"{CRD_NAME}.yaml")),
                 ("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")):  # fmt: skip
        done = subprocess.run([environment["DELTAFORGE_KUBECTL"], *args], env={**os.environ, **environment},
                              check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"`kubectl {args[0]}` of the Pipeline CRD failed: {done.stderr.strip()}")


def run(options: ScaleOptions) -> int:
    environment = _control_plane()
    _install_crd(environment)
    started_at, load = datetime.now(UTC), os.getloadavg()
    namespace, stamp = f"bench-operator-scale-{uuid.uuid4().hex[:8]}", started_at.strftime("%Y%m%dT%H%M%SZ")
    kubeconfig = environment["KUBECONFIG"]
    with _api(kubeconfig, options.clients) as api, tempfile.TemporaryDirectory(prefix="bench-operator-") as scratch:  # fmt: skip
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))  # fmt: skip
        try:
            result = _measure(api, kubeconfig, options, namespace, Path(scratch))
        finally:
            _delete(api, namespace)  # the operator has stopped: nothing re-creates a child meanwhile
            if options.keep_logs:
                options.results_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(scratch) / "operator.log", options.results_dir / f"{NAME}-{stamp}-operator.log")  # fmt: skip
    print(table(result))
    document = {
        "scenario": NAME, "startedAt": started_at.isoformat(timespec="seconds"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "loadAverage": [round(value, 2) for value in load],
                 "loadAverageAfter": [round(value, 2) for value in os.getloadavg()],
                 "platform": platform.platform(), "python": platform.python_version()},
        "parameters": {"pipelines": options.pipelines, "clients": options.clients, "timeout": options.timeout,
                       "resyncSeconds": 60, "namespace": namespace},
        "results": result,
        "targets": [{"goal": goal, "met": met, "measured": measured} for goal, met, measured in targets(result)],
    }  # fmt: skip
    path = options.results_dir / f"{NAME}-{stamp}.json"
    report.write_json(path, document)
    print(f"results: {path}")
    return 0
