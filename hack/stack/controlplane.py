"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

Built from the Go module proxy (see gobuild.py), started like the data services, with a local CA,
a serving certificate for 127.0.0.1, service-account keys and a static admin token. Nothing runs
pods here (no kubelet, no scheduler): hack/podrunner does that for the pods of our tests.
"""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from hack.stack import gobuild, k8s_tools, process
from hack.stack.config import HOST, Settings
from hack.stack.packages import Requirement
from hack.stack.service import Service

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
ADMIN_USER = "deltaforge-admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_SERVING_NAMES = (
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)


def kubernetes_bin(settings: Settings) -> Path:
    return settings.cache_dir / "kubernetes" / KUBERNETES_VERSION / "bin"


def _version_ldflags() -> str:
    """Without these, /version reports v0.0.0 and Helm's kubeVersion checks fail."""
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=2026-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def build_kubernetes(settings: Settings) -> Path:
    target = kubernetes_bin(settings)
    gobuild.build(
        what=f"kube-apiserver and kube-controller-manager {KUBERNETES_VERSION}",
        module="kubernetes",
        packages=["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager"],
        binaries=["kube-apiserver", "kube-controller-manager"],
        target=target,
        ldflags=_version_ldflags(),
    )
    return target


class _ProcessService(Service):
    """A control-plane server we start ourselves and track with our own PID file."""

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    def pid(self) -> int | None:
        return process.read_pid(self.pid_file)

    def _spawn(self, argv: list[str]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        pid = process.spawn_detached(argv, self.log_path, cwd=self.home)
        self.pid_file.write_text(f"{pid}\n")


class Etcd(_ProcessService):
    name = "etcd"
    command_marker = "bin/etcd"

    @property
    def port(self) -> int:
        return self.settings.etcd_port

    @property
    def binary(self) -> Path:
        return self.settings.cache_dir / "etcd" / ETCD_VERSION / "bin" / "etcd"

    def requirements(self) -> list[Requirement]:
        return []

    def prepare(self) -> None:
        gobuild.build(
            what=f"etcd {ETCD_VERSION}",
            module="etcd",
            packages=["go.etcd.io/etcd/server/v3"],
            binaries=["etcd"],
            target=self.binary.parent,
        )

    def launch(self) -> None:
        client_url = f"http://{HOST}:{self.port}"
        peer_url = f"http://{HOST}:{self.settings.etcd_peer_port}"
        self._spawn(
            [
                str(self.binary),
                "--name=deltaforge",
                f"--data-dir={self.home / 'data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=deltaforge={peer_url}",
                "--unsafe-no-fsync",  # test-only: a crash of this throwaway etcd may lose data
                "--log-level=warn",
            ]
        )

    def accepting(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def environment(self) -> dict[str, str]:
        return {"DELTAFORGE_ETCD_ENDPOINT": f"http://{HOST}:{self.port}"}


class KubeApiserver(_ProcessService):
    name = "kube-apiserver"
    command_marker = "kube-apiserver"
    depends_on = ("etcd",)
    start_timeout = 120

    @property
    def port(self) -> int:
        return self.settings.apiserver_port

    @property
    def pki(self) -> Path:
        return self.settings.kube_dir / "pki"

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    def requirements(self) -> list[Requirement]:
        return [Requirement("openssl", "openssl", "openssl creates the local control plane's certificates")]

    def prepare(self) -> None:
        build_kubernetes(self.settings)
        k8s_tools.ensure_tools(self.settings.cache_dir)

    def admin_token(self) -> str:
        token_file = self.settings.kube_dir / "admin-token"
        if not token_file.exists():
            self.settings.kube_dir.mkdir(parents=True, exist_ok=True)
            token_file.write_text(secrets.token_hex(24))
            token_file.chmod(0o600)
        return token_file.read_text().strip()

    def _ensure_pki(self) -> None:
        """A CA, a serving certificate for 127.0.0.1 and kubernetes.default, service-account keys."""
        if (self.pki / "sa.key").exists():
            return
        self.pki.mkdir(parents=True, exist_ok=True)
        openssl = "openssl"
        what = "creating the control plane's certificates"
        process.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-keyout", str(self.pki / "ca.key"), "-out", str(self.pki / "ca.crt"), "-subj", "/CN=deltaforge-local-ca"],
            what=what,
        )  # fmt: skip
        process.run(
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.pki / "apiserver.key"),
             "-out", str(self.pki / "apiserver.csr"), "-subj", "/CN=kube-apiserver"],
            what=what,
        )  # fmt: skip
        (self.pki / "apiserver.ext").write_text(f"subjectAltName={_SERVING_NAMES}\n")
        process.run(
            [openssl, "x509", "-req", "-days", "3650", "-in", str(self.pki / "apiserver.csr"),
             "-CA", str(self.pki / "ca.crt"), "-CAkey", str(self.pki / "ca.key"), "-CAcreateserial",
             "-extfile", str(self.pki / "apiserver.ext"), "-out", str(self.pki / "apiserver.crt")],
            what=what,
        )  # fmt: skip
        process.run([openssl, "genrsa", "-out", str(self.pki / "sa.key"), "2048"], what=what)

    def _write_kubeconfig(self) -> None:
        # JSON is YAML: kubectl, helm and the Python client all read this file.
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "deltaforge-local",
                    "cluster": {"server": self.url, "certificate-authority": str(self.pki / "ca.crt")},
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token()}}],
            "contexts": [
                {"name": "deltaforge-local", "context": {"cluster": "deltaforge-local", "user": ADMIN_USER}}
            ],
            "current-context": "deltaforge-local",
        }
        self.settings.kubeconfig.write_text(json.dumps(kubeconfig, indent=2) + "\n")
        self.settings.kubeconfig.chmod(0o600)

    def launch(self) -> None:
        self._ensure_pki()
        tokens = self.settings.kube_dir / "tokens.csv"
        tokens.write_text(f'{self.admin_token()},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        self._write_kubeconfig()
        self._spawn(
            [
                str(kubernetes_bin(self.settings) / "kube-apiserver"),
                f"--etcd-servers=http://{HOST}:{self.settings.etcd_port}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                f"--client-ca-file={self.pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={tokens}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.pki / 'sa.key'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                "--allow-privileged=true",
                "--profiling=false",
            ]
        )

    def accepting(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token()}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=3, context=context) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def environment(self) -> dict[str, str]:
        tools = k8s_tools.tools_dir(self.settings.cache_dir)
        return {
            "KUBECONFIG": str(self.settings.kubeconfig),
            "DELTAFORGE_APISERVER_URL": self.url,
            "DELTAFORGE_KUBECTL": str(tools / "kubectl"),
            "DELTAFORGE_HELM": str(tools / "helm"),
        }


class KubeControllerManager(_ProcessService):
    name = "kube-controller-manager"
    command_marker = "kube-controller-manager"
    depends_on = ("kube-apiserver",)

    @property
    def port(self) -> int:
        return self.settings.controller_manager_port

    def requirements(self) -> list[Requirement]:
        return []

    def prepare(self) -> None:
        build_kubernetes(self.settings)

    def launch(self) -> None:
        pki = self.settings.kube_dir / "pki"
        kubeconfig = str(self.settings.kubeconfig)
        self._spawn(
            [
                str(kubernetes_bin(self.settings) / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.home / 'certs'}",
                "--leader-elect=false",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                # No kubelet heartbeats here: the node lifecycle controller would taint the pod
                # runner's node unreachable and evict its pods.
                "--controllers=*,-nodelifecycle",
            ]
        )

    def accepting(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed per start
        try:
            with urllib.request.urlopen(
                f"https://{HOST}:{self.port}/healthz", timeout=3, context=context
            ) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def environment(self) -> dict[str, str]:
        return {}
