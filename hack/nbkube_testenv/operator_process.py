"""The nbkube operator as a local process on the local cluster, under the chart's identity.

Installs the CRDs and the operator's ServiceAccount, ClusterRole (the chart's own rules file) and
binding, then runs `kopf run -m nbkube.handlers` with a kubeconfig holding that ServiceAccount's
token, so every API call the operator makes is checked against exactly what the chart grants.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from nbkube.userapi.paths import APISERVICE, GROUP, PREFIX, VERSION

from nbkube_testenv.cluster import ClusterInfo, free_port
from nbkube_testenv.operator_rbac import operator_namespace_rbac_manifests
from nbkube_testenv.userapi import ApiUser

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "nbkube-system"
SERVICE_ACCOUNT = "nbkube-operator"


def kubectl(info: ClusterInfo, *args: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [str(info.kubectl), f"--kubeconfig={info.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def rbac_manifests(
    namespace: str = OPERATOR_NAMESPACE,
    name: str = SERVICE_ACCOUNT,
    watch_namespaces: tuple[str, ...] = (),
    read_secrets: bool = True,
) -> list[dict[str, Any]]:
    """The chart's operator RBAC for ServiceAccount namespace/name: the rules files (with the Secret
    reader rules unless read_secrets is false, as the chart's rbac.readSecrets), bound cluster-wide or
    (watch_namespaces) by a RoleBinding in each namespace watched, the cluster-scoped rules, and the
    built-in reader Role of the front-proxy settings in kube-system."""
    files = REPO / "charts" / "nbkube" / "files"
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}

    def role(role_name: str, *rules_files: str) -> dict[str, Any]:
        rules = [rule for f in rules_files for rule in yaml.safe_load((files / f).read_text())]
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role_name},
            "rules": rules,
        }

    def binding(kind: str, binding_name: str, role_kind: str, role_name: str, ns: str | None = None) -> dict:
        meta: dict[str, Any] = {"name": binding_name, **({"namespace": ns} if ns else {})}
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
            "subjects": [subject],
        }

    namespaced = (
        [binding("RoleBinding", f"{name}-watch", "ClusterRole", name, ns) for ns in watch_namespaces]
        if watch_namespaces
        else [binding("ClusterRoleBinding", name, "ClusterRole", name)]
    )
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        role(name, "clusterrole-rules.yaml", *(["secret-reader-rules.yaml"] if read_secrets else [])),
        *namespaced,
        role(f"{name}-cluster", "cluster-scoped-rules.yaml"),
        binding("ClusterRoleBinding", f"{name}-cluster", "ClusterRole", f"{name}-cluster"),
        binding(
            "RoleBinding",
            f"{name}-authentication-reader",
            "Role",
            "extension-apiserver-authentication-reader",
            "kube-system",
        ),
    ]


API_SERVICE_NAME = "nbkube-api-local"


def user_api_manifests(namespace: str = OPERATOR_NAMESPACE, port: int = 443) -> list[dict[str, Any]]:
    """The chart's APIService, routed to the operator running as a local process: the Service is an
    ExternalName for `localhost`, which the aggregator resolves as the chart's ClusterIP Service would be
    (kube-apiserver rejects loopback addresses in EndpointSlices, and this cluster has no Service proxy).
    The operator writes its serving CA into the caBundle itself, as it does under the chart."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": API_SERVICE_NAME, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": GROUP,
                "version": VERSION,
                "service": {"namespace": namespace, "name": API_SERVICE_NAME, "port": port},
                "groupPriorityMinimum": 1000,
                "versionPriority": 15,
            },
        },
    ]


def user_role_manifests() -> list[dict[str, Any]]:
    """The chart's ClusterRoles for the user-facing API, aggregated into view, edit and admin."""
    docs = yaml.safe_load_all((REPO / "charts" / "nbkube" / "files" / "user-roles.yaml").read_text())
    return [d for d in docs if d]


def install(info: ClusterInfo) -> None:
    """CRDs, the operator's RBAC, the user-facing APIService and roles (idempotent)."""
    kubectl(info, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(info, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    kubectl(
        info,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    *rbac_manifests(),
                    *operator_namespace_rbac_manifests(OPERATOR_NAMESPACE, SERVICE_ACCOUNT),
                    *user_api_manifests(),
                    *user_role_manifests(),
                ],
            }
        ),
    )


class _PortTaken(RuntimeError):
    pass


# The operators this test process runs, so that starting one pauses the others on the same cluster.
_RUNNING: list[OperatorProcess] = []


