"""From a pod's container to a local process: argv, environment and volume contents. Pure logic.

Works on the pod as a JSON dict (as the API server sends it); ConfigMaps, Secrets and tokens come
through the small `ObjectSource` protocol so the logic can be tested without a cluster.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Json = dict[str, Any]
DEFAULT_FILE_MODE = 0o644


class ContainerConfigError(Exception):
    """The container cannot start yet (missing ConfigMap, Secret or key); reported as the kubelet does."""

    reason = "CreateContainerConfigError"


class ObjectSource(Protocol):
    def config_map(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...

    def service_account_token(
        self, namespace: str, service_account: str, audience: str | None, expiration_seconds: int
    ) -> str: ...


@dataclass(frozen=True)
class Mount:
    volume: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one container as a process."""

    argv: list[str]
    env: dict[str, str]
    working_dir: str | None
    mounts: list[Mount] = field(default_factory=list)


_FIELD_LABEL = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def field_value(pod: Json, path: str) -> str:
    """The downward API: the fields a `fieldRef` may name."""
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(entry["ip"] for entry in status.get("podIPs", [])),
    }
    if path in simple:
        return str(simple[path] or "")
    match = _FIELD_LABEL.fullmatch(path)
    if match:
        return str(metadata.get(match.group(1), {}).get(match.group(2), ""))
    raise ContainerConfigError(f"fieldRef {path!r} is not supported by the pod runner")


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known variables are replaced, `$$` escapes, unknown stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def _lookup(objects: ObjectSource, kind: str, namespace: str, reference: Json) -> Mapping[str, bytes] | None:
    fetch = objects.config_map if kind == "configmap" else objects.secret
    data = fetch(namespace, reference["name"])
    if data is None and not reference.get("optional", False):
        raise ContainerConfigError(f'{kind} "{reference["name"]}" not found')
    return data


def _key_value(objects: ObjectSource, kind: str, namespace: str, reference: Json) -> str | None:
    data = _lookup(objects, kind, namespace, reference)
    if data is None:
        return None
    if reference["key"] not in data:
        if reference.get("optional", False):
            return None
        raise ContainerConfigError(
            f"couldn't find key {reference['key']} in {kind} {namespace}/{reference['name']}"
        )
    return data[reference["key"]].decode()


def container_environment(
    pod: Json, container: Json, objects: ObjectSource, base: Mapping[str, str]
) -> dict[str, str]:
    """`base`, then `envFrom` sources, then `env` entries (later wins), with `$(VAR)` expansion."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = _lookup(objects, "configmap", namespace, source["configMapRef"])
        else:
            data = _lookup(objects, "secret", namespace, source["secretRef"])
        for key, raw in (data or {}).items():
            env[prefix + key] = raw.decode()
    for entry in container.get("env", []):
        value: str | None
        if "valueFrom" not in entry:
            value = expand(entry.get("value", ""), env)
        else:
            source = entry["valueFrom"]
            if "fieldRef" in source:
                value = field_value(pod, source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source:
                value = _key_value(objects, "configmap", namespace, source["configMapKeyRef"])
            elif "secretKeyRef" in source:
                value = _key_value(objects, "secret", namespace, source["secretKeyRef"])
            else:
                raise ContainerConfigError(
                    f"env {entry['name']}: only fieldRef, configMapKeyRef and secretKeyRef are supported"
                )
        if value is not None:
            env[entry["name"]] = value
    return env


def launch_for(pod: Json, container: Json, objects: ObjectSource, base_env: Mapping[str, str]) -> Launch:
    if not container.get("command"):
        raise ContainerConfigError(
            f"container {container['name']} has no command: the pod runner does not pull images, "
            "so it runs only containers that set `command`"
        )
    env = container_environment(pod, container, objects, base_env)
    argv = [expand(part, env) for part in [*container["command"], *container.get("args", [])]]
    mounts = [
        Mount(
            volume=mount["name"],
            mount_path=mount["mountPath"],
            sub_path=mount.get("subPath", ""),
            read_only=bool(mount.get("readOnly", False)),
        )
        for mount in container.get("volumeMounts", [])
    ]
    return Launch(argv=argv, env=env, working_dir=container.get("workingDir"), mounts=mounts)


def _items(
    data: Mapping[str, bytes], items: list[Json] | None, default_mode: int
) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    return {
        item["path"]: (data[item["key"]], item.get("mode", default_mode))
        for item in items
        if item["key"] in data
    }


def volume_files(pod: Json, volume: Json, objects: ObjectSource) -> dict[str, tuple[bytes, int]] | None:
    """The files a volume holds (path -> content, mode), or None for an empty directory."""
    namespace = pod["metadata"]["namespace"]
    if "emptyDir" in volume:
        return None
    if "configMap" in volume:
        source = volume["configMap"]
        data = _lookup(objects, "configmap", namespace, source) or {}
        return _items(data, source.get("items"), source.get("defaultMode", DEFAULT_FILE_MODE))
    if "secret" in volume:
        source = volume["secret"]
        data = _lookup(objects, "secret", namespace, {**source, "name": source["secretName"]}) or {}
        return _items(data, source.get("items"), source.get("defaultMode", DEFAULT_FILE_MODE))
    if "downwardAPI" in volume:
        source = volume["downwardAPI"]
        return _downward_files(pod, source.get("items", []), source.get("defaultMode", DEFAULT_FILE_MODE))
    if "projected" in volume:
        return _projected_files(pod, volume["projected"], objects)
    kinds = ", ".join(sorted(key for key in volume if key != "name"))
    raise ContainerConfigError(
        f"volume {volume['name']}: {kinds} volumes are not supported by the pod runner"
    )


def _downward_files(pod: Json, items: list[Json], default_mode: int) -> dict[str, tuple[bytes, int]]:
    return {
        item["path"]: (
            field_value(pod, item["fieldRef"]["fieldPath"]).encode(),
            item.get("mode", default_mode),
        )
        for item in items
        if "fieldRef" in item
    }


def _projected_files(pod: Json, projected: Json, objects: ObjectSource) -> dict[str, tuple[bytes, int]]:
    """Projected volumes, including the service-account token volume every pod gets."""
    namespace = pod["metadata"]["namespace"]
    default_mode = projected.get("defaultMode", DEFAULT_FILE_MODE)
    files: dict[str, tuple[bytes, int]] = {}
    for source in projected.get("sources", []):
        if "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            token = objects.service_account_token(
                namespace,
                pod["spec"].get("serviceAccountName", "default"),
                token_source.get("audience"),
                int(token_source.get("expirationSeconds", 3607)),
            )
            files[token_source["path"]] = (token.encode(), default_mode)
        elif "configMap" in source:
            data = _lookup(objects, "configmap", namespace, source["configMap"]) or {}
            files.update(_items(data, source["configMap"].get("items"), default_mode))
        elif "secret" in source:
            data = _lookup(objects, "secret", namespace, source["secret"]) or {}
            files.update(_items(data, source["secret"].get("items"), default_mode))
        elif "downwardAPI" in source:
            files.update(_downward_files(pod, source["downwardAPI"].get("items", []), default_mode))
    return files


def decode_secret_data(secret: Json) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


def config_map_data(config_map: Json) -> dict[str, bytes]:
    data = {key: value.encode() for key, value in (config_map.get("data") or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (config_map.get("binaryData") or {}).items()})
    return data
