"""Plumbing for bench_operator.py and bench_sessions.py: a private local cluster with the operator,
manifests, a watch that timestamps every write to NotebookRuns (or NotebookSessions), metric parsing and
the operator's memory."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "hack", REPO / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from nbkube_testenv import operator_process  # noqa: E402
from nbkube_testenv.cluster import ClusterInfo, LocalCluster  # noqa: E402
from nbkube_testenv.rest import ApiError, Rest, TransportError  # noqa: E402

GROUP_PATH = "/apis/nbkube.io/v1alpha1"
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def runs_path(namespace: str, name: str | None = None) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/notebookruns" + (f"/{name}" if name else "")


def environments_path(namespace: str, name: str | None = None) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/notebookenvironments" + (f"/{name}" if name else "")


def sessions_path(namespace: str, name: str | None = None) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/notebooksessions" + (f"/{name}" if name else "")


PLURALS = {
    "NotebookRun": "notebookruns",
    "NotebookEnvironment": "notebookenvironments",
    "NotebookSession": "notebooksessions",
}


def environment(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookEnvironment",
        "metadata": {"name": name},
        "spec": {"image": "nbkube/kernel-python:dev", **spec},
    }


def notebook_run(name: str, env: str, cells: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {"name": name},
        "spec": {
            "environmentRef": {"name": env},
            "notebook": {"cells": [{"source": c} for c in cells]},
            **spec,
        },
    }


def parse_metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of a Prometheus text-format metric's samples whose labels include `labels`."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(?P<labels>[^}}]*)\}})?\s+(?P<value>\S+)$")
    for line in text.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group("value"))
    return total


def rss_mib(pid: int) -> tuple[float, float]:
    """(RSS of the process, RSS of the process and all its descendants) in MiB."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    children = 0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            children += child.memory_info().rss
    return own / 2**20, (own + children) / 2**20


