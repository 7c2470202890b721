"""The operator's only I/O with the API server: raw JSON requests through the `kubernetes` client.

Objects stay plain dicts end to end (no model classes), children are written with server-side
apply under one field manager with `force`, so a field someone edited by hand is taken back and
a deleted child is created again. Calls block; the reconciler runs them in threads.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deltaforge.spec import API_VERSION

Json = dict[str, Any]
FIELD_MANAGER: Final = "deltaforge-operator"
NOT_FOUND: Final = 404
REQUEST_TIMEOUT: Final = (5.0, 30.0)  # connect, read

# Kind -> (API prefix, plural) of every kind the operator reads or writes.
_RESOURCES: Final[dict[str, tuple[str, str]]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "Pipeline": (f"/apis/{API_VERSION}", "pipelines"),
}


def path(kind: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural = _RESOURCES[kind]
    result = f"{prefix}/namespaces/{quote(namespace)}/{plural}" if namespace else f"{prefix}/{plural}"
    if name is not None:
        result += f"/{quote(name)}"
    if subresource is not None:
        result += f"/{subresource}"
    return result


def new_api_client() -> client.ApiClient:
    """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config (as kopf's login)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    api: client.ApiClient = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return api


def _failure(reason: str | None, data: bytes | None, url: str) -> str:
    """The API server's message, except for Secrets, whose errors may quote a value."""
    if "/secrets" in url or not data:
        return reason or ""
    try:
        message = json.loads(data).get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{reason}: {message}" if message else reason or ""


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.instance = socket.gethostname()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: object = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Json]:
        """(HTTP status, parsed body); raises ApiException for anything but 2xx."""
        if query:
            url += "?" + urlencode(query)
        serialized = self.api.param_serialize(
            method=method,
            resource_path=url,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=_failure(response.reason, data, url))
        return response.status, json.loads(data) if data else {}

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        try:
            return self.request("GET", path(kind, namespace, name))[1]
        except ApiException as error:
            if error.status == NOT_FOUND:
                return None
            raise

    def list(self, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Json]:
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[Json] = self.request("GET", path(kind, namespace), query=query)[1].get("items", [])
        return items

    def apply(self, manifest: Json) -> bool:
        """Server-side apply; True when the object was created (it did not exist)."""
        return self.apply_object(manifest)[0]

    def apply_object(self, manifest: Json) -> tuple[bool, Json]:
        """Server-side apply: (created, the object as stored)."""
        metadata = manifest["metadata"]
        status, stored = self.request(
            "PATCH",
            path(manifest["kind"], metadata["namespace"], metadata["name"]),
            body=manifest,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        return status == 201, stored

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete with its dependents in the background (a Job's pods); gone already is fine."""
        try:
            self.request("DELETE", path(kind, namespace, name), body={"propagationPolicy": "Background"})
        except ApiException as error:
            if error.status != NOT_FOUND:
                raise

    def merge_patch(
        self, kind: str, namespace: str, name: str, body: Json, *, subresource: str | None = None
    ) -> Json:
        """A JSON merge patch; returns the object as stored."""
        return self.request(
            "PATCH",
            path(kind, namespace, name, subresource),
            body=body,
            content_type="application/merge-patch+json",
        )[1]

    def post_event(self, involved: Json, *, warning: bool, reason: str, message: str) -> None:
        """A core/v1 Event about `involved` (a Pipeline), as `kubectl describe` lists them."""
        metadata = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION, "kind": "Pipeline", "name": metadata["name"],
                "namespace": metadata["namespace"], "uid": metadata.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": f"deltaforge.io/{FIELD_MANAGER}",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }  # fmt: skip
        self.request("POST", path("Event", metadata["namespace"]), body=event)
