"""From a validated Pipeline to the objects that run it: pure, no I/O, same input -> same output.

Every reconciliation renders the complete set (worker ConfigMap, credentials Secret, checkpoint
ConfigMap, ServiceAccount, Role, RoleBinding, Service, Deployment) and applies all of it, so
create, update, resume after an operator restart and the periodic resync converge the same way,
and a deleted or edited child is restored by the next pass.

The worker's ConfigMap holds the manifest it runs with every credential as a `secretKeyRef`:
references to the user's Secrets stay as they are, and literal values (often just a user name)
move into a Secret of the pipeline's own. A ConfigMap therefore never holds a credential.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import yaml  # type: ignore[import-untyped,unused-ignore]

from deltaforge import __version__
from deltaforge.spec import (
    API_VERSION,
    DEFAULT_SECRETS_DIR,
    KIND,
    Issue,
    Pipeline,
    SpecError,
    iter_credentials,
)

Json = dict[str, Any]

GROUP: Final = API_VERSION.split("/", 1)[0]
OPERATOR: Final = "deltaforge-operator"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
PART_OF: Final = "app.kubernetes.io/part-of"
PIPELINE_LABEL: Final = f"{GROUP}/pipeline"
CONFIG_HASH: Final = f"{GROUP}/config-hash"
RESTARTED_AT: Final = f"{GROUP}/restarted-at"
STATE: Final = f"{GROUP}/state"
RESTART_REQUEST: Final = f"{GROUP}/restart"
"""Set this annotation on a Pipeline (any value) to restart its worker; the operator removes it."""

DEFAULT_IMAGE: Final = f"ghcr.io/deltaforge/deltaforge:{__version__}"
CONFIG_DIR: Final = "/etc/deltaforge/config"
CONFIG_KEY: Final = "pipeline.yaml"
METRICS_PORT: Final = 9000
_NON_ROOT_ID: Final = 65532
_MAX_NAME: Final = 63
_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")
_ENV_REFERENCE = re.compile(r"\$\{[^}]*\}")


class RenderError(SpecError):
    """The spec is valid for `deltaforge run` but cannot run in a cluster (reported as InvalidSpec)."""


@dataclass(frozen=True)
class WorkerSettings:
    """How worker pods are built; the same for every Pipeline of one operator."""

    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    # Where the worker serves /metrics, /readyz and /healthz. 0.0.0.0 also answers on the pod's
    # loopback, which `kubectl port-forward` connects to; "$(POD_IP)" (Kubernetes expands it from
    # the POD_IP variable every worker gets) is for pods that share one host network, as under the
    # local pod runner, where a second worker could not bind 0.0.0.0 on the same port.
    http_host: str = "0.0.0.0"


@dataclass(frozen=True)
class Rendered:
    objects: list[Json]
    config_hash: str


def child_name(pipeline: str, suffix: str = "") -> str:
    """`deltaforge-<pipeline>[-suffix]`, cut with a hash suffix to a DNS label's 63 characters."""
    name = f"deltaforge-{pipeline}{'-' + suffix if suffix else ''}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9].rstrip('-')}-{digest}"


def checkpoint_config_map(pipeline: Pipeline) -> str:
    """The ConfigMap the worker keeps its position in (the runtime's default name unless configured)."""
    configured = pipeline.spec.checkpoint
    if configured is not None and configured.kubernetes is not None and configured.kubernetes.config_map:
        return configured.kubernetes.config_map
    return f"{pipeline.name}-checkpoint"


def labels(pipeline: str) -> dict[str, str]:
    """The labels of every child; the operator watches objects carrying `MANAGED_BY`."""
    return {
        "app.kubernetes.io/name": "deltaforge-worker",
        "app.kubernetes.io/instance": pipeline,
        PART_OF: "deltaforge",
        MANAGED_BY: OPERATOR,
        PIPELINE_LABEL: pipeline,
    }


def selector(pipeline: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "deltaforge-worker", PIPELINE_LABEL: pipeline}


def secret_references(pipeline: Pipeline) -> dict[str, list[str]]:
    """The user's Secrets the spec references, each with the keys it uses (sorted)."""
    found: dict[str, set[str]] = {}
    for _, credential in iter_credentials(pipeline.spec, "spec"):
        if credential.secret_key_ref is not None:
            found.setdefault(credential.secret_key_ref.name, set()).add(credential.secret_key_ref.key)
    return {name: sorted(keys) for name, keys in sorted(found.items())}