@dataclass(eq=False)
class OperatorProcess:
    info: ClusterInfo
    workdir: Path
    data_dir: Path = field(init=False)
    log_path: Path = field(init=False)
    metrics_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # The identity the operator runs as: the harness's own (install() creates it) or, e.g., the one a
    # `helm install` of the chart created.
    namespace: str = OPERATOR_NAMESPACE
    service_account: str = SERVICE_ACCOUNT
    # The namespaces kopf watches (`--namespace=` each, as the chart's watchNamespaces); empty: all.
    watch_namespaces: tuple[str, ...] = ()
    # More `kopf run` options, e.g. ("--debug",) as the chart's operator.logLevel sets them.
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._paused: list[OperatorProcess] = []
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "operator.log"

    @property
    def api_url(self) -> str:
        """The operator's own user-facing TLS port: only the API server's front proxy gets through."""
        return f"https://127.0.0.1:{self.api_port}"

    def result(self, path: str, commit: str | None = None) -> bytes:
        """A file of the results repository (of the namespace `path` starts with), read as the cluster
        admin through the API server: the path every user takes."""
        status, body = ApiUser.admin(self.info).file(path.split("/", 1)[0], path, commit)
        if status != 200:
            raise AssertionError(f"{path} at {commit}: {status} {body[:300]!r}")
        return body

    def log_events(self, namespace: str, name: str, follow: bool = False) -> list[dict[str, Any]]:
        return list(ApiUser.admin(self.info).log_events(namespace, name, follow))

    def start(self, timeout: float = 60) -> None:
        """Starts the operator; any other operator this process runs on the same cluster is paused until
        this one stops, because two operators must never drive the same runs."""
        for other in list(_RUNNING):
            if other is not self and other.info.dir == self.info.dir and other.running:
                other._terminate()
                _RUNNING.remove(other)
                self._paused.append(other)
        for attempt in range(3):
            try:
                self._start(timeout)
                break
            except _PortTaken:
                if attempt == 2:
                    self.stop()
                    raise
                self.metrics_port, self.api_port, self.health_port = free_port(), free_port(), free_port()
            except BaseException:
                # Never leave this one running, nor the paused ones paused: two operators at once, or
                # none, would make every later test fail for a reason of this one.
                self.stop()
                raise
        if self not in _RUNNING:
            _RUNNING.append(self)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self, timeout: float) -> None:
        kubeconfig = self.info.service_account_kubeconfig(
            self.namespace, self.service_account, self.workdir / "operator.kubeconfig"
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "NBKUBE_NAMESPACE": self.namespace,
            "NBKUBE_DATA_DIR": str(self.data_dir),
            "NBKUBE_METRICS_PORT": str(self.metrics_port),
            "NBKUBE_METRICS_HOST": "127.0.0.1",
            "NBKUBE_API_PORT": str(self.api_port),
            "NBKUBE_API_HOST": "127.0.0.1",
            "NBKUBE_API_SERVICE": API_SERVICE_NAME,
            **self.extra_env,
        }
        argv = [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "-m",
            "nbkube.handlers",
            *([f"--namespace={ns}" for ns in self.watch_namespaces] or ["--all-namespaces"]),
            "--standalone",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    raise _PortTaken(tail)
                raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the operator did not become healthy in {timeout}s:\n{self.log_tail()}")
        self._route_user_api(deadline)

    def _route_user_api(self, deadline: float) -> None:
        """Points the APIService at this operator's port and waits until the API server reaches it (the
        operator writes its CA into the caBundle when its user-facing API starts). An APIService a
        `helm install` of the chart made is routed here too: the chart's ClusterIP Service has no proxy
        on this cluster."""
        manifests = user_api_manifests(namespace=self.namespace, port=self.api_port)
        routed = {"apiVersion": "v1", "kind": "List", "items": manifests}
        kubectl(self.info, "apply", "-f", "-", input=json.dumps(routed))
        last = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                [str(self.info.kubectl), f"--kubeconfig={self.info.kubeconfig}", "get", "--raw", PREFIX],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode == 0 and "APIResourceList" in done.stdout:
                return
            last = done.stderr.strip()
            time.sleep(0.2)
        raise RuntimeError(
            f"the API server did not reach the operator's user-facing API: {last}\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-whatever, as on a node failure."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """Stops the operator and resumes the ones its start() paused."""
        self._terminate(timeout)
        if self in _RUNNING:
            _RUNNING.remove(self)
        paused, self._paused = self._paused, []
        for other in paused:
            other.start()

    def _terminate(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()
