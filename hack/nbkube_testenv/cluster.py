"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and the nbkube node agent, as detached local processes recorded in a state directory.

    python -m nbkube_testenv.cluster up --dir .cluster     # last line: export KUBECONFIG=...
    python -m nbkube_testenv.cluster down --dir .cluster

Only the standard library is needed for `down` (and `cryptography` for `up`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python hack/nbkube_testenv/cluster.py down`)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbkube_testenv import procs

HACK_DIR = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = HACK_DIR / "build-k8s.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
NODE_NAME = "nbkube-node"
STATE_FILE = "state.json"
# The order processes start in; `down` stops them in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "nodeagent")


class ClusterError(RuntimeError):
    """A one-line explanation of what is wrong and what to run."""


@dataclass(frozen=True)
class ClusterInfo:
    dir: Path
    kubeconfig: Path
    server: str
    ca_file: Path
    assets: Path
    version: str
    node_name: str = NODE_NAME
    pids: dict[str, int] = field(default_factory=dict)
    pod_subnet: str = ""

    @property
    def kubectl(self) -> Path:
        return self.assets / "kubectl"

    def pod_dir(self, namespace: str, pod: str) -> Path:
        """Where the node agent keeps a pod's logs and materialised volumes."""
        return self.dir / "pods" / f"{namespace}_{pod}"

    def container_log(self, namespace: str, pod: str, container: str) -> Path:
        return self.pod_dir(namespace, pod) / f"{container}.log"

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: str | os.PathLike[str], expiration_seconds: int = 86400
    ) -> Path:
        """See LocalCluster.service_account_kubeconfig."""
        return LocalCluster(self.dir).service_account_kubeconfig(namespace, name, path, expiration_seconds)

    def client_certificate_kubeconfig(
        self, user: str, groups: tuple[str, ...], path: str | os.PathLike[str], namespace: str = "default"
    ) -> Path:
        """See LocalCluster.client_certificate_kubeconfig."""
        return LocalCluster(self.dir).client_certificate_kubeconfig(user, groups, path, namespace)


def find_assets(quiet: bool = True) -> Path:
    """The directory holding the control-plane binaries: KUBEBUILDER_ASSETS, else the cached build."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env:
        assets = Path(env)
        missing = [b for b in BINARIES if not os.access(assets / b, os.X_OK)]
        if missing:
            raise ClusterError(
                f"KUBEBUILDER_ASSETS={env} lacks {', '.join(missing)}: point it at a directory holding "
                f"{', '.join(BINARIES)}, or unset it and run `make k8s-binaries`"
            )
        return assets
    try:
        build = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError as e:
        raise ClusterError(f"cannot run {BUILD_SCRIPT}: {e}") from e
    assert build.stderr is not None and build.stdout is not None
    progress = []
    for line in build.stderr:  # a cold build takes minutes: show its progress
        progress.append(line.rstrip())
        if not quiet:
            print(line, end="", file=sys.stderr, flush=True)
    out = build.stdout.read()
    if build.wait() != 0:
        errors = [ln for ln in progress if "ERROR" in ln] or progress[-1:]
        reason = errors[-1].strip() if errors else f"exit code {build.returncode}"
        hint = "run `make k8s-binaries` to see the whole build"
        if "KUBEBUILDER_ASSETS" not in reason:
            hint += ", or set KUBEBUILDER_ASSETS to a directory holding the binaries"
        raise ClusterError(f"building the Kubernetes binaries failed: {reason} ({hint})")
    return Path(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def pick_pod_octet() -> int:
    """A second octet for this cluster's pod addresses (127.N.x.y) that no local socket uses yet, so that
    several clusters on one machine (parallel test sessions) do not hand out the same pod address."""
    taken = {int(ip.split(".")[1]) for ip in procs.bound_loopback_addresses()}
    free = [n for n in range(2, 255) if n not in taken]
    return random.choice(free or range(2, 255))


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n    ".join(text[-lines:]) or "(empty log)"


class PortTaken(ClusterError):
    """A component could not bind the port picked for it."""


@dataclass(frozen=True)
class Layout:
    """Where one cluster's pieces live: its directory, binaries, ports, certificates and kubeconfig."""

    dir: Path
    assets: Path
    ports: dict[str, int]
    pki: Any
    kubeconfig: Path

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"


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


def nodeagent_argv(layout: Layout, version: str, pod_octet: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nbkube_testenv.nodeagent",
        f"--kubeconfig={layout.kubeconfig}",
        f"--dir={layout.dir}",
        f"--node-name={NODE_NAME}",
        f"--kubelet-version={version}",
        f"--pod-octet={pod_octet}",
    ]


class _Launch:
    """Starts a cluster's processes one by one, recording each in the state file, and waits for each to
    be ready, failing with the component's log as soon as it exits or the deadline passes."""

    def __init__(self, cluster: LocalCluster, state: dict, deadline: float, timeout: float) -> None:
        self.cluster = cluster
        self.state = state
        self.deadline = deadline
        self.timeout = timeout

    def start(self, name: str, argv: list[str]) -> None:
        self.state["processes"].append(self.cluster._spawn(name, argv))
        self.cluster._write_state(self.state)

    def wait(self, name: str, check: Callable[[], bool], what: str) -> None:
        while True:
            try:
                if check():
                    return
            except (OSError, ssl.SSLError, ValueError, KeyError):
                pass
            rec = next(p for p in self.state["processes"] if p["name"] == name)
            log = self.cluster._log(name)
            if not procs.is_same(rec["pid"], rec["start_time"]):
                text = log.read_text(errors="replace") if log.exists() else ""
                if "address already in use" in text:
                    raise PortTaken(
                        f"{name} could not bind its port (address already in use): another process took "
                        f"it; run `make cluster-down` and `make cluster-up` again. Log {log}:\n    "
                        + log_tail(log)
                    )
                raise ClusterError(f"{name} exited before {what}; last lines of {log}:\n    " + log_tail(log))
            if time.monotonic() > self.deadline:
                raise ClusterError(
                    f"{name} did not become {what} within {self.timeout:.0f}s; last lines of {log}:\n    "
                    + log_tail(log)
                )
            time.sleep(0.2)


class LocalCluster:
    """A local control plane kept in `dir`: certificates, etcd data, logs, kubeconfig and state.json."""

    def __init__(self, directory: str | os.PathLike[str], assets: str | os.PathLike[str] | None = None):
        self.dir = Path(directory).absolute()
        self._assets = Path(assets) if assets else None

    # -- paths ---------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def _log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    # -- health --------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        ctx.load_cert_chain(str(self.dir / "pki" / "admin.crt"), str(self.dir / "pki" / "admin.key"))
        return ctx

    def _api(self, server: str, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else {}
        except ValueError:
            return status, {"raw": raw.decode(errors="replace")}

    def _healthy(self, state: dict) -> bool:
        if any(not procs.is_same(p["pid"], p.get("start_time")) for p in state.get("processes", [])):
            return False
        if {p["name"] for p in state.get("processes", [])} != set(COMPONENTS):
            return False
        try:
            status, _ = self._api(state["server"], "/readyz")
        except (OSError, KeyError, ssl.SSLError):
            return False
        return status == 200

    def is_running(self) -> bool:
        """True when every recorded process is alive and the API server is ready."""
        state = self._read_state()
        return bool(state) and state.get("complete", False) and self._healthy(state)

    def info(self) -> ClusterInfo:
        state = self._read_state()
        if not state or not state.get("complete"):
            raise ClusterError(f"no cluster is running in {self.dir}: run `make cluster-up`")
        return ClusterInfo(
            dir=self.dir,
            kubeconfig=self.kubeconfig,
            server=state["server"],
            ca_file=self.dir / "pki" / "ca.crt",
            assets=Path(state["assets"]),
            version=state["version"],
            node_name=state.get("node_name", NODE_NAME),
            pids={p["name"]: p["pid"] for p in state["processes"]},
            pod_subnet=f"127.{state.get('pod_octet', 1)}.0.0/16",
        )

    # -- up ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises up and down on one directory (two `make cluster-up` at once)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def up(self, timeout: float = 180, apiserver_port: int = 0, quiet: bool = False) -> ClusterInfo:
        """Starts the cluster (or returns the running one). Raises ClusterError with a one-line cause."""
        with self._locked():
            return self._up(timeout, apiserver_port, quiet)

    def _up(self, timeout: float, apiserver_port: int, quiet: bool) -> ClusterInfo:
        say = _silent if quiet else _stderr
        state = self._read_state()
        if state is not None:
            if state.get("complete") and self._healthy(state):
                return self.info()
            say(f"cleaning up a stopped or half-started cluster in {self.dir}")
            self._down(10, quiet=True)
        for attempt in range(3):
            try:
                return self._start(timeout, apiserver_port, say)
            except PortTaken:
                # A port picked free was taken before the component bound it (another process's
                # ephemeral port): pick new ones, unless the caller chose the port.
                self._down(10, quiet=True)
                if apiserver_port or attempt == 2:
                    raise
                say("a port was taken before a component bound it: starting again on new ports")
            except BaseException:
                # Never leave a half-started cluster behind; the logs stay for inspection.
                self._down(10, quiet=True)
                raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float, apiserver_port: int, say) -> ClusterInfo:
        from nbkube_testenv import pki as pki_mod

        t0 = time.monotonic()
        if apiserver_port and port_busy(apiserver_port):
            raise ClusterError(
                f"port {apiserver_port} on 127.0.0.1 is busy: stop whatever listens there "
                f"(`ss -ltnp 'sport = :{apiserver_port}'`) or choose another port (0 picks a free one)"
            )
        assets = self._assets or find_assets(quiet=say is _silent)
        missing = [b for b in BINARIES if not os.access(assets / b, os.X_OK)]
        if missing:
            raise ClusterError(
                f"{assets} lacks {', '.join(missing)}: run `make k8s-binaries` (or set KUBEBUILDER_ASSETS)"
            )
        for sub in ("etcd", "pki", "pods", "logs", "kcm", "scheduler", "agent"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir()
        ports = {
            "etcd": free_port(),
            "etcd_peer": free_port(),
            "apiserver": apiserver_port or free_port(),
            "kcm": free_port(),
            "scheduler": free_port(),
        }
        server = f"https://127.0.0.1:{ports['apiserver']}"
        state: dict = {
            "complete": False,
            "server": server,
            "ports": ports,
            "assets": str(assets),
            "node_name": NODE_NAME,
            "pod_octet": pick_pod_octet(),
            "processes": [],
        }
        self._write_state(state)
        pki = pki_mod.create(self.dir / "pki", SERVICE_IP)
        self._write_admin_kubeconfig(server, pki)
        layout = Layout(self.dir, assets, ports, pki, self.kubeconfig)
        launch = _Launch(self, state, deadline=t0 + timeout, timeout=timeout)

        say(f"starting etcd on 127.0.0.1:{ports['etcd']}")
        launch.start("etcd", etcd_argv(layout))
        launch.wait("etcd", lambda: _http_ok(layout.etcd_url + "/health"), "healthy")

        say(f"starting kube-apiserver on {server}")
        launch.start("kube-apiserver", apiserver_argv(layout))
        launch.wait("kube-apiserver", lambda: self._api(server, "/readyz")[0] == 200, "ready")
        version = self._api(server, "/version")[1].get("gitVersion", "unknown")
        state["version"] = version

        say(f"kube-apiserver {version} ready; starting controller-manager, scheduler and node agent")
        launch.start("kube-controller-manager", controller_manager_argv(layout))
        launch.start("kube-scheduler", scheduler_argv(layout))
        launch.start("nodeagent", nodeagent_argv(layout, version, state["pod_octet"]))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, port in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
            url = f"https://127.0.0.1:{ports[port]}/healthz"
            launch.wait(name, lambda url=url: _http_ok(url, insecure), "healthy")
        launch.wait("nodeagent", lambda: self._node_ready(server), "a Ready node")
        launch.wait(
            "kube-controller-manager",
            lambda: self._api(server, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            "ready (no default ServiceAccount in namespace default)",
        )
        state["complete"] = True
        state["started_in_s"] = round(time.monotonic() - t0, 2)
        self._write_state(state)
        say(f"cluster up in {state['started_in_s']}s: {server} ({version}), logs in {self.dir / 'logs'}")
        return self.info()

    def _spawn(self, name: str, argv: list[str]) -> dict:
        env = dict(os.environ)
        env[procs.MARKER_ENV] = str(self.dir)
        env.pop("KUBECONFIG", None)
        # Pods run `python -m ...` from the environment `up` runs in (the virtualenv).
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HACK_DIR), env.get("PYTHONPATH")]))
        with open(self._log(name), "ab") as logf:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
                env=env,
            )
        return {
            "name": name,
            "pid": proc.pid,
            "start_time": procs.start_time(proc.pid, reap=False),
            "argv": argv,
        }

    def restart_component(self, name: str, timeout: float = 120) -> None:
        """Stops one control-plane component and starts it again with the same flags (fault injection:
        clients such as the node agent must reconnect their watches)."""
        with self._locked():
            state = self._read_state()
            if not state or not state.get("complete"):
                raise ClusterError(f"no cluster is running in {self.dir}: run `make cluster-up`")
            rec = next(p for p in state["processes"] if p["name"] == name)
            procs.stop([(rec["pid"], rec["start_time"])], grace=10)
            rec.update(self._spawn(name, rec["argv"]))
            self._write_state(state)
        deadline = time.monotonic() + timeout
        while not self._healthy(state):
            if time.monotonic() > deadline or not procs.is_same(rec["pid"], rec["start_time"]):
                raise ClusterError(
                    f"{name} did not come back; last lines of {self._log(name)}:\n    "
                    + log_tail(self._log(name))
                )
            time.sleep(0.2)

    def _node_ready(self, server: str) -> bool:
        status, node = self._api(server, f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conds = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def _write_admin_kubeconfig(self, server: str, pki) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "nbkube-local",
                    "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_crt)},
                }
            ],
            "users": [
                {
                    "name": "nbkube-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_crt),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": "nbkube-local", "context": {"cluster": "nbkube-local", "user": "nbkube-admin"}}
            ],
            "current-context": "nbkube-local",
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))
        self.kubeconfig.chmod(0o600)

    # -- service accounts ----------------------------------------------------------------------
    def service_account_kubeconfig(
        self, namespace: str, name: str, path: str | os.PathLike[str], expiration_seconds: int = 86400
    ) -> Path:
        """Writes a kubeconfig authenticating as ServiceAccount namespace/name with a bearer token from
        the TokenRequest API (the ServiceAccount must exist)."""
        info = self.info()
        status, resp = self._api(
            info.server,
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            "POST",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        if status != 201:
            raise ClusterError(
                f"TokenRequest for {namespace}/{name} failed ({status}): {resp.get('message')}"
            )
        user = f"system:serviceaccount:{namespace}:{name}"
        return self._user_kubeconfig(user, {"token": resp["status"]["token"]}, namespace, Path(path))

    def client_certificate_kubeconfig(
        self, user: str, groups: tuple[str, ...], path: str | os.PathLike[str], namespace: str = "default"
    ) -> Path:
        """Writes a kubeconfig authenticating as `user` (in `groups`) with a client certificate of the
        cluster CA: the kind of user an admin or an OIDC-less cluster hands out."""
        from nbkube_testenv import pki as pki_mod

        out = Path(path)
        pki = pki_mod.Pki(self.dir / "pki")
        crt, key = pki.client_certificate(user, groups, out.parent / f"{out.name}.certs")
        entry = {
            "client-certificate-data": base64.b64encode(crt.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        }
        return self._user_kubeconfig(user, entry, namespace, out)

    def _user_kubeconfig(self, user: str, entry: dict[str, str], namespace: str, out: Path) -> Path:
        info = self.info()
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "nbkube-local",
                    "cluster": {
                        "server": info.server,
                        "certificate-authority-data": base64.b64encode(info.ca_file.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": entry}],
            "contexts": [
                {"name": user, "context": {"cluster": "nbkube-local", "user": user, "namespace": namespace}}
            ],
            "current-context": user,
        }
        out.write_text(json.dumps(cfg, indent=2))
        out.chmod(0o600)
        return out

    # -- down ----------------------------------------------------------------------------------
    def down(self, grace: float = 10, quiet: bool = False) -> int:
        """Stops every process of this cluster (recorded or marked), pods included. Returns how many."""
        if not self.dir.is_dir():
            if not quiet:
                print(f"no cluster in {self.dir}", file=sys.stderr)
            return 0
        with self._locked():
            return self._down(grace, quiet)

    def _down(self, grace: float, quiet: bool) -> int:
        state = self._read_state() or {}
        recorded = {p["name"]: (p["pid"], p.get("start_time")) for p in state.get("processes", [])}
        stopped: set[int] = set()
        # The node agent first: it stops its pods' processes itself within their grace periods.
        if "nodeagent" in recorded:
            stopped.update(procs.stop([recorded["nodeagent"]], grace))
        stopped.update(procs.stop(self._pod_processes(), grace))
        for name in reversed(COMPONENTS):
            if name in recorded and name != "nodeagent":
                stopped.update(procs.stop([recorded[name]], grace))
        stragglers = [(pid, None) for pid in procs.marked_processes(str(self.dir))]
        stopped.update(procs.stop(stragglers, grace))
        if self.state_file.exists():
            self.state_file.unlink()
        shutil.rmtree(self.dir / "agent" / "pids", ignore_errors=True)
        if not quiet:
            print(f"stopped {len(stopped)} processes of the cluster in {self.dir}", file=sys.stderr)
        return len(stopped)

    def _pod_processes(self) -> list[tuple[int, int | None]]:
        out = []
        pid_dir = self.dir / "agent" / "pids"
        for f in pid_dir.glob("*") if pid_dir.is_dir() else []:
            try:
                out.append((int(f.name), int(f.read_text().strip() or 0) or None))
            except ValueError:
                continue
        return out


def _silent(msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbkube_testenv.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=".cluster", help="state directory (default: .cluster)")
    parser.add_argument("--apiserver-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir)
    try:
        if args.command == "down":
            cluster.down()
            return 0
        if args.command == "status":
            if not cluster.is_running():
                print(f"no healthy cluster in {cluster.dir}")
                return 1
            info = cluster.info()
            print(f"{info.server} {info.version} pids {info.pids}")
            return 0
        info = cluster.up(timeout=args.timeout, apiserver_port=args.apiserver_port)
    except ClusterError as e:
        print(f"cluster {args.command}: error: {e}", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={info.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
