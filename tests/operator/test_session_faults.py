"""A session meets faults and keeps its word: a kernel that dies mid-execution (KernelDied, the session
says so, a restart brings it back), two writers at once (serialised, a stale head refused, nothing lost),
100 MB printed by one execution (truncated in the notebook, whole in its artifact, the operator's
memory bounded), and the operator killed mid-execution (reattached: the cell completes, nothing lost,
nothing run twice)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import nbformat
import psutil
import pytest
from helpers import events, gateway_api, get, wait_for
from nbkube_testenv.userapi import ApiUser
from session_helpers import execute, session, wait_ready


@pytest.fixture(scope="module")
def admin(cluster) -> ApiUser:  # type: ignore[no-untyped-def]
    return ApiUser.admin(cluster)


def test_a_kernel_that_dies_mid_execution_is_said_dead_until_a_restart_brings_it_back(
    kubectl: Any, env_namespace: str, admin: ApiUser
) -> None:
    ns = env_namespace
    kubectl.apply(session("mortal", ["import os\nos.kill(os.getpid(), 9)", "print('after')"]), namespace=ns)
    wait_ready(kubectl, ns, "mortal")
    _, result = execute(admin, ns, "mortal", cellIds=["c0"])
    assert result["cells"][0]["state"] == "kernelDied", result
    assert result["kernelState"] == "dead"
    assert get(kubectl, "nbsess", "mortal", ns)["status"]["kernel"]["state"] == "dead" or wait_for(
        "the status to say the kernel is dead",
        lambda: get(kubectl, "nbsess", "mortal", ns)["status"]["kernel"]["state"] == "dead",
        30,
    )
    status, refused = admin.session(ns, "mortal", "exec", {"cellIds": ["c1"]})
    assert status == 409 and "restart" in json.dumps(refused), refused
    status, restarted = admin.session(ns, "mortal", "restart", {})
    assert status == 200 and restarted["kernelState"] == "idle", restarted
    _, result = execute(admin, ns, "mortal", cellIds=["c1"])
    assert result["cells"][0]["outputs"][0]["text"] == "after\n"


def test_a_kernel_its_gateway_no_longer_has_is_replaced_by_a_fresh_one_on_restart(
    kubectl: Any, env_namespace: str, admin: ApiUser
) -> None:
    """The gateway removes a kernel whose restarter gave up (five deaths in a row) or that was deleted: a
    restart then takes a fresh kernel from the environment, set up as the first was, instead of failing."""
    ns = env_namespace
    kubectl.apply(session("orphan", ["x = 41", "print(x + 1)"]), namespace=ns)
    wait_ready(kubectl, ns, "orphan")
    _, result = execute(admin, ns, "orphan", cellIds=["c0", "c1"])
    assert result["cells"][1]["outputs"][0]["text"] == "42\n", result
    gone = get(kubectl, "nbsess", "orphan", ns)["status"]["kernel"]
    gateway_api(kubectl, ns, gone["pod"], f"/api/kernels/{gone['kernelId']}", method="DELETE")
    status, restarted = admin.session(ns, "orphan", "restart", {})
    assert status == 200 and restarted["kernelState"] == "idle", restarted
    assert "fresh kernel" in restarted["message"], restarted
    kernel = get(kubectl, "nbsess", "orphan", ns)["status"]["kernel"]
    assert kernel["kernelId"] != gone["kernelId"] and kernel["state"] == "idle", kernel
    _, result = execute(admin, ns, "orphan", cellIds=["c1"])  # a fresh kernel: x is gone
    assert result["cells"][0]["state"] == "failed" and "NameError" in json.dumps(result), result
    _, result = execute(admin, ns, "orphan", cellIds=["c0", "c1"])
    assert result["cells"][1]["outputs"][0]["text"] == "42\n", result
    warned = [e for e in events(kubectl, ns, "orphan") if e["reason"] == "KernelRestarted"]
    assert warned and gone["kernelId"][:8] in warned[-1]["message"], warned


def test_two_writers_at_once_are_serialised_and_a_stale_head_is_refused_with_nothing_lost(
    kubectl: Any, env_namespace: str, admin: ApiUser
) -> None:
    ns = env_namespace
    kubectl.apply(session("shared", ["base = 1"]), namespace=ns)
    wait_ready(kubectl, ns, "shared")
    head = admin.session(ns, "shared", "history")[1][0]["commit"]
    answers: dict[str, tuple[int, Any]] = {}
    go = threading.Barrier(4)

    def write(writer: str, body: dict[str, Any]) -> None:
        go.wait()
        answers[writer] = admin.session(ns, "shared", "edit", body)

    writers = {
        "free-1": {"action": "insert", "after": "c0", "cellId": "free1", "source": "a = 1"},
        "free-2": {"action": "insert", "after": "c0", "cellId": "free2", "source": "b = 2"},
        "guarded-1": {"action": "insert", "cellId": "g1", "source": "c = 3", "expectHead": head},
        "guarded-2": {"action": "insert", "cellId": "g2", "source": "d = 4", "expectHead": head},
    }
    threads = [threading.Thread(target=write, args=item) for item in writers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers["free-1"][0] == answers["free-2"][0] == 200, answers
    guarded = sorted(answers[w][0] for w in ("guarded-1", "guarded-2"))
    # Both name the head they read: at most the first of them to run finds it still there.
    assert guarded in ([200, 409], [409, 409]), answers
    _, nb = admin.session(ns, "shared", "notebook")
    ids = [c["id"] for c in nb["cells"]]
    assert {"c0", "free1", "free2"} <= set(ids)
    landed = [w for w in ("guarded-1", "guarded-2") if answers[w][0] == 200]
    assert {writers[w]["cellId"] for w in landed} <= set(ids)
    _, history = admin.session(ns, "shared", "history")
    assert len(history) == 1 + 2 + len(landed)  # the start, then one commit per edit that landed


def test_100_mb_from_one_execution_is_cut_in_the_notebook_and_whole_in_its_artifact(
    kubectl: Any, env_namespace: str, admin: ApiUser, operator: Any, tmp_path: Any
) -> None:
    ns = env_namespace
    flood = "chunk = 'y' * (1 << 20)\nfor i in range(100):\n    print(chunk)\nprint('end')"
    kubectl.apply(session("flood", [flood]), namespace=ns)
    wait_ready(kubectl, ns, "flood")
    process = psutil.Process(operator.process.pid)
    before = process.memory_info().rss
    with PeakRss(process) as peak:
        _, result = execute(admin, ns, "flood")
    assert peak.rss - before < 200 * 1024 * 1024, (before, peak.rss)
    cell = result["cells"][0]
    assert cell["state"] == "succeeded" and cell["truncated"], {
        k: v for k, v in cell.items() if k != "outputs"
    }
    shown = sum(len(o.get("text", "")) for o in cell["outputs"])
    assert shown < 8 * 1024 * 1024
    artifact = result["artifact"]
    clone = admin.clone(ns, tmp_path / "repo")
    assert clone.returncode == 0, clone.stderr
    branch = get(kubectl, "nbsess", "flood", ns)["status"]["branch"]
    admin.git("-C", str(tmp_path / "repo"), "checkout", "-q", f"origin/{branch}")
    lines = (tmp_path / "repo" / artifact).read_text().splitlines()
    outputs = [json.loads(line)["output"] for line in lines]  # the engine's spill: one output a line
    texts = "".join("".join(o["text"]) for o in outputs if "text" in o)
    assert texts.count("y" * (1 << 20)) == 100 and texts.endswith("end\n")


class PeakRss:
    """The highest resident size of `process` while the block runs (sampled every 20 ms)."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.rss = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.rss = max(self.rss, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.rss = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.rss = max(self.rss, self.process.memory_info().rss)


