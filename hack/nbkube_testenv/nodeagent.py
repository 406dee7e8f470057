"""The nbkube node agent: a stand-in kubelet that runs the pods bound to its Node as local processes.

There is no container runtime and no image is pulled: each container's command and args run from the
agent's own environment (its PATH puts the virtualenv first), in its own process group, with the
container's env and workingDir, on the pod's own loopback address (127.N.x.y, N chosen per cluster;
every 127/8 address works on Linux without setup).

Volumes: emptyDir, secret, configMap, downwardAPI and projected (service-account token) volumes are
materialised in DIR/pods/<ns>_<pod>/volumes/<name>; a persistentVolumeClaim resolves to the directory
of the PersistentVolume it is bound to (hostPath or local). Each container runs in a private mount
namespace (unshare) in which every volumeMount is a bind mount of that directory (or its subPath) at
its mountPath, read-only where the mount, the claim or the volume kind (secret, configMap,
downwardAPI, projected) says so, as a kubelet mounts them. A missing mount point is created (on the
host an empty directory or file is left behind; inside another volume, in that volume). Two exceptions
keep the agent working on a shared machine: a mountPath that would hide what the process runs from
(the agent's directory, the pod's directory, the working directory, Python's prefix, the agent's
PYTHONPATH entries, the executable) is not mounted, with a log line; and where mount namespaces are
unavailable (not root) nothing is mounted. Either way each container also sees NBKUBE_VOLUME_<NAME>
pointing at the volume's directory. A volume that cannot be set up (a missing ConfigMap or Secret, an
unbound claim) keeps the pod in ContainerCreating with a FailedMount warning event, as a kubelet
reports it. Logs go to
DIR/pods/<ns>_<pod>/<container>.log. Startup probes, sidecar init containers, resource limits and
ephemeral containers are not implemented.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from nbkube_testenv import procs
from nbkube_testenv.rest import ApiError, Rest

log = logging.getLogger("nodeagent")

HEARTBEAT_S = 10
LEASE_DURATION_S = 40
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 10.0
IDLE_TICK_S = 5.0


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined variables are replaced, $$ escapes, the rest stays."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def mount_namespaces_work() -> bool:
    """True when this process may make private mount namespaces with bind mounts (root, util-linux)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        log.warning("volumes are not mounted at their mountPath: the node agent is not root or lacks unshare")
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "mount", "-t", "tmpfs", "none", "/mnt"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        log.warning("volumes are not mounted at their mountPath: %s", probe.stderr.decode().strip())
    return probe.returncode == 0


class ConfigError(Exception):
    """The container cannot start yet (missing secret or config map, no command, bad workingDir)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class IpAllocator:
    """Pod addresses 127.<octet>.x.y, unique among this agent's live pods and skipping any address a
    local socket is bound to (another cluster's pod, say)."""

    def __init__(self, octet: int) -> None:
        self.prefix = f"127.{octet}."
        self._used: set[str] = set()
        self._next = 1
        self._lock = threading.Lock()

    def allocate(self, preferred: str | None = None) -> str:
        with self._lock:
            busy = procs.bound_loopback_addresses()
            if preferred and preferred.startswith(self.prefix) and preferred not in self._used | busy:
                self._used.add(preferred)
                return preferred
            for _ in range(254 * 255):
                n = self._next
                self._next = self._next % (254 * 255) + 1
                ip = f"{self.prefix}{(n - 1) // 254}.{(n - 1) % 254 + 1}"
                if ip not in self._used and ip not in busy:
                    self._used.add(ip)
                    return ip
            raise RuntimeError(f"no free pod address left in {self.prefix}0.0/16")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


class Probe:
    """One readiness or liveness probe with its thresholds."""

    def __init__(self, spec: dict[str, Any], container: Container):
        self.spec = spec
        self.container = container
        self.period = spec.get("periodSeconds", 10)
        self.timeout = spec.get("timeoutSeconds", 1)
        self.success_threshold = spec.get("successThreshold", 1)
        self.failure_threshold = spec.get("failureThreshold", 3)
        self.reset()

    def reset(self) -> None:
        self.next_at = time.monotonic() + self.spec.get("initialDelaySeconds", 0)
        self.successes = 0
        self.failures = 0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def run(self) -> bool | None:
        """Probes once; returns the new verdict when a threshold was crossed, else None."""
        self.next_at = time.monotonic() + self.period
        ok = self._check()
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            return True if self.successes >= self.success_threshold else None
        self.successes, self.failures = 0, self.failures + 1
        return False if self.failures >= self.failure_threshold else None

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.container.spec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"no container port named {port}")

    def _check(self) -> bool:
        pod_ip = self.container.worker.ip
        try:
            if "httpGet" in self.spec:
                hg = self.spec["httpGet"]
                host = hg.get("host") or pod_ip
                port = self._port(hg["port"])
                if hg.get("scheme", "HTTP").upper() == "HTTPS":
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        host, port, timeout=self.timeout, context=ssl._create_unverified_context()
                    )
                else:
                    conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                try:
                    headers = {h["name"]: h["value"] for h in hg.get("httpHeaders", [])}
                    conn.request("GET", hg.get("path", "/"), headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "tcpSocket" in self.spec:
                ts = self.spec["tcpSocket"]
                with socket.create_connection(
                    (ts.get("host") or pod_ip, self._port(ts["port"])), self.timeout
                ):
                    return True
            if "exec" in self.spec:
                done = subprocess.run(
                    self.spec["exec"]["command"],
                    env=self.container.env,
                    cwd=self.container.cwd,
                    capture_output=True,
                    timeout=self.timeout,
                    check=False,
                )
                return done.returncode == 0
        except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException):
            return False
        log.warning("unsupported probe %s in %s", list(self.spec), self.container.worker.key)
        return False


