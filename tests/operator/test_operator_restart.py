"""The operator dies mid-run (SIGKILL) and the next one picks the run up where it was."""

import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import nbformat
import pytest
from helpers import (
    events,
    gateway_api,
    gateway_pods,
    get,
    leave_kernel_busy,
    run,
    wait_for,
    wait_run_finished,
)
from nbkube_testenv.nodeagent.addresses import OUTSIDE_IP


class Tally:
    """What the cells report, in the order they report it. A report is one connection to a socket of
    the test carrying one line, answered with a byte once it is recorded, so a cell that has finished
    has been counted. (Pods are local processes sharing the host's network, not always its /tmp: the
    node agent mounts a pod's own /tmp when the cluster's directory is elsewhere.)"""

    def __init__(self) -> None:
        self._server = socket.create_server((OUTSIDE_IP, 0))
        self.port = self._server.getsockname()[1]
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="tally", daemon=True)
        self._thread.start()

    def report(self, line: str) -> str:
        """Source for a cell that reports `line` and returns once it is recorded."""
        return (
            f"import socket as _tally\nwith _tally.create_connection(({OUTSIDE_IP!r}, {self.port})) as _t:\n"
            f"    _t.sendall({line!r}.encode())\n    _t.shutdown(_tally.SHUT_WR)\n    _t.recv(1)"
        )

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:  # closed
                return
            with connection:
                data = b""
                while chunk := connection.recv(4096):
                    data += chunk
                with self._lock:
                    self._lines.append(data.decode())
                connection.sendall(b"k")

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        self._server.close()
        self._thread.join(timeout=10)


@pytest.fixture
def tally() -> Iterator[Tally]:
    t = Tally()
    yield t
    t.close()


def test_a_run_survives_the_operator_being_killed_mid_cell_with_no_cell_run_twice(
    kubectl, env_namespace, operator, tally
):
    cells = [
        tally.report("cell 0"),
        tally.report("cell 1"),
        "import time\nfor i in range(10):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
        + tally.report("cell 2"),
        tally.report("cell 3") + "\nprint('done')",
    ]
    kubectl.apply(run("survivor", cells), namespace=env_namespace)

    def long_cell_running():
        obj = get(kubectl, "nbrun", "survivor", env_namespace)
        cells = ((obj or {}).get("status") or {}).get("cells", [])
        return len(cells) == 4 and cells[2]["state"] == "running"

    wait_for("the long cell to run", long_cell_running, 60, 0.1)
    time.sleep(0.8)
    operator.kill()
    time.sleep(2.0)  # the kernel keeps printing while no operator listens
    operator.start()

    obj = wait_run_finished(kubectl, env_namespace, "survivor", 120)
    status = obj["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert status["attempt"] == 1
    assert tally.lines == ["cell 0", "cell 1", "cell 2", "cell 3"]
    assert "Reattached" in [e["reason"] for e in events(kubectl, env_namespace, "survivor")]

    result = status["result"]
    nb = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
    ticks = "".join(o.get("text", "") for o in nb.cells[2].outputs if o["output_type"] == "stream")
    assert ticks.splitlines() == [f"tick {i}" for i in range(10)]
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4]


