"""The agent: registers the node, watches the pods bound to it and gives each its PodWorker."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import nbkube_testenv.nodeagent
from nbkube_testenv.nodeagent.addresses import IpAllocator
from nbkube_testenv.nodeagent.common import log
from nbkube_testenv.nodeagent.enforcer import ENFORCEMENT_ANNOTATION, Enforcer
from nbkube_testenv.nodeagent.mounts import mount_namespaces_work
from nbkube_testenv.nodeagent.node import Node, node_capacity
from nbkube_testenv.nodeagent.worker import PodWorker
from nbkube_testenv.rest import ApiError, Rest


class Agent:
    def __init__(
        self, kubeconfig: str, directory: Path, node_name: str, kubelet_version: str, pod_octet: int
    ) -> None:
        self.api = Rest(kubeconfig)
        self.dir = directory
        self.node_name = node_name
        self.host_ip = "127.0.0.1"
        self.ips = IpAllocator(pod_octet)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.pid_dir = directory / "agent" / "pids"
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.capacity = node_capacity()
        self.netpol = Enforcer(self)
        self.node = Node(
            self.api,
            node_name,
            kubelet_version,
            self.host_ip,
            self.capacity,
            {ENFORCEMENT_ANNOTATION: self.netpol.status},
        )
        host, _, port = self.api.server.removeprefix("https://").rpartition(":")
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
        }
        self.can_mount = mount_namespaces_work()

    # -- pid bookkeeping for `cluster down` ----------------------------------------------------
    def record_pid(self, pid: int, ticks: int | None) -> None:
        (self.pid_dir / str(pid)).write_text(str(ticks or ""))

    def forget_pid(self, pid: int) -> None:
        (self.pid_dir / str(pid)).unlink(missing_ok=True)

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
                self.node.register()
                break
            except (ApiError, OSError) as e:
                log.warning("registering node %s failed (%s); retrying", self.node_name, e)
                time.sleep(1)
        log.info("node %s registered; capacity %s", self.node_name, self.capacity)
        self.netpol.start()
        threading.Thread(
            target=self.node.heartbeat_loop, args=(self.stopping,), name="heartbeat", daemon=True
        ).start()
        threading.Thread(target=self.watch_loop, name="watch", daemon=True).start()
        self.stopping.wait()
        log.info("stopping: ending every pod process")
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        for w in workers:
            w.join(timeout=10)
        self.netpol.stop()


def main(argv: list[str] | None = None) -> None:
    description = (nbkube_testenv.nodeagent.__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="nbkube_testenv.nodeagent", description=description)
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
