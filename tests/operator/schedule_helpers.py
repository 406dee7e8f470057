"""Helpers of the NotebookSchedule tests: a latch for cells that must outlive their slot, a recorder of
every version of a namespace's runs (from a watch, so nothing created and pruned between two looks is
missed), and schedule manifests."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from nbkube_testenv.nodeagent.addresses import OUTSIDE_IP
from nbkube_testenv.rest import Rest

SCHEDULE_LABEL = "nbkube.io/schedule"
SCHEDULED_TIME = "nbkube.io/scheduled-time"


class Latch:
    """Cells that wait until the test opens the latch: each connects to a socket of the test and waits
    for a byte; connections are held while the latch is closed, answered at once when it is open (so
    later runs of the same schedule go straight through)."""

    def __init__(self) -> None:
        self._server = socket.create_server((OUTSIDE_IP, 0))
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._open = False
        self._lock = threading.Lock()
        self.waiting = 0  # cells that have connected so far
        threading.Thread(target=self._serve, name="latch", daemon=True).start()

    @property
    def cell(self) -> str:
        return f"import socket\nsocket.create_connection(({OUTSIDE_IP!r}, {self.port})).recv(1)"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.waiting += 1
                if self._open:
                    _answer(connection)
                else:
                    self._held.append(connection)

    def open(self) -> None:
        with self._lock:
            self._open = True
            held, self._held = self._held, []
        for connection in held:
            _answer(connection)

    def close(self) -> None:
        self.open()
        self._server.close()


def _answer(connection: socket.socket) -> None:
    try:
        connection.sendall(b"g")
    except OSError:
        pass  # the cell was interrupted (a replaced run)
    connection.close()


class RunRecorder:
    """Every version of the namespace's scheduled runs, from one watch: `runs(schedule)` are the latest
    versions of the runs a schedule ever had (pruned ones included, marked deleted)."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.api = Rest(kubeconfig)
        self.path = f"/apis/nbkube.io/v1alpha1/namespaces/{namespace}/notebookruns"
        self._runs: dict[str, dict[str, Any]] = {}
        self._deleted: set[str] = set()
        self._lock = threading.Lock()
        self._stop = False
        since = self.api.get(self.path)["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._watch, args=(since,), name="runs", daemon=True)
        self._thread.start()

    def _watch(self, since: str) -> None:
        while not self._stop:
            try:
                for event in self.api.watch(f"{self.path}?labelSelector={SCHEDULE_LABEL}", since, 30):
                    obj = event["object"]
                    since = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self._lock:
                        if event["type"] == "DELETED":
                            self._deleted.add(name)
                        else:
                            self._runs[name] = obj
            except Exception:  # a dropped watch: go on from the last version seen
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop = True

    def runs(self, schedule: str) -> list[dict[str, Any]]:
        """The schedule's runs in scheduled-time order."""
        with self._lock:
            found = [
                r for r in self._runs.values() if r["metadata"]["labels"].get(SCHEDULE_LABEL) == schedule
            ]
        return sorted(found, key=lambda r: (scheduled_time(r), r["metadata"]["name"]))

    def deleted(self, name: str) -> bool:
        with self._lock:
            return name in self._deleted

    def finished(self, schedule: str, state: str = "Succeeded") -> list[dict[str, Any]]:
        return [r for r in self.runs(schedule) if (r.get("status") or {}).get("state") == state]


def scheduled_time(run: dict[str, Any]) -> datetime:
    text = run["metadata"]["annotations"][SCHEDULED_TIME]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def creation_time(obj: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def now() -> datetime:
    return datetime.now(UTC)


def schedule(name: str, cells: list[Any], every: int = 2, env: str = "py", **spec: Any) -> dict[str, Any]:
    """A NotebookSchedule firing every `every` seconds (the test-only seconds field)."""
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": f"*/{every} * * * * *",
            "runTemplate": {
                "spec": {
                    "environmentRef": {"name": env},
                    "notebook": {"cells": [c if isinstance(c, dict) else {"source": c} for c in cells]},
                }
            },
            **spec,
        },
    }
