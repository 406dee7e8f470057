"""`nbkube session ...` against the local control plane with the operator: a session's whole life from
the command line (create from a local notebook, insert, exec with outputs streaming, state, interrupt,
log, show, fork, git log of the branch through `nbkube clone`, delete), with exit codes; and the
mistakes and refusals a user meets, each a one-line error."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import nbformat
from cli_harness import Cli
from nbkube_testenv.wait import wait_for

HEAD = r"[0-9a-f]{12}"


def notebook(path: Path, *cells: nbformat.NotebookNode) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    nbformat.write(nb, path)
    return path


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbkube: error: "), done.stderr
    return lines[0]


def get_session(kubectl: Any, namespace: str, name: str) -> dict[str, Any] | None:
    done = kubectl("get", "nbsess", name, "-o", "json", namespace=namespace, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


class Lines:
    """A running command's stdout, line by line as it writes them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def until(self, wanted: str, timeout: float = 120) -> None:
        while True:
            line = self._lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"the output ended before {wanted!r}: {self.seen}")
            self.seen.append(line)
            if line == wanted:
                return


def test_a_session_from_the_cli_create_insert_exec_state_interrupt_log_fork_delete(
    cli: Cli, kubectl: Any, tmp_path: Path
) -> None:
    ns = cli.namespace
    path = notebook(
        tmp_path / "explore.ipynb",
        nbformat.v4.new_code_cell("x = 1", id="params", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(x + 1)", id="show"),
    )

    # create: the notebook uploaded (a ConfigMap the session owns), parameters injected, Ready
    out = ok(cli("session", "create", "explore", "--env", "py", "--from-file", str(path), "-p", "x=20"))
    assert out.splitlines()[0] == f"notebooksession {ns}/explore created"
    ready = re.search(
        rf"^explore Ready: kernel idle, branch (sessions/explore/\S+), head ({HEAD})$", out, re.M
    )
    assert ready, out
    branch = ready.group(1)
    session = get_session(kubectl, ns, "explore")
    assert session is not None and session["spec"]["parameters"] == {"x": 20}
    owners = kubectl.json("get", "configmap", "explore", namespace=ns)["metadata"]["ownerReferences"]
    assert [(o["kind"], o["uid"]) for o in owners] == [("NotebookSession", session["metadata"]["uid"])]

    table = ok(cli("session", "list")).splitlines()
    assert table[0].split() == [
        "NAME",
        "ENV",
        "STATE",
        "REASON",
        "KERNEL",
        "OPS",
        "HEAD",
        "LAST-ACTIVITY",
        "AGE",
    ]
    row = next(line.split() for line in table if line.startswith("explore "))
    assert row[:6] == ["explore", "py", "Ready", "KernelReady", "idle", "0"]

    # insert appends by default; exec --all streams each cell's outputs under its header
    out = ok(cli("session", "edit", "explore", "insert", "--id", "dbl", "y = x * 2\nprint('y is', y)"))
    assert re.fullmatch(rf"insert code cell dbl after show; head {HEAD}\n", out), out
    out = ok(cli("session", "exec", "explore", "--all"))
    lines = out.splitlines()
    assert lines[lines.index("── cell show ──") + 1] == "21"
    assert lines[lines.index("── cell dbl ──") + 1] == "y is 40"
    done = re.fullmatch(rf"execute (\S+, )+dbl: succeeded \(4 of 4 cells, \d+ ms\); head ({HEAD})", lines[-1])
    assert done, lines[-1]
    executed_head = done.group(2)

    # state: the kernel's variables, read without a cell
    out = ok(cli("session", "state", "explore"))
    assert re.match(r"^kernel idle, execution count 4$", out.splitlines()[0]), out
    variables = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert variables["x"] == ["int", "-", "20"] and variables["y"] == ["int", "-", "40"]

    # a long cell's output arrives while it runs; interrupt ends it (exit 1, the cell cancelled)
    runner = cli.start(
        "session", "exec", "explore", "--code", "import time\nprint('napping', flush=True)\ntime.sleep(600)"
    )
    try:
        Lines(runner).until("napping")
        out = ok(cli("session", "interrupt", "explore"))
        assert out == "explore: the running execution was interrupted\n"
        _, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 1, err
    assert re.search(r"^execute \S+: cancelled \(1 of 1 cells, \d+ ms\); head [0-9a-f]{12}$", err, re.M), err
    nap = re.search(r"^  cell (\S+) cancelled", err, re.M)
    assert nap, err

    # an edit naming a head that moved is refused; with the current head it goes through
    message = one_line_error(
        cli("session", "edit", "explore", "delete", nap.group(1), "--expect-head", executed_head)
    )
    assert "the session's head is" in message and f"not {executed_head}" in message
    ok(cli("session", "edit", "explore", "delete", nap.group(1)))

    # log: one commit per change, newest first; show: the notebook now and at an earlier commit
    log = ok(cli("session", "log", "explore")).splitlines()
    firsts = [line.split("  ", 2)[2] for line in log]
    assert firsts[0] == f"delete cell {nap.group(1)}"
    assert firsts[1].startswith(f"execute {nap.group(1)}: cancelled")
    assert firsts[2] == f"insert code cell {nap.group(1)} after dbl"
    assert firsts[3].startswith("execute ") and log[3].startswith(executed_head)
    assert firsts[4] == "insert code cell dbl after show"
    assert firsts[5] == "start session explore from ConfigMap explore key explore.ipynb"
    shown = ok(cli("session", "show", "explore"))
    assert "── 2 show code [3] ──\nprint(x + 1)\n┄┄ output ┄┄\n21\n" in shown, shown
    assert "time.sleep" not in shown
    before = ok(cli("session", "show", "explore", "--ref", log[4].split()[0]))
    assert "y = x * 2" in before and "┄┄ output ┄┄" not in before  # before the first execution
    saved = tmp_path / "explore-now.ipynb"
    ok(cli("session", "show", "explore", "-o", str(saved)))
    nbformat.validate(nbformat.read(saved, as_version=4))

    # fork at the commit of the first execution: its notebook and outputs, a branch of its own
    out = ok(cli("session", "fork", "explore", "branchy", "--at", executed_head))
    assert out.splitlines()[0] == f"notebooksession {ns}/branchy created from explore at {executed_head}"
    assert re.search(rf"^branchy Ready: kernel idle, branch sessions/branchy/\S+, head {HEAD}$", out, re.M), (
        out
    )
    forked = ok(cli("session", "show", "branchy"))
    assert "y is 40" in forked and "time.sleep" not in forked
    fork_log = ok(cli("session", "log", "branchy")).splitlines()
    assert (
        fork_log[0]
        .split("  ", 2)[2]
        .startswith(f"start session branchy from session explore at {executed_head}")
    )
    assert fork_log[1].startswith(executed_head)  # the fork's branch starts at that commit
    fresh = cli("session", "exec", "branchy", "--code", "print(y + 2)")  # a fresh kernel: no y yet
    assert fresh.returncode == 1 and "NameError: name 'y' is not defined" in fresh.stdout, fresh.stderr
    again = ok(cli("session", "exec", "branchy", "--all"))  # every cell again: y is back
    assert "── cell dbl ──\ny is 40\n" in again and again.splitlines()[-2] == "42"

    # the branch's git log, through a clone, is the session's history
    ok(cli("clone", "results", cwd=tmp_path))
    git_log = subprocess.run(
        ["git", "log", "--format=%h %s", "--abbrev=12", "--grep=^Nbkube-Session: ", f"origin/{branch}"],
        cwd=tmp_path / "results",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.split(" ", 1) for line in git_log] == [[line[:12], line.split("  ", 2)[2]] for line in log]

    # delete: the kernel goes (and the uploaded notebook with the session), the history stays
    for name in ("branchy", "explore"):
        out = ok(cli("session", "delete", name))
        assert re.fullmatch(
            rf"notebooksession {ns}/{name} deleted; its history stays on branch \S+ \(nbkube clone\)\n", out
        )
    wait_for(
        lambda: kubectl("get", "configmap", "explore", namespace=ns, check=False).returncode != 0,
        "the garbage collector to delete the session's ConfigMap",
    )
    message = one_line_error(cli("session", "exec", "explore", "--all"))
    assert f"NotebookSession 'explore' not found in namespace {ns}" in message


def test_failing_cells_refusals_and_ended_sessions_are_exit_1_with_a_reason(
    cli: Cli, kubectl: Any, cluster: Any, tmp_path: Path
) -> None:
    ns = cli.namespace
    out = ok(cli("session", "create", "small", "--env", "py", "--cell", "a = 1", "--idle-timeout", "45s"))
    assert re.search(r"^small Ready: ", out, re.M), out
    assert get_session(kubectl, ns, "small")["spec"]["idleTimeoutSeconds"] == 45  # type: ignore[index]

    # a failing cell: its traceback on stdout, exit 1, the error on stderr
    done = cli("session", "exec", "small", "--code", "1 / 0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ZeroDivisionError: division by zero" in done.stdout
    assert re.search(r"^  cell \S+ failed: ZeroDivisionError: division by zero$", done.stderr, re.M), (
        done.stderr
    )
    # an unknown cell id: the operator's reason, nothing run
    message = one_line_error(cli("session", "exec", "small", "nope"))
    assert "nope" in message

    # a viewer reads the session but may not change it: the API server's refusal, in its words
    kubectl("create", "serviceaccount", "session-viewer", namespace=ns)
    kubectl(
        "create",
        "rolebinding",
        "session-viewer",
        "--clusterrole=view",
        f"--serviceaccount={ns}:session-viewer",
        namespace=ns,
    )
    viewer = cluster.service_account_kubeconfig(ns, "session-viewer", tmp_path / "viewer.kubeconfig")
    as_viewer = ["--kubeconfig", str(viewer)]
    assert "a = 1" in ok(cli("session", "show", "small", *as_viewer))
    message = one_line_error(cli("session", "edit", "small", "insert", "import os", *as_viewer))
    assert "was refused" in message and "notebooksessions/edit" in message
    message = one_line_error(cli("session", "exec", "small", "--all", *as_viewer))
    assert "was refused" in message and "notebooksessions/exec" in message

    # command-line mistakes are exit 2, before anything is created
    assert "--idle-timeout" in one_line_error(
        cli("session", "create", "x", "--env", "py", "--idle-timeout", "soon"), code=2
    )
    assert "invalid session" in one_line_error(
        cli("session", "create", "x", "--env", "py", "--idle-timeout", "5s"), code=2
    )
    assert "NotebookEnvironment 'nope' not found" in one_line_error(
        cli("session", "create", "x", "--env", "nope")
    )
    assert get_session(kubectl, ns, "x") is None

    # an ended session refuses operations by name and reason, and its history stays readable
    def ended() -> bool:
        return ((get_session(kubectl, ns, "small") or {}).get("status") or {}).get("state") == "Ended"

    wait_for(ended, "the idle session to end", timeout=120)
    message = one_line_error(cli("session", "exec", "small", "--all"))
    assert "session small has ended (IdleTimeout" in message
    log = ok(cli("session", "log", "small"))
    assert log.splitlines()[-1].split("  ", 2)[2] == "start session small from inline cells"
    ok(cli("session", "delete", "small"))