def test_an_operator_killed_mid_execution_reattaches_and_the_cell_completes_once(
    kubectl: Any, env_namespace: str, admin: ApiUser, operator: Any
) -> None:
    ns = env_namespace
    slow = (
        "import time\nruns = globals().get('runs', 0) + 1\n"
        "for i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(0.5)"
    )
    kubectl.apply(session("steady", [slow, "print('runs', runs)"]), namespace=ns)
    wait_ready(kubectl, ns, "steady")
    started = threading.Event()

    def run_it() -> None:
        try:
            for event in admin.session_execute(ns, "steady", {"cellIds": ["c0"]}):
                if event["type"] == "output" and "tick 1" in event["output"].get("text", ""):
                    started.set()
        except Exception:
            pass  # the operator died under this caller: its stream breaks

    caller = threading.Thread(target=run_it, daemon=True)
    caller.start()
    assert started.wait(60)
    operator.kill()
    time.sleep(1.5)  # the kernel goes on printing while no operator listens
    operator.start()
    caller.join(30)

    def reattached() -> bool:
        status = (get(kubectl, "nbsess", "steady", ns) or {}).get("status") or {}
        return status.get("state") == "Ready" and status.get("operations", 0) >= 1

    wait_for("the session to be Ready again with the execution committed", reattached, 120)
    _, nb = admin.session(ns, "steady", "notebook")
    cell = nbformat.reads(json.dumps(nb), as_version=4).cells[0]
    ticks = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    assert ticks.splitlines() == [f"tick {i}" for i in range(8)]
    _, result = execute(admin, ns, "steady", cellIds=["c1"])
    assert result["cells"][0]["outputs"][0]["text"] == "runs 1\n"  # the cell ran once
