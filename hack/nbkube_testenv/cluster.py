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
import dataclasses
import fcntl
import functools
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
from nbkube_testenv.components import (
    APISERVER,
    COMPONENTS,
    CONTROLLER_MANAGER,
    ETCD,
    NODE_AGENT,
    NODE_NAME,
    SCHEDULER,
    SERVICE_IP,
    Component,
    Layout,
)
from nbkube_testenv.nodeagent import firewall

HACK_DIR = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = HACK_DIR / "build-k8s.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
STATE_FILE = "state.json"


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


class _Launch:
    """Starts a cluster's processes, recording each in the state file, and waits for each to be ready,
    failing with the component's log as soon as it exits or the deadline passes."""

    def __init__(self, cluster: LocalCluster, state: dict, deadline: float, timeout: float) -> None:
        self.cluster = cluster
        self.state = state
        self.deadline = deadline
        self.timeout = timeout

    def up(self, layout: Layout, *components: Component) -> None:
        """Starts these components together, then waits for each one's checks in turn."""
        for component in components:
            self.state["processes"].append(self.cluster._spawn(component.name, component.argv(layout)))
            self.cluster._write_state(self.state)
        api = functools.partial(self.cluster._api, layout.server)
        for component in components:
            for check, what in component.ready:
                self.wait(component.name, functools.partial(check, layout, api), what)

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
        if {p["name"] for p in state.get("processes", [])} != {c.name for c in COMPONENTS}:
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
        assets = self._preflight(apiserver_port, quiet=say is _silent)
        for sub in ("etcd", "pki", "pods", "logs", "kcm", "scheduler", "agent"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir()
        ports = {
            port: apiserver_port if port == "apiserver" and apiserver_port else free_port()
            for component in COMPONENTS
            for port in component.ports
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
        layout = Layout(self.dir, assets, ports, pki, self.kubeconfig, pod_octet=state["pod_octet"])
        launch = _Launch(self, state, deadline=t0 + timeout, timeout=timeout)

        say(f"starting etcd on 127.0.0.1:{ports['etcd']}")
        launch.up(layout, ETCD)
        say(f"starting kube-apiserver on {server}")
        launch.up(layout, APISERVER)
        version = self._api(server, "/version")[1].get("gitVersion", "unknown")
        state["version"] = version
        say(f"kube-apiserver {version} ready; starting controller-manager, scheduler and node agent")
        launch.up(dataclasses.replace(layout, version=version), CONTROLLER_MANAGER, SCHEDULER, NODE_AGENT)

        state["complete"] = True
        state["started_in_s"] = round(time.monotonic() - t0, 2)
        self._write_state(state)
        say(f"cluster up in {state['started_in_s']}s: {server} ({version}), logs in {self.dir / 'logs'}")
        return self.info()

    def _preflight(self, apiserver_port: int, quiet: bool) -> Path:
        """The binaries' directory, once the chosen port is free and every binary is there."""
        if apiserver_port and port_busy(apiserver_port):
            raise ClusterError(
                f"port {apiserver_port} on 127.0.0.1 is busy: stop whatever listens there "
                f"(`ss -ltnp 'sport = :{apiserver_port}'`) or choose another port (0 picks a free one)"
            )
        assets = self._assets or find_assets(quiet=quiet)
        missing = [b for b in BINARIES if not os.access(assets / b, os.X_OK)]
        if missing:
            raise ClusterError(
                f"{assets} lacks {', '.join(missing)}: run `make k8s-binaries` (or set KUBEBUILDER_ASSETS)"
            )
        return assets

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

    def _write_admin_kubeconfig(self, server: str, pki: Any) -> None:
        ca_data = base64.b64encode(pki.ca_crt.read_bytes()).decode()
        admin = {
            "client-certificate-data": base64.b64encode(pki.admin_crt.read_bytes()).decode(),
            "client-key-data": base64.b64encode(pki.admin_key.read_bytes()).decode(),
        }
        _write_kubeconfig(self.kubeconfig, kubeconfig(server, ca_data, "nbkube-admin", admin, "nbkube-local"))

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
        ca_data = base64.b64encode(info.ca_file.read_bytes()).decode()
        _write_kubeconfig(out, kubeconfig(info.server, ca_data, user, entry, user, namespace))
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
        if NODE_AGENT.name in recorded:
            stopped.update(procs.stop([recorded[NODE_AGENT.name]], grace))
        stopped.update(procs.stop(self._pod_processes(), grace))
        for component in reversed(COMPONENTS):
            if component.name in recorded and component is not NODE_AGENT:
                stopped.update(procs.stop([recorded[component.name]], grace))
        stragglers = [(pid, None) for pid in procs.marked_processes(str(self.dir))]
        stopped.update(procs.stop(stragglers, grace))
        if self.state_file.exists():
            self.state_file.unlink()
        shutil.rmtree(self.dir / "agent" / "pids", ignore_errors=True)
        # The node agent removes its iptables chains and pod cgroups when it stops; this is for an agent
        # that was killed (stdlib only, as procs.py).
        firewall.cleanup(self.dir)
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


def kubeconfig(
    server: str, ca_data: str, user: str, credentials: dict[str, str], context: str, namespace: str = ""
) -> dict[str, Any]:
    """A kubeconfig of the local cluster for one user (its credentials entry), in one context."""
    ctx = {"cluster": "nbkube-local", "user": user}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "nbkube-local", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
    }


def _write_kubeconfig(path: Path, config: dict[str, Any]) -> None:
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def _silent(msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