def test_what_the_killed_operator_spilled_for_earlier_cells_is_committed_with_the_result(
    kubectl, env_namespace, operator, tmp_path
):
    go = tmp_path / "go"
    cells = [
        "print('x' * 6_000_000)",  # past the cell cap: spilled by the first operator
        f"import os, time\nwhile not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\nprint('after')",
    ]
    kubectl.apply(run("spiller", cells), namespace=env_namespace)

    def second_cell_running():
        obj = get(kubectl, "nbrun", "spiller", env_namespace)
        cells = ((obj or {}).get("status") or {}).get("cells", [])
        return len(cells) == 2 and cells[0]["state"] == "succeeded" and cells[1]["state"] == "running"

    wait_for("the first cell to finish and the second to run", second_cell_running, 120, 0.1)
    operator.kill()
    operator.start()
    wait_for(
        "the run to reattach",
        lambda: "Reattached" in [e["reason"] for e in events(kubectl, env_namespace, "spiller")],
        60,
    )
    go.write_text("")

    status = wait_run_finished(kubectl, env_namespace, "spiller", 120)["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert status["attempt"] == 1
    result = status["result"]
    spill_path = result["path"].rsplit("/", 1)[0] + "/outputs/outputs.jsonl"
    spilled = [json.loads(line) for line in operator.result(spill_path, result["commit"]).splitlines()]
    assert {e["index"] for e in spilled} == {0}
    assert "".join(e["output"].get("text", "") for e in spilled) == "x" * 6_000_000 + "\n"


JANITOR_EVERY_SECOND = {
    "NBKUBE_JANITOR_FIRST_SWEEP_SECONDS": "1",
    "NBKUBE_JANITOR_INTERVAL_SECONDS": "1",
    "NBKUBE_ORPHAN_KERNEL_IDLE_SECONDS": "2",
    "NBKUBE_BUSY_ORPHAN_KERNEL_SECONDS": "3",
    "NBKUBE_JOURNAL_GRACE_SECONDS": "1",
    "NBKUBE_UNKNOWN_JOURNAL_SECONDS": "5",
}


def test_what_a_killed_operator_left_behind_is_reclaimed_and_live_runs_keep_their_kernels(
    kubectl, env_namespace, operator
):
    pod = gateway_pods(kubectl, env_namespace)[0]
    # Left behind: kernels no run holds and nobody is connected to (one idle, one running a cell that
    # never ends), and the journal (with spilled outputs) of a run deleted while no operator ran.
    leaked = gateway_api(kubectl, env_namespace, pod, "/api/kernels", {"name": "python3"})["id"]
    leaked_busy = leave_kernel_busy(kubectl, env_namespace, pod)
    journal_dir = operator.data_dir / "journal"
    journal_dir.mkdir(parents=True, exist_ok=True)
    stale = journal_dir / "deleted-run-uid.jsonl"
    stale.write_text('{"attempt":1,"index":0,"msgId":"m"}\n')
    stale_spill = journal_dir / "deleted-run-uid.spill"
    stale_spill.mkdir(exist_ok=True)
    (stale_spill / "outputs.jsonl").write_text("{}\n")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    os.utime(stale_spill, (an_hour_ago, an_hour_ago))

    operator.kill()
    operator.extra_env.update(JANITOR_EVERY_SECOND)
    operator.start()
    try:
        # Swept every second while this run's kernel works for 6 s: it must keep it (attempt 1).
        kubectl.apply(
            run("keeps-its-kernel", ["import time\ntime.sleep(6)\n'slept'"]), namespace=env_namespace
        )

        def leaked_kernels_gone():
            kernels = {k["id"] for k in gateway_api(kubectl, env_namespace, pod, "/api/kernels")}
            return not {leaked, leaked_busy} & kernels

        wait_for("the leaked kernels to be shut down", leaked_kernels_gone, 60)
        wait_for(
            "the deleted run's journal to be removed",
            lambda: not stale.exists() and not stale_spill.exists(),
            60,
        )

        obj = wait_run_finished(kubectl, env_namespace, "keeps-its-kernel", 120)
        status = obj["status"]
        assert status["state"] == "Succeeded", json.dumps(status, indent=1)
        assert status["attempt"] == 1
        log_tail = operator.log_tail(400)
        assert "janitor: shut down kernel " + leaked in log_tail
        assert "janitor: shut down kernel " + leaked_busy in log_tail
    finally:
        operator.kill()
        for name in JANITOR_EVERY_SECOND:
            operator.extra_env.pop(name, None)
        operator.start()


def test_a_cell_sent_ahead_is_resumed_and_the_replied_cell_before_it_keeps_its_outputs(
    kubectl, env_namespace, operator, tally
):
    """The crash the engine's pipelining opens: the next cell was started (journaled and sent) while the
    cell before it had replied but was not recorded yet. Made on purpose by removing that record from
    the journal of a killed operator."""
    cells = [
        tally.report("cell 0") + "\nprint('zero')",
        "import time\ntime.sleep(4)\n" + tally.report("cell 1") + "\nprint('one')",
    ]
    kubectl.apply(run("sent-ahead", cells), namespace=env_namespace)

    def second_cell_running():
        cells = ((get(kubectl, "nbrun", "sent-ahead", env_namespace) or {}).get("status") or {}).get(
            "cells", []
        )
        return len(cells) == 2 and cells[1]["state"] == "running"

    wait_for("the second cell to run", second_cell_running, 60, 0.1)
    uid = get(kubectl, "nbrun", "sent-ahead", env_namespace)["metadata"]["uid"]
    operator.kill()
    journal = operator.data_dir / "journal" / f"{uid}.jsonl"
    lines = journal.read_text().splitlines()
    recorded = [line for line in lines if '"cell":' in line and '"index":0,' in line]
    assert len(recorded) == 1
    journal.write_text("".join(line + "\n" for line in lines if line not in recorded))
    operator.start()

    obj = wait_run_finished(kubectl, env_namespace, "sent-ahead", 120)
    status = obj["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert status["attempt"] == 1
    assert tally.lines == ["cell 0", "cell 1"]
    result = status["result"]
    nb = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
    texts = ["".join(o.get("text", "") for o in c.outputs if o["output_type"] == "stream") for c in nb.cells]
    assert texts == ["zero\n", "one\n"]
