"""The processes of a local cluster: where its pieces live (Layout), each component's command line, what
ready means for each, and the table of them in the order they start (`down` stops them in reverse)."""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
NODE_NAME = "nbkube-node"


@dataclass(frozen=True)
class Layout:
    """Where one cluster's pieces live: its directory, binaries, ports, certificates and kubeconfig."""

    dir: Path
    assets: Path
    ports: dict[str, int]
    pki: Any
    kubeconfig: Path
    pod_octet: int
    version: str = ""  # the API server's, known once it is ready (the node agent reports it)

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"


def etcd_argv(layout: Layout) -> list[str]:
    peer_url = f"http://127.0.0.1:{layout.ports['etcd_peer']}"
    return [
        str(layout.assets / "etcd"),
        "--name=default",
        f"--data-dir={layout.dir / 'etcd'}",
        f"--listen-client-urls={layout.etcd_url}",
        f"--advertise-client-urls={layout.etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(layout: Layout) -> list[str]:
    from nbkube_testenv import pki as pki_mod

    pki = layout.pki
    return [
        str(layout.assets / "kube-apiserver"),
        f"--etcd-servers={layout.etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={layout.ports['apiserver']}",
        f"--cert-dir={pki.dir}",
        f"--tls-cert-file={pki.apiserver_crt}",
        f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_crt}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
        # The aggregation layer: the API server authenticates every caller, then forwards the request to
        # an aggregated API server (nbkube's operator) over mTLS with this front-proxy client certificate
        # and the caller's identity in X-Remote-* headers.
        f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
        f"--requestheader-allowed-names={pki_mod.FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-uid-headers=X-Remote-Uid",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client_crt}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
    ]


def _control_plane_client(layout: Layout) -> list[str]:
    kc = str(layout.kubeconfig)
    return [
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
    ]


def controller_manager_argv(layout: Layout) -> list[str]:
    pki = layout.pki
    return [
        str(layout.assets / "kube-controller-manager"),
        *_control_plane_client(layout),
        f"--secure-port={layout.ports['kcm']}",
        f"--cert-dir={layout.dir / 'kcm'}",
        "--controllers=*",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_crt}",
        f"--cluster-signing-cert-file={pki.ca_crt}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    ]


def scheduler_argv(layout: Layout) -> list[str]:
    return [
        str(layout.assets / "kube-scheduler"),
        *_control_plane_client(layout),
        f"--secure-port={layout.ports['scheduler']}",
        f"--cert-dir={layout.dir / 'scheduler'}",
    ]


def nodeagent_argv(layout: Layout) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nbkube_testenv.nodeagent",
        f"--kubeconfig={layout.kubeconfig}",
        f"--dir={layout.dir}",
        f"--node-name={NODE_NAME}",
        f"--kubelet-version={layout.version}",
        f"--pod-octet={layout.pod_octet}",
    ]


# -- readiness ---------------------------------------------------------------------------------------
# A GET on the API server as admin: (HTTP status, parsed body).
Api = Callable[[str], tuple[int, dict[str, Any]]]
Check = Callable[[Layout, Api], bool]


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False


def _etcd_healthy(layout: Layout, api: Api) -> bool:
    return http_ok(layout.etcd_url + "/health")


def _apiserver_ready(layout: Layout, api: Api) -> bool:
    return api("/readyz")[0] == 200


def _healthz(port: str) -> Check:
    """The component's own /healthz on its secure port (a self-signed serving certificate)."""

    def check(layout: Layout, api: Api) -> bool:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        return http_ok(f"https://127.0.0.1:{layout.ports[port]}/healthz", insecure)

    return check


def _default_service_account(layout: Layout, api: Api) -> bool:
    return api("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200


def node_ready(layout: Layout, api: Api) -> bool:
    status, node = api(f"/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conds = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@dataclass(frozen=True)
class Component:
    """One process of the cluster: its command line, the ports it binds, and its readiness checks, each
    with what it means (as "<name> exited before <what>" says it), checked in order."""

    name: str
    argv: Callable[[Layout], list[str]]
    ports: tuple[str, ...]
    ready: tuple[tuple[Check, str], ...]


ETCD = Component("etcd", etcd_argv, ("etcd", "etcd_peer"), ((_etcd_healthy, "healthy"),))
APISERVER = Component("kube-apiserver", apiserver_argv, ("apiserver",), ((_apiserver_ready, "ready"),))
CONTROLLER_MANAGER = Component(
    "kube-controller-manager",
    controller_manager_argv,
    ("kcm",),
    (
        (_healthz("kcm"), "healthy"),
        (_default_service_account, "ready (no default ServiceAccount in namespace default)"),
    ),
)
SCHEDULER = Component("kube-scheduler", scheduler_argv, ("scheduler",), ((_healthz("scheduler"), "healthy"),))
NODE_AGENT = Component("nodeagent", nodeagent_argv, (), ((node_ready, "a Ready node"),))
# The order processes start in; `down` stops them in reverse (the node agent first: it ends its pods).
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, NODE_AGENT)