def worker_manifest(pipeline: Pipeline) -> tuple[Json, dict[str, str]]:
    """The manifest the worker runs, and the literal credentials moved out of it (key -> value).

    Metadata keeps only name and namespace: labels and annotations (such as kubectl's
    last-applied-configuration, which repeats the spec with any literal password) stay out.
    `state` is the operator's to act on (it scales the Deployment), so pausing does not roll the
    worker; the checkpoint store is written out so the worker does not have to guess it.
    """
    manifest = pipeline.to_manifest(reveal_credentials=True)
    manifest["metadata"] = {"name": pipeline.name, "namespace": pipeline.namespace}
    spec = manifest["spec"]
    spec.pop("state", None)
    if spec.get("checkpoint", {}).get("file") is not None:
        raise RenderError(
            [Issue("spec.checkpoint.file", "a file checkpoint is for standalone runs: a worker pod has a "
                   "read-only file system and no volume; remove it to keep the position in a ConfigMap")]
        )  # fmt: skip
    spec["checkpoint"] = {"kubernetes": {"configMap": checkpoint_config_map(pipeline)}}
    literals: dict[str, str] = {}
    issues: list[Issue] = []
    for path, credential in iter_credentials(pipeline.spec, "spec"):
        if credential.literal is None:
            continue
        value = credential.literal.get_secret_value()
        if _ENV_REFERENCE.search(value):
            issues.append(Issue(path, "${NAME} references have nothing to expand in a worker pod; "
                                      "use secretKeyRef: {name, key}"))  # fmt: skip
            continue
        key = path.removeprefix("spec.").replace("[", ".").replace("]", "")
        literals[key] = value
        _set(manifest, path, {"secretKeyRef": {"name": child_name(pipeline.name, "credentials"), "key": key}})
    if issues:
        raise RenderError(issues)
    return manifest, literals


def _set(document: Json, path: str, value: object) -> None:
    """Replace the value at a manifest path such as `spec.sinks[1].redis.url`."""
    steps: list[str | int] = []
    for part in path.split("."):
        match = _PATH_PART.fullmatch(part)
        if match is None:
            raise ValueError(f"not a manifest path: {path!r}")
        steps.append(match.group(1))
        steps.extend(int(index) for index in re.findall(r"\d+", match.group(2)))
    node: Any = document
    for step in steps[:-1]:
        node = node[step]
    node[steps[-1]] = value


def config_hash(
    config: str, literals: Mapping[str, str], secrets: Mapping[str, Mapping[str, bytes] | None]
) -> str:
    """A digest of everything the worker reads at start: a change rolls the pod template.

    Only the referenced keys of each Secret count, so an unrelated key does not restart the worker;
    a missing Secret or key counts as its own value, so creating it later rolls the worker too.
    """
    digest = hashlib.sha256(config.encode())
    for key, value in sorted(literals.items()):
        digest.update(b"\0literal\0" + key.encode() + b"\0" + value.encode())
    for name, data in sorted(secrets.items()):
        digest.update(b"\0secret\0" + name.encode())
        for key, raw in sorted((data or {}).items()):
            digest.update(b"\0" + key.encode() + b"\0" + hashlib.sha256(raw).digest())
        if data is None:
            digest.update(b"\0missing")
    return digest.hexdigest()[:16]


def render(
    pipeline: Pipeline,
    *,
    uid: str,
    settings: WorkerSettings,
    secrets: Mapping[str, Mapping[str, bytes] | None],
    restarted_at: str | None,
) -> Rendered:
    """Every child of `pipeline` (whose object uid is `uid`) as apply-ready manifests.

    `secrets` holds the referenced keys of each Secret the spec names (None when it is missing);
    `restarted_at` is the value of the last restart request, kept in the pod template.
    """
    manifest, literals = worker_manifest(pipeline)
    config = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    digest = config_hash(config, literals, {name: secrets.get(name) for name in secret_references(pipeline)})
    name, namespace = pipeline.name, pipeline.namespace
    owner = {
        "apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
        "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip

    def metadata(object_name: str, **extra: Any) -> Json:
        return {"name": object_name, "namespace": namespace, "labels": labels(name),
                "ownerReferences": [owner], **extra}  # fmt: skip

    worker = child_name(name)
    objects: list[Json] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(child_name(name, "config")),
         "data": {CONFIG_KEY: config}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": metadata(child_name(name, "credentials")),
         "type": "Opaque",
         "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(literals.items())}},
        _checkpoint(pipeline, owner),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(worker),
         "automountServiceAccountToken": True},
        _role(pipeline, metadata(worker)),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata(worker),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": worker},
         "subjects": [{"kind": "ServiceAccount", "name": worker, "namespace": namespace}]},
        # Headless: it exists so scrapers find the one worker pod; a virtual IP per Pipeline would
        # only use up the cluster's Service range (a /24 holds 254 Pipelines).
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata(worker),
         "spec": {"type": "ClusterIP", "clusterIP": "None", "selector": selector(name),
                  "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}]}},
        _deployment(pipeline, metadata(worker, annotations={STATE: pipeline.spec.state.value}),
                    settings, digest=digest, restarted_at=restarted_at, literal_keys=sorted(literals)),
    ]  # fmt: skip
    return Rendered(objects=objects, config_hash=digest)