def retrying(call: Callable[[], Any], timeout: float = 60) -> Any:
    """Retries while the API server says to come back (a fresh CRD's storage initializing: 429)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ApiError as e:
            if e.status != 429 or time.monotonic() > deadline:
                raise
        except TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@dataclass
class RunRecord:
    """What the watch saw of one NotebookRun: when each state first appeared, how many writes it got."""

    name: str
    created_seen: float
    writes: int = 0  # MODIFIED events: every write after creation (status patches, finalizers, ...)
    states: dict[str, float] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str | None:
        return (self.last.get("status") or {}).get("state")

    @property
    def terminal_at(self) -> float | None:
        return next((self.states[s] for s in TERMINAL if s in self.states), None)


class RunWatch:
    """A background watch of the NotebookRuns (or another plural of nbkube.io) of one namespace,
    timestamping each event on arrival."""

    def __init__(self, rest: Rest, namespace: str, plural: str = "notebookruns") -> None:
        self.rest = rest
        self.namespace = namespace
        self.path = f"{GROUP_PATH}/namespaces/{namespace}/{plural}"
        self.runs: dict[str, RunRecord] = {}
        self.events = Counter[str]()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        listing = retrying(lambda: rest.get(self.path))
        self._rv = listing["metadata"]["resourceVersion"]
        for obj in listing["items"]:
            self._record("ADDED", obj, time.time())
        self._thread = threading.Thread(target=self._loop, name=f"watch-{namespace}", daemon=True)
        self._thread.start()

    def _record(self, kind: str, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        with self._cond:
            self.events[kind] += 1
            rec = self.runs.get(name)
            if rec is None:
                rec = self.runs[name] = RunRecord(name, now)
            elif kind == "MODIFIED":
                rec.writes += 1
            rec.last = obj
            state = (obj.get("status") or {}).get("state")
            if state and state not in rec.states:
                rec.states[state] = now
            self._cond.notify_all()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self.rest.watch(self.path, self._rv, timeout_seconds=300):
                    now = time.time()
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self._rv = rv
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._record(event["type"], obj, now)
                    if self._stop.is_set():
                        return
            except ApiError as e:
                if e.status == 410:  # too old: start again from a fresh list (events in between are lost)
                    self._rv = self.rest.get(self.path)["metadata"]["resourceVersion"]
                else:
                    time.sleep(0.5)
            except Exception:  # a broken stream (the server restarting, the cluster going down): watch again
                time.sleep(0.5)

    def wait(self, check: Callable[[dict[str, RunRecord]], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.runs):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                self._cond.wait(min(left, 1.0))

    def wait_terminal(self, names: Iterable[str], timeout: float) -> list[RunRecord]:
        names = list(names)

        def done(runs: dict[str, RunRecord]) -> bool:
            return all(n in runs and runs[n].terminal_at is not None for n in names)

        self.wait(done, f"{len(names)} run(s) in {self.namespace} to finish", timeout)
        with self._cond:
            return [self.runs[n] for n in names]

    def stop(self) -> None:
        self._stop.set()


class Bench:
    """A private cluster (in a temp dir), the operator under its ServiceAccount, and an admin REST client."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nbkube-bench-operator-"))
        self.cluster = LocalCluster(self.dir / "cluster")
        self.info: ClusterInfo | None = None
        self.operator: operator_process.OperatorProcess | None = None
        self.rest: Rest | None = None
        self.watches: list[RunWatch] = []
        self.keep_dir = False

    def up(self) -> None:
        self.info = self.cluster.up(quiet=True)
        operator_process.install(self.info)
        self.rest = Rest(self.info.kubeconfig)
        self.start_operator()

    def start_operator(self) -> None:
        assert self.info is not None
        self.operator = operator_process.OperatorProcess(self.info, self.dir / "operator")
        self.operator.start()

    def down(self) -> None:
        for watch in self.watches:
            watch.stop()
        if self.operator is not None:
            self.operator.kill()  # runs still waiting would hold a graceful stop for its full timeout
        self.cluster.down(quiet=True)
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # API helpers

    @property
    def api(self) -> Rest:
        assert self.rest is not None
        return self.rest

    def namespace(self, name: str) -> RunWatch:
        self.api.post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        return self.watch(name)

    def watch(self, namespace: str, plural: str = "notebookruns") -> RunWatch:
        watch = RunWatch(self.api, namespace, plural)
        self.watches.append(watch)
        return watch

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        plural = PLURALS[body["kind"]]
        return retrying(lambda: self.api.post(f"{GROUP_PATH}/namespaces/{namespace}/{plural}", body))

    def create_many(self, namespace: str, bodies: list[dict[str, Any]], threads: int = 8) -> None:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(lambda b: self.create(namespace, b), bodies):
                pass

    def environment_status(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.get(environments_path(namespace, name)).get("status") or {}

    def wait_environment_warm(self, namespace: str, name: str, warm: int, timeout: float = 180) -> None:
        """Ready, and the operator reports `warm` started kernels in its pool."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.environment_status(namespace, name)
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
            if ready and (status.get("kernels") or {}).get("warm", 0) >= warm:
                return
            time.sleep(0.25)
        raise TimeoutError(f"environment {namespace}/{name} not warm after {timeout}s: {status}")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        assert self.operator is not None
        return parse_metric(self.operator.metrics(), name, labels)

    def operator_rss(self) -> tuple[float, float]:
        assert self.operator is not None and self.operator.process is not None
        return rss_mib(self.operator.process.pid)

    def control_plane_pids(self) -> dict[str, int]:
        assert self.info is not None
        pids = {k: v for k, v in self.info.pids.items() if k in ("kube-apiserver", "etcd")}
        return {"operator": self.operator_pid(), **pids}

    def operator_pid(self) -> int:
        assert self.operator is not None and self.operator.process is not None
        return self.operator.process.pid


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU seconds so far of each named process (its reaped children included)."""
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system + t.children_user + t.children_system
    return out


class LatencyProbe:
    """GETs a small object every `interval` from a thread: the API server's latency as clients see it."""

    def __init__(self, rest: Rest, path: str, interval: float = 0.5) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                started = time.perf_counter()
                with contextlib.suppress(Exception):
                    rest.get(path)
                    self.samples.append(time.perf_counter() - started)
                self._stop.wait(interval)

        self._thread = threading.Thread(target=loop, name="latency-probe", daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(10)
        return sorted(self.samples)


@contextlib.contextmanager
def profiled(pid: int, name: str) -> Iterator[None]:
    """With BENCH_PROFILE_DIR set, py-spy (BENCH_PYSPY, default `py-spy`) samples the operator meanwhile
    and leaves collapsed stacks in <dir>/<name>.txt."""
    out_dir = os.environ.get("BENCH_PROFILE_DIR")
    if not out_dir:
        yield
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    argv = [os.environ.get("BENCH_PYSPY", "py-spy"), "record", "--pid", str(pid), "--format", "raw"]
    argv += ["--rate", "50", "--nonblocking", "-o", str(Path(out_dir) / f"{name}.txt")]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def bench_cluster() -> Iterator[Bench]:
    """A private cluster and operator, taken down however the bench ends (SIGTERM included: its
    processes run in their own sessions and would outlive the bench)."""
    bench = Bench()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        bench.up()
        yield bench
    except BaseException:
        if bench.operator is not None:
            print(f"--- operator log tail ---\n{bench.operator.log_tail(40)}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nothing may cut the cleanup short
        bench.down()
        signal.signal(signal.SIGTERM, previous)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
