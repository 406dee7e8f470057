"""Measures the local control plane: cold build time of the binaries (as recorded by the build), cluster
start with a warm cache, RSS of the control-plane processes, and the time from a pod's creation to its
process serving HTTP at the pod IP.

    PYTHONPATH=hack .venv/bin/python -m nbkube_testenv.measure [--pods 5] [--starts 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from nbkube_testenv.cluster import ClusterInfo, LocalCluster, find_assets
from nbkube_testenv.rest import Rest

PY = Path(sys.executable).name


def rss_mib(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.Error:
        return float("nan")


def pod_to_serving(api: Rest, namespace: str, name: str) -> tuple[float, float]:
    """Seconds from the create call to the first HTTP 200 at the pod IP, and to the Ready condition."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "web",
                    "image": "none",
                    "command": [PY, "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    path = f"/api/v1/namespaces/{namespace}/pods"
    t0 = time.monotonic()
    api.post(path, body)
    serving = ready = 0.0
    ip = ""
    while not (serving and ready) and time.monotonic() - t0 < 120:
        if not ip or not ready:
            pod = api.get(f"{path}/{name}")
            ip = pod.get("status", {}).get("podIP", "")
            conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True" and not ready:
                ready = time.monotonic() - t0
        if ip and not serving:
            try:
                with urllib.request.urlopen(f"http://{ip}:8080/", timeout=1) as resp:
                    if resp.status == 200:
                        serving = time.monotonic() - t0
            except OSError:
                pass
        time.sleep(0.02)
    api.delete(f"{path}/{name}")
    return serving, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5)
    parser.add_argument("--starts", type=int, default=2)
    args = parser.parse_args()

    assets = find_assets()
    complete = assets / ".complete"
    build = complete.read_text().strip() if complete.exists() else "from KUBEBUILDER_ASSETS (not built here)"
    print(f"binaries: {assets}\ncold build: {build}")

    with tempfile.TemporaryDirectory(prefix="nbkube-measure-") as tmp:
        starts = []
        info: ClusterInfo | None = None
        cluster = LocalCluster(Path(tmp) / "cluster", assets)
        for i in range(args.starts):
            t0 = time.monotonic()
            info = cluster.up(quiet=True)
            starts.append(time.monotonic() - t0)
            if i < args.starts - 1:
                cluster.down(quiet=True)
        assert info is not None
        print(f"cluster start, warm cache (to Ready node + default ServiceAccount): {_fmt(starts)}")
        time.sleep(5)  # let the controllers finish their initial sync before reading memory
        total = 0.0
        for name, pid in info.pids.items():
            mib = rss_mib(pid)
            total += mib
            print(f"  RSS {name:<24} {mib:7.1f} MiB")
        print(f"  RSS {'control plane + agent':<24} {total:7.1f} MiB")

        api = Rest(info.kubeconfig)
        serving, ready = [], []
        for i in range(args.pods):
            s, r = pod_to_serving(api, "default", f"measure-{i}")
            serving.append(s)
            ready.append(r)
        print(f"pod create -> process serving HTTP at its pod IP: {_fmt(serving)}")
        print(f"pod create -> Ready condition (tcpSocket probe, period 1s): {_fmt(ready)}")
        t0 = time.monotonic()
        stopped = cluster.down(quiet=True)
        print(f"cluster down: {time.monotonic() - t0:.2f}s ({stopped} processes)")


def _fmt(values: list[float]) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"median {med:.2f}s (min {lo:.2f}s, max {hi:.2f}s, n={len(values)})"


if __name__ == "__main__":
    main()