class Container:
    """One container of a pod: its process, state, restarts and probes."""

    def __init__(self, worker: PodWorker, spec: dict[str, Any], init: bool):
        self.worker = worker
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_ticks: int | None = None
        self.restart_count = 0
        self.runs = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.ready = False
        self.started_mono = 0.0
        self.next_start_at: float | None = time.monotonic()
        self.backoff = BACKOFF_INITIAL_S
        self.env: dict[str, str] = {}
        self.cwd = ""
        self.log_offset = 0
        self.readiness = Probe(spec["readinessProbe"], self) if "readinessProbe" in spec else None
        self.liveness = Probe(spec["livenessProbe"], self) if "livenessProbe" in spec else None

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def terminated_ok(self) -> bool:
        return "terminated" in self.state and self.state["terminated"]["exitCode"] == 0

    def start(self) -> None:
        self.next_start_at = None
        try:
            self.env = self.worker.build_env(self.spec)
            argv = [expand(a, self.env) for a in self.spec.get("command", []) + self.spec.get("args", [])]
            if not self.spec.get("command"):
                raise ConfigError(
                    "CreateContainerError",
                    "the nbkube node agent pulls no images: set the container's command "
                    "(it runs as a local process)",
                )
            self.cwd = self.spec.get("workingDir") or str(self.worker.pod_dir)
            if not os.path.isdir(self.cwd):
                raise ConfigError(
                    "CreateContainerError", f"workingDir {self.cwd} does not exist on this machine"
                )
            argv = self._in_mount_namespace(argv)
        except ConfigError as e:
            self.state = {"waiting": {"reason": e.reason, "message": str(e)}}
            self.next_start_at = time.monotonic() + 2
            return
        except (ApiError, OSError) as e:  # the API server is unreachable or restarting: retry
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            self.next_start_at = time.monotonic() + 2
            return
        if self.runs:
            self.restart_count += 1
        self.runs += 1
        logf = open(self.worker.pod_dir / f"{self.name}.log", "ab")
        self.log_offset = logf.tell()  # where this run's output starts (the termination message's tail)
        started = now_iso()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        except OSError as e:
            logf.write(f"nbkube node agent: cannot start {argv[0]!r}: {e}\n".encode())
            self.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": f"cannot start {argv[0]!r}: {e}",
                    "startedAt": started,
                    "finishedAt": now_iso(),
                }
            }
            self._schedule_restart(128)
            return
        finally:
            logf.close()
        self.start_ticks = procs.start_time(self.proc.pid, reap=False)
        self.worker.agent.record_pid(self.proc.pid, self.start_ticks)
        self.started_mono = time.monotonic()
        threading.Thread(target=self._await_exit, args=(self.proc,), daemon=True).start()
        self.state = {"running": {"startedAt": started}}
        self.ready = self.readiness is None
        for probe in (self.readiness, self.liveness):
            if probe:
                probe.reset()
        log.info("%s/%s started pid %d: %s", self.worker.key, self.name, self.proc.pid, argv)

    def _mounts(self, argv: list[str]) -> list[tuple[str, str, bool]]:
        """(source directory or file, mountPath, read-only) of each volumeMount this process gets."""
        worker = self.worker
        keep = [worker.agent.dir, worker.pod_dir, self.cwd, sys.prefix, sys.base_prefix]
        # the agent's own PYTHONPATH (what the process imports nbkube from unless it sets its own): a
        # container's PYTHONPATH may well point into one of its volumes
        keep += [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
        executable = shutil.which(argv[0], path=self.env.get("PATH")) if argv else None
        if executable:
            keep.append(os.path.dirname(os.path.realpath(executable)))
        kept = [os.path.realpath(p) for p in map(str, keep)]
        mounts = []
        for m in self.spec.get("volumeMounts", []):
            name, target = m["name"], os.path.normpath(m["mountPath"])
            if name not in worker.volumes:
                raise ConfigError("CreateContainerConfigError", f'volume "{name}" is not declared by the pod')
            source = worker.volumes[name]
            if m.get("subPath"):
                source = os.path.join(source, m["subPath"])
                if not os.path.exists(source):
                    os.makedirs(source, exist_ok=True)
            if target == "/" or any(k == target or k.startswith(target + "/") for k in kept):
                log.info(
                    "%s/%s: volume %s not mounted at %s: it would hide what the process runs from",
                    worker.key,
                    self.name,
                    name,
                    target,
                )
                continue
            mounts.append((source, target, bool(m.get("readOnly")) or name in worker.read_only))
        return mounts

    def _in_mount_namespace(self, argv: list[str]) -> list[str]:
        """argv run in a private mount namespace holding the container's volume mounts."""
        if not self.worker.agent.can_mount:
            return argv
        mounts = self._mounts(argv)
        if not mounts:
            return argv
        script = ["set -e"]
        # Outer mounts first, and each mount point made just before its mount, inside the namespace, so
        # a mount nested in another volume (/home/nbkube/data in the home emptyDir) gets its mount point
        # in that volume, as a kubelet makes it in the container; read-only only once all are in place.
        mounts.sort(key=lambda m: m[1].count("/"))
        for source, target, _ in mounts:
            q = shlex.quote(target)
            if os.path.isdir(source):
                script.append(f"mkdir -p {q}")
            else:
                script.append(f"mkdir -p {shlex.quote(os.path.dirname(target))}; [ -e {q} ] || : > {q}")
            script.append(f"mount --bind {shlex.quote(source)} {q}")
        for _, target, read_only in mounts:
            if read_only:
                script.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        script.append('exec "$@"')
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            "\n".join(script),
            "sh",
            *argv,
        ]

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.worker.wake.set()

    def next_event(self) -> float:
        """The monotonic time this container next needs attention (a restart or a probe)."""
        times = [self.next_start_at] if self.next_start_at is not None else []
        if self.proc is not None:
            times += [p.next_at for p in (self.readiness, self.liveness) if p]
        return min(times, default=time.monotonic() + IDLE_TICK_S)

    def poll(self) -> None:
        """Notices an exit, runs due probes, restarts when the backoff has passed."""
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                self._exited(code)
            else:
                self._probe()
        if self.proc is None and self.next_start_at is not None and time.monotonic() >= self.next_start_at:
            self.start()

    def _probe(self) -> None:
        if self.readiness is None:
            self.ready = True
        elif self.readiness.due():
            verdict = self.readiness.run()
            if verdict is not None:
                self.ready = verdict
        if self.liveness and self.liveness.due() and self.liveness.run() is False:
            log.info("%s/%s failed its liveness probe: killing it", self.worker.key, self.name)
            self.kill(grace=self.worker.grace())

    def _exited(self, code: int) -> None:
        assert self.proc is not None
        self.worker.agent.forget_pid(self.proc.pid)
        reason = "Completed" if code == 0 else "Error"
        if code < 0:  # killed by a signal: report it the way container runtimes do
            code = 128 - code
        started = self.state.get("running", {}).get("startedAt", now_iso())
        self.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": now_iso(),
                "containerID": f"nbkube://{self.proc.pid}",
            }
        }
        message = self._termination_message(code)
        if message:
            self.state["terminated"]["message"] = message
        log.info("%s/%s pid %d exited with %d", self.worker.key, self.name, self.proc.pid, code)
        self.proc = None
        self.ready = False
        if time.monotonic() - self.started_mono > 60:
            self.backoff = BACKOFF_INITIAL_S
        self._schedule_restart(code)

    def _termination_message(self, code: int) -> str:
        """terminationMessagePolicy FallbackToLogsOnError, as the kubelet does it when the
        termination-message file is empty (there is none here: nothing is mounted at
        terminationMessagePath): the tail of this run's log (80 lines, 2048 bytes) after a failure."""
        if code == 0 or self.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        try:
            with open(self.worker.pod_dir / f"{self.name}.log", "rb") as logf:
                logf.seek(self.log_offset)
                output = logf.read()
        except OSError:
            return ""
        tail = b"\n".join(output.rstrip(b"\n").split(b"\n")[-80:])[-2048:]
        return tail.decode(errors="replace")

    def _schedule_restart(self, code: int) -> None:
        policy = self.worker.pod["spec"].get("restartPolicy", "Always")
        if self.init:
            again = code != 0 and policy != "Never"
        else:
            again = policy == "Always" or (policy == "OnFailure" and code != 0)
        if again and not self.worker.deleting:
            self.last_state = self.state
            self.next_start_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    @property
    def will_restart(self) -> bool:
        return self.next_start_at is not None

    def kill(self, grace: float) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period (and to any descendants)."""
        self.next_start_at = None
        if self.proc is None:
            return
        pid = self.proc.pid
        try:
            family = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            family = []
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in family:
            try:
                child.kill()
            except psutil.Error:
                pass
        self._exited(self.proc.wait())

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image") or "none",
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.running,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            st["containerID"] = f"nbkube://{self.proc.pid}"
        elif "terminated" in self.state:
            st["containerID"] = self.state["terminated"].get("containerID", "")
        return st


class PodWorker(threading.Thread):
    """Owns one pod: materialises its volumes, runs init then regular containers, reports status."""

    def __init__(self, agent: Agent, pod: dict[str, Any]):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.pod_dir = agent.dir / "pods" / f"{meta['namespace']}_{meta['name']}"
        self.wake = threading.Event()
        self.gone = False
        self.ip = ""
        self.start_time = pod.get("status", {}).get("startTime") or now_iso()
        self.init_containers = [Container(self, c, True) for c in pod["spec"].get("initContainers", [])]
        self.containers = [Container(self, c, False) for c in pod["spec"]["containers"]]
        self.volumes: dict[str, str] = {}
        self.read_only: set[str] = set()
        self.mount_problem = ""
        self.init_done = not self.init_containers
        self.init_failed = False
        self.conditions: dict[str, tuple[str, str]] = {}
        self.last_status: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        meta = self.pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    @property
    def deleting(self) -> bool:
        return (
            self.gone or self.agent.stopping.is_set() or bool(self.pod["metadata"].get("deletionTimestamp"))
        )

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.wake.set()

    def vanish(self) -> None:
        self.gone = True
        self.wake.set()

    def grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        g = meta.get("deletionGracePeriodSeconds")
        return float(g if g is not None else spec.get("terminationGracePeriodSeconds", 30))

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s failed", self.key)
        finally:
            for c in self.init_containers + self.containers:
                if c.running:
                    c.kill(grace=2)
            if self.ip and self.ip != self.agent.host_ip:
                self.agent.ips.release(self.ip)
            self.agent.worker_done(self)

    def _run(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        if self.pod["spec"].get("hostNetwork"):
            self.ip = self.agent.host_ip
        else:
            self.ip = self.agent.ips.allocate(self.pod.get("status", {}).get("podIP"))
        while not self.deleting:
            try:
                self._materialise_volumes()
                break
            except (ApiError, ConfigError, OSError) as e:
                log.warning("%s: volumes not ready: %s", self.key, e)
                self._failed_mount(str(e))
                self._report()
                self.wake.wait(2)
                self.wake.clear()
        while not self.deleting and not self.agent.stopping.is_set():
            self._step()
            self._report()
            containers = self.containers if self.init_done else self.init_containers
            next_at = min(c.next_event() for c in containers)
            self.wake.wait(min(max(next_at - time.monotonic(), 0.01), IDLE_TICK_S))
            self.wake.clear()
        if self.agent.stopping.is_set() and not self.pod["metadata"].get("deletionTimestamp"):
            return
        grace = self.grace()
        log.info("%s: terminating (grace %.0fs)", self.key, grace)
        running = [c for c in self.init_containers + self.containers if c.running]
        threads = [threading.Thread(target=c.kill, args=(grace,)) for c in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not self.gone:
            self._report()
            self._remove()

    def _failed_mount(self, problem: str) -> None:
        """A FailedMount warning event on the pod, once per distinct problem, as a kubelet emits it."""
        if problem == self.mount_problem:
            return
        self.mount_problem = problem
        meta = self.pod["metadata"]
        now = now_iso()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": "FailedMount",
            "message": problem,
            "type": "Warning",
            "source": {"component": "kubelet", "host": self.agent.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.agent.api.post(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except (ApiError, OSError) as e:
            log.warning("%s: event not recorded: %s", self.key, e)

    def _remove(self) -> None:
        """Deletes the pod object for good, retrying while the API server is unreachable."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        options["preconditions"] = {"uid": self.uid}
        while not self.agent.stopping.is_set():
            try:
                self.agent.api.delete(self.path, options)
                return
            except ApiError as e:
                if e.status in (404, 409):
                    return
                log.warning("%s: removing the pod failed: %s", self.key, e)
            except OSError as e:
                log.warning("%s: removing the pod failed: %s", self.key, e)
            self.agent.stopping.wait(1)

    def _step(self) -> None:
        if not self.init_done:
            current = next((c for c in self.init_containers if not c.terminated_ok), None)
            if current is None:
                self.init_done = True
            else:
                current.poll()
                if "terminated" in current.state and not current.terminated_ok and not current.will_restart:
                    self.init_failed = True
                if current.terminated_ok:
                    self.init_done = all(c.terminated_ok for c in self.init_containers)
                return
        for c in self.containers:
            c.poll()

    def phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if not self.init_done:
            return "Pending"
        if not any(c.runs for c in self.containers):
            return "Pending"
        if any(c.running or c.will_restart for c in self.containers):
            return "Running"
        return "Succeeded" if all(c.terminated_ok for c in self.containers) else "Failed"

    def _condition(self, ctype: str, ok: bool) -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self.conditions.get(ctype)
        if prev is None or prev[0] != status:
            self.conditions[ctype] = (status, now_iso())
        return {"type": ctype, "status": status, "lastTransitionTime": self.conditions[ctype][1]}

    def _report(self) -> None:
        phase = self.phase()
        ready = self.init_done and all(c.ready for c in self.containers)
        host_ip = self.agent.host_ip
        status = {
            "phase": phase,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("Initialized", self.init_done),
                self._condition("ContainersReady", ready),
                self._condition("Ready", ready),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if status == self.last_status:
            return
        try:
            self.agent.api.merge_patch(self.path + "/status", {"status": status})
            self.last_status = status
        except ApiError as e:
            if e.status == 404:
                self.gone = True
            else:
                log.warning("%s: status patch failed: %s", self.key, e)
        except OSError as e:
            log.warning("%s: status patch failed: %s", self.key, e)

    # -- env and volumes -----------------------------------------------------------------------
    def _lookup(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """A ConfigMap's or Secret's entries as bytes (binaryData included), None when optional and absent."""
        ns = self.pod["metadata"]["namespace"]
        try:
            obj = self.agent.api.get(f"/api/v1/namespaces/{ns}/{kind}s/{name}")
        except ApiError as e:
            if e.status == 404 and optional:
                return None
            if e.status == 404:
                raise ConfigError("CreateContainerConfigError", f'{kind} "{name}" not found') from e
            raise
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        data = {k: v.encode() for k, v in obj.get("data", {}).items()}
        data.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
        return data

    def _text(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        data = self._lookup(kind, name, optional)
        return None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}

    def _key_ref(self, kind: str, ref: dict[str, Any]) -> str | None:
        data = self._text(kind, ref["name"], ref.get("optional", False))
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(
                "CreateContainerConfigError", f"couldn't find key {ref['key']} in {kind} {ref['name']}"
            )
        return data[ref["key"]]

    def _field(self, path: str) -> str:
        pod = self.pod
        meta = pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return meta.get(m.group(1), {}).get(m.group(2), "")
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
            "status.hostIP": self.agent.host_ip,
            "status.hostIPs": self.agent.host_ip,
        }
        if path not in values:
            raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef {path}")
        return values[path]

    def _resource(self, spec: dict[str, Any], ref: dict[str, Any]) -> str:
        """As a kubelet resolves resourceFieldRef: the named container's (else this one's) limit, the
        node's allocatable amount when none is set, or its request; divided by divisor, rounded up."""
        from nbkube.api.pod import parse_quantity

        if ref.get("containerName"):
            pod_spec = self.pod["spec"]
            containers = pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
            spec = next((c for c in containers if c["name"] == ref["containerName"]), None) or {}
            if not spec:
                raise ConfigError("CreateContainerConfigError", f"container {ref['containerName']} not found")
        section, _, res = ref["resource"].partition(".")
        value = spec.get("resources", {}).get(section, {}).get(res)
        if value is None:
            value = self.agent.capacity.get(res, "0") if section == "limits" else "0"
        scale = 1000 if res == "cpu" else 1  # cpu in millicores, as the kubelet divides it
        amount = (parse_quantity(value) * scale).to_integral_value(rounding="ROUND_CEILING")
        divisor = (parse_quantity(ref.get("divisor") or 0) or 1) * scale  # the API server defaults it to 0
        return str(int((amount / divisor).to_integral_value(rounding="ROUND_CEILING")))

    def build_env(self, spec: dict[str, Any]) -> dict[str, str]:
        meta = self.pod["metadata"]
        # A container sees the node's environment, as a process would, but not the test run's own markers:
        # ipykernel turns its file-descriptor capture off when it sees PYTEST_CURRENT_TEST.
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTEST_CURRENT_TEST")}
        env.update(self.agent.service_env)
        env["HOSTNAME"] = meta["name"]
        env["NBKUBE_POD_IP"] = self.ip
        env["NBKUBE_POD_DIR"] = str(self.pod_dir)
        for name, path in self.volumes.items():
            env[f"NBKUBE_VOLUME_{env_name(name)}"] = path
        defined: dict[str, str] = {}
        for src in spec.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                ref = src["configMapRef"]
                data = self._text("configmap", ref["name"], ref.get("optional", False)) or {}
            else:
                ref = src["secretRef"]
                data = self._text("secret", ref["name"], ref.get("optional", False)) or {}
            defined.update({prefix + k: v for k, v in data.items()})
        for item in spec.get("env", []):
            name = item["name"]
            if "valueFrom" not in item:
                defined[name] = expand(item.get("value", ""), defined)
                continue
            vf = item["valueFrom"]
            value: str | None
            if "fieldRef" in vf:
                value = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                value = self._resource(spec, vf["resourceFieldRef"])
            elif "secretKeyRef" in vf:
                value = self._key_ref("secret", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                value = self._key_ref("configmap", vf["configMapKeyRef"])
            else:
                raise ConfigError("CreateContainerConfigError", f"unsupported valueFrom {list(vf)}")
            if value is not None:
                defined[name] = value
        env.update(defined)
        return env

    def _write_files(self, target: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None) -> None:
        pairs = (
            [(i["path"], data[i["key"]]) for i in items if i["key"] in data] if items else list(data.items())
        )
        for rel, content in pairs:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)

    def _token(self, source: dict[str, Any]) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": source.get("expirationSeconds", 3607),
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        resp = self.agent.api.post(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
        return resp["status"]["token"]

    def _claim_path(self, claim: dict[str, Any]) -> str:
        """The directory of the PersistentVolume a claim of the pod's namespace is bound to."""
        ns, name = self.pod["metadata"]["namespace"], claim["claimName"]
        try:
            pvc = self.agent.api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}")
        except ApiError as e:
            if e.status == 404:
                raise ConfigError("FailedMount", f'persistentvolumeclaim "{name}" not found') from e
            raise
        volume_name = pvc.get("spec", {}).get("volumeName")
        if pvc.get("status", {}).get("phase") != "Bound" or not volume_name:
            raise ConfigError("FailedMount", f'persistentvolumeclaim "{name}" is not bound')
        pv = self.agent.api.get(f"/api/v1/persistentvolumes/{volume_name}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise ConfigError(
                "FailedMount",
                f'persistentvolume "{volume_name}": the node agent mounts only hostPath and local volumes',
            )
        path = str(source["path"])
        if not os.path.isdir(path):
            if pv["spec"].get("hostPath", {}).get("type") != "DirectoryOrCreate":
                raise ConfigError("FailedMount", f'persistentvolume "{volume_name}": {path} does not exist')
            os.makedirs(path, exist_ok=True)
        return path

    def _materialise_volumes(self) -> None:
        for vol in self.pod["spec"].get("volumes", []):
            try:
                self._materialise(vol)
            except ConfigError as e:
                raise ConfigError(
                    "FailedMount", f'MountVolume.SetUp failed for volume "{vol["name"]}" : {e}'
                ) from e

    def _materialise(self, vol: dict[str, Any]) -> None:
        root = self.pod_dir / "volumes"
        name = vol["name"]
        if "hostPath" in vol:
            self.volumes[name] = vol["hostPath"]["path"]
            return
        if "persistentVolumeClaim" in vol:
            self.volumes[name] = self._claim_path(vol["persistentVolumeClaim"])
            if vol["persistentVolumeClaim"].get("readOnly"):
                self.read_only.add(name)
            return
        if any(kind in vol for kind in ("secret", "configMap", "downwardAPI", "projected")):
            self.read_only.add(name)
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        self.volumes[name] = str(target)
        if "secret" in vol:
            s = vol["secret"]
            data = self._lookup("secret", s["secretName"], s.get("optional", False)) or {}
            self._write_files(target, data, s.get("items"))
        elif "configMap" in vol:
            c = vol["configMap"]
            data = self._lookup("configmap", c["name"], c.get("optional", False)) or {}
            self._write_files(target, data, c.get("items"))
        elif "downwardAPI" in vol:
            for item in vol["downwardAPI"].get("items", []):
                if "fieldRef" in item:
                    self._write_files(
                        target,
                        {"v": self._field(item["fieldRef"]["fieldPath"]).encode()},
                        [{"key": "v", "path": item["path"]}],
                    )
        elif "projected" in vol:
            for src in vol["projected"].get("sources", []):
                if "serviceAccountToken" in src:
                    sat = src["serviceAccountToken"]
                    self._write_files(
                        target, {"t": self._token(sat).encode()}, [{"key": "t", "path": sat["path"]}]
                    )
                elif "configMap" in src:
                    c = src["configMap"]
                    data = self._lookup("configmap", c["name"], c.get("optional", False)) or {}
                    self._write_files(target, data, c.get("items"))
                elif "secret" in src:
                    s = src["secret"]
                    data = self._lookup("secret", s["name"], s.get("optional", False)) or {}
                    self._write_files(target, data, s.get("items"))
                elif "downwardAPI" in src:
                    for item in src["downwardAPI"].get("items", []):
                        if "fieldRef" in item:
                            self._write_files(
                                target,
                                {"v": self._field(item["fieldRef"]["fieldPath"]).encode()},
                                [{"key": "v", "path": item["path"]}],
                            )


class Agent:
    def __init__(
        self, kubeconfig: str, directory: Path, node_name: str, kubelet_version: str, pod_octet: int
    ) -> None:
        self.api = Rest(kubeconfig)
        self.dir = directory
        self.node_name = node_name
        self.kubelet_version = kubelet_version
        self.host_ip = "127.0.0.1"
        self.ips = IpAllocator(pod_octet)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.pid_dir = directory / "agent" / "pids"
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.capacity = {
            "cpu": str(os.cpu_count() or 2),
            "memory": f"{mem // 1024 // 1024 // 1024}Gi",
            "pods": "110",
            "ephemeral-storage": "50Gi",
        }
        host, _, port = self.api.server.removeprefix("https://").rpartition(":")
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
        }
        self.node_uid = ""
        self._started = now_iso()
        self.can_mount = mount_namespaces_work()

    # -- pid bookkeeping for `cluster down` ----------------------------------------------------
    def record_pid(self, pid: int, ticks: int | None) -> None:
        (self.pid_dir / str(pid)).write_text(str(ticks or ""))

    def forget_pid(self, pid: int) -> None:
        (self.pid_dir / str(pid)).unlink(missing_ok=True)

    # -- node and lease ------------------------------------------------------------------------
    def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "nbkube-local-process",
                },
            },
            "spec": {},
        }
        try:
            self.node_uid = self.api.post("/api/v1/nodes", node)["metadata"]["uid"]
        except ApiError as e:
            if e.status != 409:
                raise
            self.node_uid = self.api.get(f"/api/v1/nodes/{self.node_name}")["metadata"]["uid"]
        self.heartbeat()

    def _node_status(self) -> dict[str, Any]:
        t = now_iso()

        def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self._started,
            }

        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "nbkube node agent"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "nbkube node agent"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "nbkube node agent"),
                cond("Ready", "True", "KubeletReady", "nbkube node agent runs pods as local processes"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "nbkube",
                "systemUUID": "nbkube",
                "bootID": "nbkube",
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "containerRuntimeVersion": "nbkube-process://0.1",
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def heartbeat(self) -> None:
        self.api.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": self._node_status()})
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_now(),
        }
        try:
            self.api.merge_patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.api.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.node_name,
                        "ownerReferences": [
                            {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self.node_uid}
                        ],
                    },
                    "spec": spec,
                },
            )

    def heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
            except Exception as e:  # keep heartbeating whatever happened
                log.warning("heartbeat failed: %s: %s", type(e).__name__, e)

    # -- pods ----------------------------------------------------------------------------------
    def on_pod(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            if self.stopping.is_set():
                return
            phase = pod.get("status", {}).get("phase")
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            if phase in ("Succeeded", "Failed") and not deleting:
                return  # finished before this agent started
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        worker.start()

    def on_pod_deleted(self, pod: dict[str, Any]) -> None:
        with self.lock:
            worker = self.workers.get(pod["metadata"]["uid"])
        if worker is not None:
            worker.vanish()

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]

    def watch_loop(self) -> None:
        path = f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.node_name}"
        while not self.stopping.is_set():
            try:
                listing = self.api.get(path)
                rv = listing["metadata"]["resourceVersion"]
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.on_pod(pod)
                with self.lock:
                    vanished = [w for uid, w in self.workers.items() if uid not in seen]
                for w in vanished:
                    w.vanish()
                while not self.stopping.is_set():
                    for event in self.api.watch(path, rv):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            raise ApiError(obj.get("code", 500), obj)
                        rv = obj["metadata"]["resourceVersion"]
                        if kind == "DELETED":
                            self.on_pod_deleted(obj)
                        elif kind in ("ADDED", "MODIFIED"):
                            self.on_pod(obj)
            except ApiError as e:
                if e.status != 410:
                    log.warning("pod watch: %s; relisting", e)
                    self.stopping.wait(1)
            except Exception as e:
                log.warning("pod watch broke (%s: %s); relisting", type(e).__name__, e)
                self.stopping.wait(1)

    def run(self) -> None:
        while True:
            try:
                self.register()
                break
            except (ApiError, OSError) as e:
                log.warning("registering node %s failed (%s); retrying", self.node_name, e)
                time.sleep(1)
        log.info("node %s registered; capacity %s", self.node_name, self.capacity)
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.watch_loop, name="watch", daemon=True).start()
        self.stopping.wait()
        log.info("stopping: ending every pod process")
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        for w in workers:
            w.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nbkube_testenv.nodeagent", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--node-name", default="nbkube-node")
    parser.add_argument("--kubelet-version", default="v0.0.0-nbkube")
    parser.add_argument("--pod-octet", type=int, default=1, help="pods get addresses 127.<octet>.x.y")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = Agent(args.kubeconfig, args.dir.absolute(), args.node_name, args.kubelet_version, args.pod_octet)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    agent.run()


if __name__ == "__main__":
    main()