def _checkpoint(pipeline: Pipeline, owner: Json) -> Json:
    """The worker's checkpoint ConfigMap, without data: the worker writes that, the operator never.

    Pre-created so the worker's Role needs no `create`. It follows the slot's reclaim policy:
    owned (deleted with the Pipeline) only with `Delete`, so re-creating a Pipeline whose slot was
    retained resumes from the same position. It lacks the managed-by label on purpose: the worker
    writes it every second, and those writes must not wake the operator.
    """
    postgres = pipeline.spec.source.postgres
    owned = postgres is not None and postgres.slot.reclaim_policy.value == "Delete"
    metadata: Json = {
        "name": checkpoint_config_map(pipeline), "namespace": pipeline.namespace,
        "labels": {PART_OF: "deltaforge", PIPELINE_LABEL: pipeline.name},
    }  # fmt: skip
    if owned:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}


def _role(pipeline: Pipeline, metadata: Json) -> Json:
    """Only what the worker needs: its checkpoint ConfigMap and its own Pipeline's status."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata,
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"],
             "resourceNames": [checkpoint_config_map(pipeline)], "verbs": ["get", "patch", "update"]},
            {"apiGroups": [GROUP], "resources": ["pipelines/status"],
             "resourceNames": [pipeline.name], "verbs": ["get", "patch"]},
        ],
    }  # fmt: skip


def _deployment(
    pipeline: Pipeline,
    metadata: Json,
    settings: WorkerSettings,
    *,
    digest: str,
    restarted_at: str | None,
    literal_keys: list[str],
) -> Json:
    name = pipeline.name
    template_annotations = {CONFIG_HASH: digest}
    if restarted_at:
        template_annotations[RESTARTED_AT] = restarted_at
    volumes, mounts = config_volumes(
        pipeline,
        literal_keys,
        config_map=child_name(name, "config"),
        credentials=child_name(name, "credentials"),
    )
    volumes.append({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    container: Json = {
        "name": "worker",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["deltaforge"],
        "args": ["run", f"{CONFIG_DIR}/{CONFIG_KEY}", f"--http-host={settings.http_host}",
                 f"--http-port={METRICS_PORT}"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"},
                           "periodSeconds": 3, "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "initialDelaySeconds": 10,
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1 if pipeline.spec.state.value == "running" else 0,
            # Never two workers on one slot or binlog position: the old pod stops before a new one starts.
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": labels(name), "annotations": template_annotations},
                "spec": {
                    "serviceAccountName": child_name(name),
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }  # fmt: skip


def pod_security() -> Json:
    """Non-root with a fixed id and the runtime's default seccomp profile (the restricted standard)."""
    return {"runAsNonRoot": True, "runAsUser": _NON_ROOT_ID, "runAsGroup": _NON_ROOT_ID,
            "fsGroup": _NON_ROOT_ID, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip


def container_security() -> Json:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}  # fmt: skip


def config_volumes(
    pipeline: Pipeline, literal_keys: list[str], *, config_map: str, credentials: str
) -> tuple[list[Json], list[Json]]:
    """Volumes and mounts for `pipeline.yaml` (from `config_map`) and every Secret it references.

    Each Secret is mounted read-only at `<secrets dir>/<name>/` with only the referenced keys, where
    the runtime's credential resolution reads a `secretKeyRef`. The literal credentials come from
    `credentials` but are mounted under the name the manifest references (the pipeline's
    credentials Secret), so the cleanup Job can bring a copy of its own with the same manifest.
    """
    volumes: list[Json] = [{"name": "config", "configMap": {"name": config_map}}]
    mounts: list[Json] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    secrets = {name: (name, keys) for name, keys in secret_references(pipeline).items()}
    if literal_keys:
        secrets[child_name(pipeline.name, "credentials")] = (credentials, literal_keys)
    for index, (mounted_as, (secret, keys)) in enumerate(sorted(secrets.items())):
        volumes.append({
            "name": f"secret-{index}",
            "secret": {"secretName": secret, "defaultMode": 0o440,
                       "items": [{"key": key, "path": key} for key in keys]},
        })  # fmt: skip
        mounts.append(
            {"name": f"secret-{index}", "mountPath": f"{DEFAULT_SECRETS_DIR}/{mounted_as}", "readOnly": True}
        )
    return volumes, mounts


def released(pipeline: str) -> list[tuple[str, str]]:
    """(kind, name) of the children a stopped Pipeline gives up, its Deployment last.

    Everything that only a running worker needs: what is left is the Pipeline, its checkpoint
    ConfigMap and the replication slot, so the position survives. The Deployment goes last: while
    it exists, a later pass knows the release is not finished.
    """
    worker = child_name(pipeline)
    return [
        ("Service", worker), ("RoleBinding", worker), ("Role", worker), ("ServiceAccount", worker),
        ("Secret", child_name(pipeline, "credentials")), ("ConfigMap", child_name(pipeline, "config")),
        ("Deployment", worker),
    ]  # fmt: skip


def canonical(objects: list[Json]) -> bytes:
    """A stable byte form of rendered objects, to tell whether anything changed since the last apply."""
    return orjson.dumps(objects, option=orjson.OPT_SORT_KEYS)
