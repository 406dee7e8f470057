"""`cluster up` and `cluster down` on their own clusters: idempotence, recovery from a crashed `up`, pods
surviving an API server restart, and no process left behind, not even a pod's grandchild that left its
process group and ignores SIGTERM."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbkube_testenv import procs
from nbkube_testenv.cluster import HACK_DIR, LocalCluster, find_assets
from nbkube_testenv.nodeagent import firewall
from nbkube_testenv.wait import wait_for

pytestmark = pytest.mark.cluster

DENY_EGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: default}
spec: {podSelector: {}, policyTypes: [Egress]}
"""


def _iptables_save() -> str:
    return "".join(
        subprocess.run([tool, "-t", "filter"], capture_output=True, text=True, check=True).stdout
        for tool in ("iptables-save", "ip6tables-save")
    )


STUBBORN_POD = """
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: none
    command:
    - python
    - -c
    - |
      import signal, subprocess, sys, time
      code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
      child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
      print("child", child.pid, flush=True)
      time.sleep(3600)
"""


def recorded(state_file: Path) -> dict[str, tuple[int, int]]:
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return {p["name"]: (p["pid"], p["start_time"]) for p in state["processes"]}


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: concurrent sessions of the same user prune old basetemps.
    directory = Path(tempfile.mkdtemp(prefix="nbkube-lifecycle-"))
    yield directory
    LocalCluster(directory).down(quiet=True)
    shutil.rmtree(directory, ignore_errors=True)


def test_up_recovers_from_a_crashed_up_and_down_leaves_no_process_behind(cluster_dir: Path) -> None:
    assets = find_assets()
    directory = cluster_dir
    env = dict(os.environ, KUBEBUILDER_ASSETS=str(assets), PYTHONPATH=str(HACK_DIR))
    crashing = subprocess.Popen(
        [sys.executable, "-m", "nbkube_testenv.cluster", "up", "--dir", str(directory)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: "kube-apiserver" in recorded(directory / "state.json"), "up to start kube-apiserver")
    finally:
        crashing.kill()
        crashing.wait()
    half_started = recorded(directory / "state.json")
    assert all(procs.is_same(pid, started) for pid, started in half_started.values())

    cluster = LocalCluster(directory, assets)
    info = cluster.up(quiet=True)
    assert not any(procs.is_same(pid, started) for pid, started in half_started.values())
    assert cluster.up(quiet=True).pids == info.pids

    kubectl = [str(info.kubectl), f"--kubeconfig={info.kubeconfig}", "--namespace=default"]

    def run(*args: str) -> None:
        subprocess.run([*kubectl, *args], check=True, capture_output=True, timeout=180)

    # The node agent's pod watch survives an API server restart (reconnect, relist).
    run("run", "before", "--image=none", "--command", "--", "sleep", "3600")
    run("wait", "--for=condition=Ready", "pod/before", "--timeout=120s")
    restarted = datetime.datetime.now(datetime.UTC)
    cluster.restart_component("kube-apiserver")

    def lease_renewed() -> bool:
        done = subprocess.run(
            [*kubectl, "get", "lease", info.node_name, "-n=kube-node-lease", "-o=jsonpath={.spec.renewTime}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode == 0 and datetime.datetime.fromisoformat(done.stdout) > restarted

    wait_for(lease_renewed, "the node agent to renew its Lease after the API server restart")
    # A pod an egress policy selects gets its chains (and every pod its cgroup): all go with `down`.
    subprocess.run([*kubectl, "apply", "-f", "-"], input=DENY_EGRESS, text=True, check=True, timeout=60)
    run("run", "after", "--image=none", "--command", "--", "sleep", "3600")
    run("wait", "--for=condition=Ready", "pod/after", "--timeout=120s")
    prefix = firewall.chain_prefix(firewall.cluster_id(directory))
    assert prefix in _iptables_save()
    run("delete", "pod", "before", "--timeout=120s")
    subprocess.run([*kubectl, "apply", "-f", "-"], input=STUBBORN_POD, text=True, check=True, timeout=60)
    log = info.container_log("default", "stubborn", "main")
    line = wait_for(lambda: log.exists() and log.read_text().strip(), "the pod to start its child")
    grandchild = int(line.split()[-1])
    assert grandchild in procs.marked_processes(str(directory))
    component_pids = list(info.pids.values())
    assert "Traceback" not in (directory / "logs" / "nodeagent.log").read_text()

    assert cluster.down(grace=5, quiet=True) >= len(component_pids)
    assert procs.marked_processes(str(directory)) == []
    assert prefix not in _iptables_save()
    cgroup2 = firewall.cgroup2_root()
    assert cgroup2 is not None and not (cgroup2 / "nbkube" / firewall.cluster_id(directory)).exists()
    # Exited processes may linger as zombies until their (re)parent reaps them; they run nothing.
    assert procs.start_time(grandchild) is None
    assert [pid for pid in component_pids if procs.start_time(pid) is not None] == []
    assert not cluster.is_running()
    assert cluster.down(quiet=True) == 0
