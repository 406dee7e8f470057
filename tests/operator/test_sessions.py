"""A NotebookSession's life on the local control plane, driven through the API server by real users:
created from inline cells, edited by id, executed, its variables read, a `sleep` interrupted, its
kernel restarted, forked from an earlier commit, ended by its idle timeout; every change one commit
of its branch, which `git clone` and `git fsck --strict` take as they are. A viewer reads and may not
change; a user of another namespace gets nothing."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    environment,
    events,
    gateway_api,
    gateway_pods,
    get,
    run,
    wait_env_ready,
    wait_for,
    wait_run_finished,
)
from nbkube_testenv.userapi import ApiUser
from run_inputs_helpers import config_map, secret
from session_helpers import execute, session, wait_ready

SESSION = "explore"


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def team(_session_kubectl, operator, cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    kubectl = _session_kubectl
    a, b = f"sess-a-{secrets.token_hex(3)}", f"sess-b-{secrets.token_hex(3)}"
    for ns in (a, b):
        kubectl("create", "namespace", ns)
        kubectl.apply(environment(warmKernels=2), namespace=ns)
    workdir = tmp_path_factory.mktemp("session-users")
    kubectl("create", "serviceaccount", "viewer", namespace=a)
    kubectl(
        "create", "rolebinding", "viewer", "--clusterrole=view", f"--serviceaccount={a}:viewer", namespace=a
    )
    kubectl("create", "serviceaccount", "editor", namespace=b)
    kubectl(
        "create", "rolebinding", "editor", "--clusterrole=edit", f"--serviceaccount={b}:editor", namespace=b
    )
    for ns in (a, b):
        wait_env_ready(kubectl, ns)
    yield {
        "a": a,
        "b": b,
        "admin": ApiUser.admin(cluster),
        "viewer": ApiUser.from_kubeconfig(
            cluster.service_account_kubeconfig(a, "viewer", workdir / "v.kubeconfig")
        ),
        "outsider": ApiUser.from_kubeconfig(
            cluster.service_account_kubeconfig(b, "editor", workdir / "e.kubeconfig")
        ),
        "kubectl": kubectl,
    }
    for ns in (a, b):
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_session_lives_edited_and_executed_by_id_every_change_a_commit(
    team: dict[str, Any], tmp_path: Path
) -> None:
    kubectl, ns, admin = team["kubectl"], team["a"], team["admin"]
    kubectl.apply(session(SESSION, ["x = 20", "print(x + 1)"]), namespace=ns)
    ready = wait_ready(kubectl, ns, SESSION)["status"]
    assert ready["kernel"]["state"] == "idle" and ready["branch"].startswith(f"sessions/{SESSION}/")
    start_head = ready["head"]

    status, nb = admin.session(ns, SESSION, "notebook")
    assert status == 200 and [c["id"] for c in nb["cells"]] == ["c0", "c1"]

    events, result = execute(admin, ns, SESSION)
    assert [c["state"] for c in result["cells"]] == ["succeeded", "succeeded"]
    assert result["cells"][1]["outputs"][0]["text"] == "21\n"
    streamed = [e for e in events if e["type"] == "output"]
    assert streamed and streamed[0]["cellId"] == "c1" and streamed[0]["output"]["text"] == "21\n"
    after_run = result["head"]
    assert after_run != start_head

    # edits by id: insert, replace (outputs cleared), delete; each one commit
    status, inserted = admin.session(
        ns, SESSION, "edit", {"action": "insert", "after": "c0", "source": "y = x * 2", "cellId": "dbl"}
    )
    assert status == 200 and inserted["cellId"] == "dbl", inserted
    status, replaced = admin.session(
        ns, SESSION, "edit", {"action": "replace", "cellId": "c1", "source": "print(y)"}
    )
    assert status == 200, replaced
    status, nb = admin.session(ns, SESSION, "notebook")
    assert [c["id"] for c in nb["cells"]] == ["c0", "dbl", "c1"]
    assert nb["cells"][2]["outputs"] == [] and nb["cells"][2]["execution_count"] is None

    # an unknown id and a stale head are clear errors that change nothing
    status, body = admin.session(ns, SESSION, "edit", {"action": "delete", "cellId": "nope"})
    assert status == 400 and "nope" in json.dumps(body)
    status, body = admin.session(
        ns, SESSION, "edit", {"action": "delete", "cellId": "c0", "expectHead": start_head}
    )
    assert status == 409 and "head" in json.dumps(body)

    status, earlier = admin.session(ns, SESSION, "notebook", query={"ref": start_head})
    assert status == 200 and [c["id"] for c in earlier["cells"]] == ["c0", "c1"]  # at an earlier commit
    assert earlier["cells"][1]["outputs"] == []

    events, result = execute(admin, ns, SESSION, cellIds=["dbl", "c1"])
    assert result["cells"][1]["outputs"][0]["text"] == "40\n"
    count = result["executionCount"]

    status, state = admin.session(ns, SESSION, "variables")
    assert status == 200, state
    by_name = {v["name"]: v for v in state["variables"]}
    assert by_name["x"]["repr"] == "20" and by_name["y"]["type"] == "int"
    _, again = execute(admin, ns, SESSION, cellIds=["c1"])
    assert again["executionCount"] == count + 1  # reading the variables bumped nothing

    # history: one commit per change, on the session's branch, that git takes as it is
    status, history = admin.session(ns, SESSION, "history")
    assert status == 200
    messages = [h["message"].splitlines()[0] for h in history]
    assert messages[:5] == [
        "execute c1: succeeded (1 of 1 cells, " + messages[0].split("cells, ")[1],
        messages[1],
        "replace cell c1",
        "insert code cell dbl after c0",
        messages[4],
    ]
    assert messages[1].startswith("execute dbl, c1: succeeded") and messages[4].startswith("execute c0, c1")
    assert messages[5].startswith(f"start session {SESSION} from inline cells")
    branch = get(kubectl, "nbsess", SESSION, ns)["status"]["branch"]
    clone = admin.clone(ns, tmp_path / "repo")
    assert clone.returncode == 0, clone.stderr
    log = git("log", "--format=%s", f"origin/{branch}", cwd=tmp_path / "repo").splitlines()
    assert log[: len(messages)] == messages
    git("fsck", "--strict", cwd=tmp_path / "repo")
    shown = git("show", f"origin/{branch}:{nb_path(ns)}", cwd=tmp_path / "repo")
    assert [c.source for c in nbformat.reads(shown, as_version=4).cells] == [
        "x = 20",
        "y = x * 2",
        "print(y)",
    ]


def nb_path(namespace: str) -> str:
    return f"{namespace}/_sessions/{SESSION}/notebook.ipynb"


def test_a_sleep_is_interrupted_and_a_restart_forgets_the_variables(team: dict[str, Any]) -> None:
    kubectl, ns, admin = team["kubectl"], team["a"], team["admin"]
    wait_ready(kubectl, ns, SESSION)
    status, _ = admin.session(
        ns, SESSION, "edit", {"action": "insert", "cellId": "nap", "source": "import time\ntime.sleep(120)"}
    )
    assert status == 200
    started = threading.Event()
    seen: list[dict[str, Any]] = []

    def run_it() -> None:
        for event in admin.session_execute(ns, SESSION, {"cellIds": ["nap"]}):
            seen.append(event)
            if event["type"] == "cellStarted":
                started.set()

    runner = threading.Thread(target=run_it)
    runner.start()
    assert started.wait(60)
    status, body = admin.session(ns, SESSION, "interrupt", {})
    assert status == 200 and "interrupted" in body["message"]
    runner.join(60)
    assert not runner.is_alive()
    result = seen[-1]["result"]
    assert result["cells"][0]["state"] == "cancelled"

    _, timed = execute(admin, ns, SESSION, cellIds=["nap"], timeoutSeconds=1)
    assert timed["cells"][0]["state"] == "timedOut", timed["cells"][0]["state"]

    status, body = admin.session(ns, SESSION, "restart", {})
    assert status == 200 and "gone" in body["message"]
    status, state = admin.session(ns, SESSION, "variables")
    assert status == 200 and state["variables"] == []
    assert get(kubectl, "nbsess", SESSION, ns)["status"]["kernel"]["state"] == "idle"


def test_a_fork_starts_from_an_earlier_commit_with_its_history(team: dict[str, Any], tmp_path: Path) -> None:
    kubectl, ns, admin = team["kubectl"], team["a"], team["admin"]
    status, history = admin.session(ns, SESSION, "history")
    first_run = next(h for h in reversed(history) if h["message"].startswith("execute c0, c1"))
    kubectl.apply(
        session("fork", notebook={"fork": {"session": SESSION, "commit": first_run["commit"]}}), namespace=ns
    )
    ready = wait_ready(kubectl, ns, "fork")["status"]
    status, nb = admin.session(ns, "fork", "notebook")
    assert status == 200, nb
    forked_nb = nbformat.reads(json.dumps(nb), as_version=4)  # (on disk, sources are lists of lines)
    assert [c.source for c in forked_nb.cells] == ["x = 20", "print(x + 1)"]
    assert forked_nb.cells[1].outputs[0]["text"] == "21\n"  # the fork has the outputs of that commit
    _, forked = admin.session(ns, "fork", "history")
    assert forked[0]["message"].startswith("start session fork from session explore at")
    assert first_run["commit"] in [h["commit"] for h in forked]  # the branch starts at that commit
    assert ready["branch"] != get(kubectl, "nbsess", SESSION, ns)["status"]["branch"]


def test_an_idle_session_ends_and_gives_its_kernel_back_its_history_kept(team: dict[str, Any]) -> None:
    kubectl, ns, admin = team["kubectl"], team["a"], team["admin"]
    kubectl.apply(session("brief", ["1 + 1"], idleTimeoutSeconds=10), namespace=ns)
    wait_ready(kubectl, ns, "brief")

    def ended() -> dict[str, Any] | None:
        status = (get(kubectl, "nbsess", "brief", ns) or {}).get("status") or {}
        return status if status.get("state") == "Ended" else None

    status = wait_for("the idle session to end", ended, timeout=60)
    assert status["reason"] == "IdleTimeout" and "kernel" not in status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "IdleTimeout"
    code, history = admin.session(ns, "brief", "history")
    assert code == 200 and history[-1]["message"].startswith("start session brief")
    code, body = admin.session(ns, "brief", "edit", {"action": "insert", "source": "2"})
    assert code == 409, body


def test_a_sessions_files_and_env_reach_its_kernel_only_and_it_ends_at_its_maximum_lifetime(
    team: dict[str, Any],
) -> None:
    kubectl, ns, admin = team["kubectl"], team["a"], team["admin"]
    value = f"VALUE-{secrets.token_hex(12)}"
    kubectl.apply(config_map("session-data", data={"table.csv": "a,b\n1,2\n"}), namespace=ns)
    kubectl.apply(secret("session-creds", {"token": value.encode()}), namespace=ns)
    spec = {
        "files": [
            {"configMap": {"name": "session-data"}, "destination": "data"},
            {"secret": {"name": "session-creds"}, "destination": "conf"},
        ],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "session-creds", "key": "token"}}}],
        "maxLifetimeSeconds": 25,
    }
    cells = [
        "import hashlib, os\nprint(open('data/table.csv').read().splitlines()[1])",
        "print(os.environ['TOKEN'].encode() == open('conf/token', 'rb').read(), len(os.environ['TOKEN']))",
    ]
    kubectl.apply(session("inputs", cells, **spec), namespace=ns)
    wait_ready(kubectl, ns, "inputs")
    _, result = execute(admin, ns, "inputs")
    assert [c["outputs"][0]["text"] for c in result["cells"]] == ["1,2\n", f"True {len(value)}\n"]

    def ended() -> dict[str, Any] | None:
        obj = get(kubectl, "nbsess", "inputs", ns) or {}
        return obj if (obj.get("status") or {}).get("state") == "Ended" else None

    obj = wait_for("the session to reach its maximum lifetime", ended, timeout=90)
    assert obj["status"]["reason"] == "LifetimeExceeded" and "kernel" not in obj["status"]
    code, nb = admin.session(ns, "inputs", "notebook")
    assert code == 200 and [c["id"] for c in nb["cells"]] == ["c0", "c1"]
    for where in (obj, nb, events(kubectl, ns, "inputs")):
        assert value not in json.dumps(where)


def test_a_viewer_reads_but_cannot_change_and_another_namespace_gets_nothing(team: dict[str, Any]) -> None:
    ns, viewer, outsider = team["a"], team["viewer"], team["outsider"]
    wait_ready(team["kubectl"], ns, SESSION)
    for sub in ("notebook", "history", "variables"):
        status, body = viewer.session(ns, SESSION, sub)
        assert status == 200, (sub, body)
    operations = {
        "edit": {"action": "insert", "source": "import os; os.system('id')"},
        "exec": {},
        "interrupt": {},
        "restart": {},
    }
    for sub, body in operations.items():
        status, answer = viewer.session(ns, SESSION, sub, body)
        assert status == 403, (sub, answer)
    for sub in ("notebook", "history", "variables"):
        status, answer = outsider.session(ns, SESSION, sub)
        assert status == 403, (sub, answer)
    for sub, body in operations.items():
        status, answer = outsider.session(ns, SESSION, sub, body)
        assert status == 403, (sub, answer)
    status, nb = team["admin"].session(ns, SESSION, "notebook")
    assert "os.system" not in json.dumps(nb)


def test_a_session_forks_a_runs_result_and_its_deletion_gives_the_kernel_back_keeping_history(
    team: dict[str, Any], tmp_path: Path
) -> None:
    kubectl, ns, admin = team["kubectl"], team["a"], team["admin"]
    kubectl.apply(run("origin", ["answer = 42", "print(answer)"]), namespace=ns)
    finished = wait_run_finished(kubectl, ns, "origin")["status"]
    assert finished["state"] == "Succeeded", finished
    kubectl.apply(session("from-run", notebook={"fork": {"run": "origin"}}), namespace=ns)
    status = wait_ready(kubectl, ns, "from-run")["status"]
    branch = status["branch"]
    code, raw = admin.session(ns, "from-run", "notebook")
    assert code == 200, raw
    nb = nbformat.reads(json.dumps(raw), as_version=4)  # (on disk, texts are lists of lines)
    assert nb.cells[1].outputs[0]["text"] == "42\n" and "nbkube" not in nb.metadata
    _, result = execute(admin, ns, "from-run", cellIds=[nb.cells[0].id])
    assert result["cells"][0]["state"] == "succeeded"
    kernel = status["kernel"]["kernelId"]

    kubectl("delete", "nbsess", "from-run", namespace=ns)
    # (its daemon ends on its own within seconds: kopf then removes the finalizer at once)
    wait_for("the session to be gone", lambda: get(kubectl, "nbsess", "from-run", ns) is None, 20)
    wait_for(
        "its kernel to be shut down",
        lambda: (
            kernel
            not in [k["id"] for k in gateway_api(kubectl, ns, gateway_pods(kubectl, ns)[0], "/api/kernels")]
        ),
        60,
    )
    clone = admin.clone(ns, tmp_path / "repo")
    assert clone.returncode == 0, clone.stderr
    log = git("log", "--format=%s", f"origin/{branch}", cwd=tmp_path / "repo").splitlines()
    assert log[0].startswith("execute ") and log[1].startswith("start session from-run from run origin")
    assert finished["result"]["commit"] in git(
        "log", "--format=%H", f"origin/{branch}", cwd=tmp_path / "repo"
    )


def test_forged_names_and_huge_bodies_never_reach_the_operators_clients(team: dict[str, Any]) -> None:
    ns, admin = team["a"], team["admin"]
    base = f"/apis/subresources.nbkube.io/v1alpha1/namespaces/{ns}/notebooksessions"
    for forged in ("..%2F..%2Fsecrets", "x%3Fwatch%3Dtrue", "a%2Fb", "-rf"):
        status, body = admin.get(f"{base}/{forged}/notebook")
        assert status in (400, 404), (forged, status, body[:200])
    huge = {"action": "insert", "source": "x" * (2 * 1024 * 1024)}
    status, body = admin.session(ns, SESSION, "edit", huge)
    assert status == 413, (status, str(body)[:200])
    status, nb = admin.session(ns, SESSION, "notebook")
    assert status == 200 and "x" * 1000 not in json.dumps(nb)
