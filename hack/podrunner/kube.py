"""The pod runner's API calls, on raw JSON (no model conversion), as the one I/O module."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hack.podrunner.spec import config_map_data, decode_secret_data

Json = dict[str, Any]
NOT_FOUND = 404


def _json(response: Any) -> Json:
    result: Json = json.loads(response.data)
    return result


def _read_or_none(read: Callable[..., Any], namespace: str, name: str) -> Json | None:
    try:
        return _json(read(name, namespace, _preload_content=False))
    except ApiException as error:
        if error.status == NOT_FOUND:
            return None
        raise


class Kube:
    """CoreV1 calls the runner needs; also the `ObjectSource` of spec.py for ConfigMaps, Secrets, tokens."""

    def __init__(self, kubeconfig: str) -> None:
        self.api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(self.api_client)

    def list_pods(self, label_selector: str) -> list[Json]:
        response = self.core.list_pod_for_all_namespaces(
            label_selector=label_selector, _preload_content=False
        )
        items: list[Json] = _json(response)["items"]
        return items

    def bind(self, pod: Json, node: str) -> None:
        metadata = pod["metadata"]
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=metadata["name"], uid=metadata["uid"]),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
        )
        # The typed client cannot read Binding replies back; the raw reply is enough.
        self.core.create_namespaced_pod_binding(
            metadata["name"], metadata["namespace"], body, _preload_content=False
        )

    def patch_status(self, pod: Json, status: Json) -> None:
        metadata = pod["metadata"]
        self.core.patch_namespaced_pod_status(
            metadata["name"], metadata["namespace"], {"status": status}, _preload_content=False
        )

    def finish_deletion(self, pod: Json) -> None:
        """What the kubelet does once the containers stopped: remove the pod for good."""
        metadata = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                metadata["name"],
                metadata["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=metadata["uid"])
                ),
                _preload_content=False,
            )
        except ApiException as error:
            if error.status not in (NOT_FOUND, 409):
                raise

    def ensure_node(self, name: str, address: str, labels: Mapping[str, str]) -> None:
        node = client.V1Node(
            metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name, **labels})
        )
        try:
            self.core.create_node(node, _preload_content=False)
        except ApiException as error:
            if error.status != 409:
                raise
        capacity = {"cpu": "2", "memory": "24Gi", "pods": "1000"}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "PodRunnerReady",
                    "message": "the local pod runner is up",
                }
            ],
            "nodeInfo": {
                "kubeletVersion": "podrunner",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "podrunner://local-processes",
                "kernelVersion": "",
                "osImage": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        self.core.patch_node_status(name, {"status": status}, _preload_content=False)

    def config_map(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        found = _read_or_none(self.core.read_namespaced_config_map, namespace, name)
        return None if found is None else config_map_data(found)

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        found = _read_or_none(self.core.read_namespaced_secret, namespace, name)
        return None if found is None else decode_secret_data(found)

    def service_account_token(
        self, namespace: str, service_account: str, audience: str | None, expiration_seconds: int
    ) -> str:
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [], expiration_seconds=max(expiration_seconds, 600)
            )
        )
        response = self.core.create_namespaced_service_account_token(
            service_account, namespace, body, _preload_content=False
        )
        token: str = _json(response)["status"]["token"]
        return token
