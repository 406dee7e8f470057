"""What the node agent tells the API server about one pod: its status (phase, conditions, container
statuses), FailedMount warning events, and the pod object's removal once its processes have ended."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent.common import log, now_iso
from nbkube_testenv.rest import ApiError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.worker import PodWorker


def failed_mount_event(pod: dict[str, Any], problem: str, node_name: str) -> dict[str, Any]:
    """A FailedMount warning Event on the pod, as a kubelet emits it."""
    meta = pod["metadata"]
    now = now_iso()
    return {
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
        "source": {"component": "kubelet", "host": node_name},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class PodReporter:
    """Reports one pod worker's state; patches the status only when it changed."""

    def __init__(self, worker: PodWorker) -> None:
        self.worker = worker
        self.start_time = worker.pod.get("status", {}).get("startTime") or now_iso()
        self.conditions: dict[str, tuple[str, str]] = {}
        self.last_status: dict[str, Any] | None = None
        self.mount_problem = ""

    @property
    def path(self) -> str:
        meta = self.worker.pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"

    def phase(self) -> str:
        w = self.worker
        if w.init_failed:
            return "Failed"
        if not w.init_done:
            return "Pending"
        if not any(c.runs for c in w.containers):
            return "Pending"
        if any(c.running or c.will_restart for c in w.containers):
            return "Running"
        return "Succeeded" if all(c.terminated_ok for c in w.containers) else "Failed"

    def _condition(self, ctype: str, ok: bool) -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self.conditions.get(ctype)
        if prev is None or prev[0] != status:
            self.conditions[ctype] = (status, now_iso())
        return {"type": ctype, "status": status, "lastTransitionTime": self.conditions[ctype][1]}

    def status(self) -> dict[str, Any]:
        w = self.worker
        ready = w.init_done and all(c.ready for c in w.containers)
        host_ip = w.agent.host_ip
        status = {
            "phase": self.phase(),
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": w.ip,
            "podIPs": [{"ip": w.ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("Initialized", w.init_done),
                self._condition("ContainersReady", ready),
                self._condition("Ready", ready),
            ],
            "containerStatuses": [c.status() for c in w.containers],
        }
        if w.init_containers:
            status["initContainerStatuses"] = [c.status() for c in w.init_containers]
        return status

    def report(self) -> None:
        status = self.status()
        if status == self.last_status:
            return
        w = self.worker
        try:
            w.agent.api.merge_patch(self.path + "/status", {"status": status})
            self.last_status = status
        except ApiError as e:
            if e.status == 404:
                w.gone = True
            else:
                log.warning("%s: status patch failed: %s", w.key, e)
        except OSError as e:
            log.warning("%s: status patch failed: %s", w.key, e)

    def failed_mount(self, problem: str) -> None:
        """A FailedMount warning event on the pod, once per distinct problem, as a kubelet emits it."""
        if problem == self.mount_problem:
            return
        self.mount_problem = problem
        w = self.worker
        namespace = w.pod["metadata"]["namespace"]
        try:
            w.agent.api.post(
                f"/api/v1/namespaces/{namespace}/events",
                failed_mount_event(w.pod, problem, w.agent.node_name),
            )
        except (ApiError, OSError) as e:
            log.warning("%s: event not recorded: %s", w.key, e)

    def remove(self) -> None:
        """Deletes the pod object for good, retrying while the API server is unreachable."""
        w = self.worker
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        options["preconditions"] = {"uid": w.uid}
        while not w.agent.stopping.is_set():
            try:
                w.agent.api.delete(self.path, options)
                return
            except ApiError as e:
                if e.status in (404, 409):
                    return
                log.warning("%s: removing the pod failed: %s", w.key, e)
            except OSError as e:
                log.warning("%s: removing the pod failed: %s", w.key, e)
            w.agent.stopping.wait(1)
