"""NetworkPolicy egress enforcement for the agent's pods: NetworkPolicies, Pods and Namespaces watched,
each local pod's chains (netpol.py) recomputed on every event and every REFRESH_S seconds (the local
listening sockets move as kernels start and stop), and written by firewall.py.

A pod's containers start only once its chains are in place: PodWorker.admit waits until a computation
that began after the pod registered (with the NetworkPolicies and Namespaces listed afresh, so a policy
created before the pod is never missed by a watch lagging behind) has been applied. Where cgroup v2 or
iptables is unavailable (not root, no iptables), the agent logs why and enforces nothing; the Node's
annotation ENFORCEMENT_ANNOTATION says which (tests that need enforcement read it and fail).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent import firewall, netpol
from nbkube_testenv.nodeagent.common import log
from nbkube_testenv.nodeagent.firewall import Cgroups, FirewallError
from nbkube_testenv.rest import ApiError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.agent import Agent
    from nbkube_testenv.nodeagent.worker import PodWorker
    from nbkube_testenv.rest import Rest

REFRESH_S = 2.0
DEBOUNCE_S = 0.1
ENFORCEMENT_ANNOTATION = "nbkube.io/network-policy"
ENFORCED = "egress enforced"


class Informer:
    """A list-and-watch cache of one kind of object (uid -> object); on_change after every change."""

    def __init__(self, api: Rest, path: str, on_change: Callable[[], None], stopping: threading.Event):
        self.api = api
        self.path = path
        self.on_change = on_change
        self.stopping = stopping
        self.objects: dict[str, dict[str, Any]] = {}
        self.listed_rv = 0
        self.synced = False
        self.lock = threading.Lock()

    def refresh(self) -> str:
        """Lists afresh (a quorum read: everything created before is seen); watch events older than
        this list are ignored from then on."""
        listing = self.api.get(self.path)
        rv = listing["metadata"]["resourceVersion"]
        with self.lock:
            self.objects = {o["metadata"]["uid"]: o for o in listing["items"]}
            self.listed_rv = int(rv)
            self.synced = True
        return str(rv)

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects.values())

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                rv = self.refresh()
                self.on_change()
                while not self.stopping.is_set():
                    for event in self.api.watch(self.path, rv):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            raise ApiError(obj.get("code", 500), obj)
                        rv = obj["metadata"]["resourceVersion"]
                        if kind not in ("ADDED", "MODIFIED", "DELETED"):
                            continue
                        with self.lock:
                            if int(rv) <= self.listed_rv:
                                continue
                            if kind == "DELETED":
                                self.objects.pop(obj["metadata"]["uid"], None)
                            else:
                                self.objects[obj["metadata"]["uid"]] = obj
                        self.on_change()
            except ApiError as e:
                if e.status != 410:
                    log.warning("watch of %s: %s; relisting", self.path, e)
                    self.stopping.wait(1)
            except Exception as e:
                log.warning("watch of %s broke (%s: %s); relisting", self.path, type(e).__name__, e)
                self.stopping.wait(1)


class Enforcer:
    """The agent's NetworkPolicy egress enforcement (module doc); without it, admit lets pods start
    at once and argv leaves them out of any cgroup."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.cid = firewall.cluster_id(agent.dir)
        self.cgroups: Cgroups | None = None
        self.reason = ""
        self.kick = threading.Event()
        self.cond = threading.Condition()
        self.apply_lock = threading.Lock()
        self.local: dict[str, PodWorker] = {}
        self.requested = 0  # admissions asked for
        self.done = 0  # admissions served by a finished computation
        self.relist = False
        self.ready: set[str] = set()  # pods whose chains are what the last computation wanted
        self.applied: dict[str, dict[int, netpol.Chains | None]] = {}
        self.warned: set[str] = set()
        stopping = agent.stopping
        self.policies = Informer(
            agent.api, "/apis/networking.k8s.io/v1/networkpolicies", self.kick.set, stopping
        )
        self.namespaces = Informer(agent.api, "/api/v1/namespaces", self.kick.set, stopping)
        self.pods = Informer(agent.api, "/api/v1/pods", self.kick.set, stopping)
        self._probe()

    @property
    def enforcing(self) -> bool:
        return not self.reason

    @property
    def status(self) -> str:
        return ENFORCED if self.enforcing else f"not enforced: {self.reason}"

    def _probe(self) -> None:
        """Cleans up what a previous agent of this cluster left, then tries a cgroup and a chain."""
        firewall.cleanup(self.agent.dir)
        root = firewall.cgroup2_root()
        if os.geteuid() != 0:
            self.reason = "the node agent is not root"
        elif root is None:
            self.reason = "no cgroup v2 hierarchy is mounted"
        else:
            cgroups = Cgroups(root, self.cid)
            try:
                cgroups.create("probe")
            except OSError as e:
                self.reason = f"cannot make a cgroup in {cgroups.base}: {e}"
            else:
                self.cgroups = cgroups
                self.reason = self._probe_chains(cgroups)
                cgroups.remove("probe")
        if self.reason:
            log.warning("NetworkPolicies are NOT enforced: %s", self.reason)
        else:
            log.info("NetworkPolicy egress is enforced (cgroups in %s)", self.cgroups and self.cgroups.base)

    def _probe_chains(self, cgroups: Cgroups) -> str:
        missing = firewall.tools_missing()
        if missing:
            return f"{', '.join(missing)} not found (apt-get install iptables)"
        name = firewall.chain_prefix(self.cid) + "probe"
        try:
            for family in firewall.FAMILIES:
                firewall.install(
                    family, name, cgroups.relative("probe"), netpol.Chains({name: [["-j", "RETURN"]]}), None
                )
        except FirewallError as e:
            return str(e)
        finally:
            for family in firewall.FAMILIES:
                try:
                    firewall.remove(family, name)
                except FirewallError:
                    pass
        return ""

    # -- the agent's side ----------------------------------------------------------------------------
    def start(self) -> None:
        if not self.enforcing:
            return
        for name, informer in (
            ("policies", self.policies),
            ("namespaces", self.namespaces),
            ("pods", self.pods),
        ):
            threading.Thread(target=informer.run, name=f"watch-{name}", daemon=True).start()
        threading.Thread(target=self._loop, name="netpol", daemon=True).start()

    def stop(self) -> None:
        removed = firewall.cleanup(self.agent.dir)
        log.info("removed %d NetworkPolicy chains and this cluster's cgroups", removed)

    # -- a pod's side --------------------------------------------------------------------------------
    def admit(self, worker: PodWorker) -> bool:
        """Makes the pod's cgroup and waits until its chains are in place; False when the pod went
        (or the agent stops) first."""
        if self.cgroups is not None:
            self.cgroups.create(worker.uid)
        if not self.enforcing:
            return True
        with self.cond:
            self.local[worker.uid] = worker
            self.requested += 1
            wanted = self.requested
            self.relist = True
        self.kick.set()
        with self.cond:
            while not (self.done >= wanted and worker.uid in self.ready):
                if worker.deleting:
                    return False
                self.cond.wait(1)
        return True

    def argv(self, worker: PodWorker, argv: list[str]) -> list[str]:
        return argv if self.cgroups is None else self.cgroups.join_argv(worker.uid, argv)

    def release(self, worker: PodWorker) -> None:
        """The pod's chains removed, then what is left in its cgroup killed and the cgroup removed."""
        if self.enforcing:
            with self.apply_lock:
                with self.cond:
                    self.local.pop(worker.uid, None)
                    self.ready.discard(worker.uid)
                if self.applied.pop(worker.uid, None) is not None:
                    for family in firewall.FAMILIES:
                        try:
                            firewall.remove(family, firewall.chain_name(self.cid, worker.uid))
                        except FirewallError as e:
                            log.warning("%s: removing its chains: %s", worker.key, e)
            self.kick.set()
        if self.cgroups is not None and not self.cgroups.remove(worker.uid):
            log.warning("%s: cgroup %s could not be removed", worker.key, self.cgroups.path(worker.uid))

    # -- computing and applying ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.agent.stopping.is_set():
            if self.kick.wait(REFRESH_S) and not self.relist:
                self.agent.stopping.wait(DEBOUNCE_S)  # one computation for a burst of pod updates
            self.kick.clear()
            try:
                self.sync()
            except Exception as e:
                log.warning("NetworkPolicy chains not updated (%s: %s); retrying", type(e).__name__, e)
                self.agent.stopping.wait(1)

    def _pod_refs(self, local: dict[str, PodWorker]) -> list[netpol.PodRef]:
        refs = {}
        for pod in self.pods.items():
            meta, status = pod["metadata"], pod.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed") or (pod.get("spec") or {}).get("hostNetwork"):
                continue
            uid = meta["uid"]
            ip = local[uid].ip if uid in local else status.get("podIP", "")
            refs[uid] = netpol.PodRef(meta["namespace"], meta.get("labels") or {}, ip or "", uid)
        for uid, w in local.items():
            if uid not in refs and not w.pod["spec"].get("hostNetwork"):
                meta = w.pod["metadata"]
                refs[uid] = netpol.PodRef(meta["namespace"], meta.get("labels") or {}, w.ip, uid)
        return list(refs.values())

    def sync(self) -> None:
        with self.cond:
            wanted, relist, self.relist = self.requested, self.relist, False
        try:
            for informer in (self.policies, self.namespaces) if relist else ():
                informer.refresh()
            if not self.pods.synced:
                self.pods.refresh()
        except BaseException:
            with self.cond:
                self.relist = self.relist or relist
            raise
        assert self.cgroups is not None
        with self.apply_lock:
            with self.cond:
                local = dict(self.local)
            pods = self._pod_refs(local)
            owners = {}
            for uid in local:
                for inode in firewall.socket_inodes(self.cgroups.pids(uid)):
                    owners[inode] = uid
            listeners = firewall.listeners(owners)
            policies = self.policies.items()
            namespaces = {
                n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self.namespaces.items()
            }
            ready = set()
            for uid, worker in local.items():
                if self._apply(uid, worker, policies, pods, namespaces, listeners):
                    ready.add(uid)
        with self.cond:
            self.ready = ready
            self.done = max(self.done, wanted)
            self.cond.notify_all()

    def _apply(
        self,
        uid: str,
        worker: PodWorker,
        policies: list[dict[str, Any]],
        pods: list[netpol.PodRef],
        namespaces: dict[str, dict[str, str]],
        listeners: dict[int, list[netpol.Listener]],
    ) -> bool:
        assert self.cgroups is not None
        if worker.pod["spec"].get("hostNetwork"):
            self.applied[uid] = {}
            return True  # NetworkPolicies do not apply to host-network pods
        meta = worker.pod["metadata"]
        me = netpol.PodRef(meta["namespace"], meta.get("labels") or {}, worker.ip, uid)
        base = firewall.chain_name(self.cid, uid)
        applied = self.applied.setdefault(uid, {})
        ok = True
        for family in firewall.FAMILIES:
            new = netpol.pod_chains(base, me, policies, pods, namespaces, listeners[family], family)
            old = applied.get(family)
            if (new and new.chains) == (old and old.chains):
                continue
            for warning in new.warnings if new else ():
                if warning not in self.warned:
                    self.warned.add(warning)
                    log.warning("%s: %s", worker.key, warning)
            try:
                if new is None:
                    firewall.remove(family, base)
                else:
                    firewall.install(family, base, self.cgroups.relative(uid), new, old)
            except FirewallError as e:
                log.warning("%s: IPv%d egress chains not applied: %s", worker.key, family, e)
                try:
                    firewall.remove(family, base)
                except FirewallError:
                    pass
                applied.pop(family, None)
                ok = False
                continue
            if (new is None) != (old is None) or family not in applied:
                rules = sum(len(r) for r in new.chains.values()) if new else 0
                log.info(
                    "%s: IPv%d egress %s (%d rules)",
                    worker.key,
                    family,
                    "restricted" if new else "open",
                    rules,
                )
            applied[family] = new
        return ok
