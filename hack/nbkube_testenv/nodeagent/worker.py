"""One pod's life on the node: its address, its volumes, init containers then regular containers, and
its termination; what it reports goes through PodReporter."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent.common import ConfigError, log
from nbkube_testenv.nodeagent.container import IDLE_TICK_S, Container
from nbkube_testenv.nodeagent.podstatus import PodReporter
from nbkube_testenv.nodeagent.sources import PodSources
from nbkube_testenv.nodeagent.volumes import PodVolumes
from nbkube_testenv.rest import ApiError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.agent import Agent


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
        self.sources = PodSources(self)
        self.volumes = PodVolumes(self)
        self.reporter = PodReporter(self)
        self.init_containers = [Container(self, c, True) for c in pod["spec"].get("initContainers", [])]
        self.containers = [Container(self, c, False) for c in pod["spec"]["containers"]]
        self.init_done = not self.init_containers
        self.init_failed = False

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
            self.agent.netpol.release(self)
            if self.ip and self.ip != self.agent.host_ip:
                self.agent.ips.release(self.ip)
            self.agent.worker_done(self)

    def _run(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        if self.pod["spec"].get("hostNetwork"):
            self.ip = self.agent.host_ip
        else:
            self.ip = self.agent.ips.allocate(self.pod.get("status", {}).get("podIP"))
        self._set_up_volumes()
        # No container starts before the pod's NetworkPolicy chains are in place (enforcer.py).
        admitted = not self.deleting and self.agent.netpol.admit(self)
        while admitted and not self.deleting and not self.agent.stopping.is_set():
            self._step()
            self.reporter.report()
            containers = self.containers if self.init_done else self.init_containers
            next_at = min(c.next_event() for c in containers)
            self.wake.wait(min(max(next_at - time.monotonic(), 0.01), IDLE_TICK_S))
            self.wake.clear()
        if self.agent.stopping.is_set() and not self.pod["metadata"].get("deletionTimestamp"):
            return
        self._terminate()

    def _set_up_volumes(self) -> None:
        """Until every volume is set up (or the pod goes): ContainerCreating with a FailedMount event."""
        while not self.deleting:
            try:
                self.volumes.materialise()
                return
            except (ApiError, ConfigError, OSError) as e:
                log.warning("%s: volumes not ready: %s", self.key, e)
                self.reporter.failed_mount(str(e))
                self.reporter.report()
                self.wake.wait(2)
                self.wake.clear()

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

    def _terminate(self) -> None:
        """Every running container killed within the grace period, together; then the pod removed."""
        grace = self.grace()
        log.info("%s: terminating (grace %.0fs)", self.key, grace)
        running = [c for c in self.init_containers + self.containers if c.running]
        threads = [threading.Thread(target=c.kill, args=(grace,)) for c in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not self.gone:
            self.reporter.report()
            self.reporter.remove()
