"""One container of a pod as a local process: started with its env, workingDir and mounts, watched,
probed, restarted with a backoff per restartPolicy, killed, and reported as a containerStatus."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from nbkube_testenv import procs
from nbkube_testenv.nodeagent.common import ConfigError, log, now_iso
from nbkube_testenv.nodeagent.env import container_env, expand
from nbkube_testenv.nodeagent.mounts import in_mount_namespace, volume_mounts
from nbkube_testenv.nodeagent.probes import Probe
from nbkube_testenv.rest import ApiError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.worker import PodWorker

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 10.0
IDLE_TICK_S = 5.0


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

    @property
    def will_restart(self) -> bool:
        return self.next_start_at is not None

    @property
    def log_path(self) -> Path:
        return self.worker.pod_dir / f"{self.name}.log"

    # -- starting --------------------------------------------------------------------------------
    def start(self) -> None:
        self.next_start_at = None
        try:
            argv = self._prepare()
        except ConfigError as e:
            self.state = {"waiting": {"reason": e.reason, "message": str(e)}}
            self.next_start_at = time.monotonic() + 2
            return
        except (ApiError, OSError) as e:  # the API server is unreachable or restarting: retry
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            self.next_start_at = time.monotonic() + 2
            return
        self._launch(argv)

    def _prepare(self) -> list[str]:
        """Sets env and cwd and returns the argv to run (ConfigError when the container cannot start yet)."""
        self.env = container_env(self.worker, self.spec)
        argv = [expand(a, self.env) for a in self.spec.get("command", []) + self.spec.get("args", [])]
        if not self.spec.get("command"):
            raise ConfigError(
                "CreateContainerError",
                "the nbkube node agent pulls no images: set the container's command "
                "(it runs as a local process)",
            )
        self.cwd = self.spec.get("workingDir") or str(self.worker.pod_dir)
        if not os.path.isdir(self.cwd):
            raise ConfigError("CreateContainerError", f"workingDir {self.cwd} does not exist on this machine")
        if self.worker.agent.can_mount:
            argv = in_mount_namespace(volume_mounts(self, argv), argv, self.worker.pod_dir / "staged-mounts")
        return self.worker.agent.netpol.argv(self.worker, argv)  # in the pod's cgroup

    def _launch(self, argv: list[str]) -> None:
        """Runs argv in its own session, output appended to the container's log."""
        if self.runs:
            self.restart_count += 1
        self.runs += 1
        logf = open(self.log_path, "ab")
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

    def _await_exit(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self.worker.wake.set()

    # -- watching --------------------------------------------------------------------------------
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
            with open(self.log_path, "rb") as logf:
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

    # -- stopping and reporting ------------------------------------------------------------------
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
