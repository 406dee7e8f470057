"""Files beside the notebook and per-run env, on the local control plane against real kernels.

A run's inputs (spec.files from ConfigMaps, Secrets and the results repository; spec.env) are placed in a
fresh working directory of its kernel by a silent setup before the first cell: relative paths work as
they do for nbclient in the notebook's folder, the executed notebook holds no trace of the setup, the
directory goes when the run ends, and a secret's value reaches the kernel and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest
from helpers import (
    condition,
    environment,
    events,
    gateway_address,
    gateway_api,
    gateway_pods,
    get,
    wait_for,
    wait_run_finished,
)
from helpers import run as run_manifest
from nbkube.api.inputs import MAX_INPUT_FILES
from nbkube_testenv.operator_process import OperatorProcess
from nbkube_testenv.userapi import ApiUser
from run_inputs_helpers import (
    Gate,
    all_git_objects,
    comparable_outputs,
    config_map,
    exists_in_pod,
    png,
    python_notebook,
    secret,
)

CSV = "name,value\nalpha,1\nbeta,2\ngamma,39\n"
LOGO = png(6, 4, (200, 30, 90))


def run(name: str, cells: list[str] | None, **spec: Any) -> dict[str, Any]:
    """A NotebookRun of environment py (spec.env here is the run's env, not the environment's name)."""
    manifest = run_manifest(name, cells)
    manifest["spec"].update(spec)
    return manifest


def _inline(nb: nbformat.NotebookNode) -> dict[str, Any]:
    return {"cells": [{"id": c.id, "source": c.source} for c in nb.cells]}


def _executed(operator: OperatorProcess, obj: dict[str, Any]) -> nbformat.NotebookNode:
    result = obj["status"]["result"]
    return nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")


def _succeeded(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = wait_run_finished(kubectl, namespace, name)
    assert obj["status"]["state"] == "Succeeded", json.dumps(obj["status"], indent=1)
    return obj


def test_a_notebook_reads_a_csv_and_shows_a_png_beside_it_with_the_outputs_nbclient_gives_locally(
    kubectl, env_namespace, operator, tmp_path
):
    kubectl.apply(
        config_map("inputs", data={"table.csv": CSV}, binary={"logo.png": LOGO}), namespace=env_namespace
    )
    nb = python_notebook(
        "import csv\nwith open('data/table.csv') as fh:\n    rows = list(csv.DictReader(fh))\nprint(rows)",
        "sum(int(r['value']) for r in rows)",
        "from IPython.display import Image, display\ndisplay(Image(filename='images/logo.png'))",
        "import os\nsorted(os.listdir('.')), sorted(os.listdir('data')), sorted(os.listdir('images'))",
        "print(len(In), len(Out), sorted(k for k in globals() if 'nbkube' in k.lower()))",
    )
    files = [
        {"configMap": {"name": "inputs", "items": [{"key": "table.csv"}]}, "destination": "data"},
        {"configMap": {"name": "inputs", "items": [{"key": "logo.png"}]}, "destination": "images"},
    ]
    manifest = run("beside", None, notebook=_inline(nb), files=files)
    kubectl.apply(manifest, namespace=env_namespace)

    local = tmp_path / "local"
    (local / "data").mkdir(parents=True)
    (local / "images").mkdir()
    (local / "data" / "table.csv").write_text(CSV)
    (local / "images" / "logo.png").write_bytes(LOGO)
    expected = nbclient.execute(nbformat.from_dict(nb), cwd=str(local), kernel_name="python3")

    obj = _succeeded(kubectl, env_namespace, "beside")
    executed = _executed(operator, obj)
    assert comparable_outputs(executed) == comparable_outputs(expected)
    shown = executed.cells[2].outputs[0]["data"]["image/png"]
    assert base64.b64decode(shown) == LOGO
    assert executed.cells[1].outputs[0]["data"]["text/plain"] == "42"

    # No trace of the setup: counts from 1, in the status too; nothing of it in the notebook.
    assert [c.execution_count for c in executed.cells] == [1, 2, 3, 4, 5]
    assert [c.get("executionCount") for c in obj["status"]["cells"]] == [1, 2, 3, 4, 5]
    text = nbformat.writes(executed)
    for trace in ("_nbkube_run", "nbkube.run.setup", "nbkube-runs", "comm_"):
        assert trace not in text, trace


def test_files_come_from_the_results_repository_one_file_or_a_whole_folder_and_the_directory_goes(
    kubectl, env_namespace, operator
):
    kubectl.apply(run("producer", ["print('made by the producer')"]), namespace=env_namespace)
    produced = _succeeded(kubectl, env_namespace, "producer")["status"]["result"]["path"]
    folder = produced.rsplit("/", 1)[0]  # <namespace>/producer: the notebook and nbkube.json
    cells = [
        "import os, json\n"
        "found = sorted(os.path.join(d, f) for d, _, fs in os.walk('.') for f in fs)\nprint(found)",
        "nb = json.load(open('whole/notebook.ipynb'))\n"
        "print(''.join(nb['cells'][0]['outputs'][0]['text']), end='')",
        "print(os.getcwd())",
    ]
    files = [
        {"repoPath": produced, "destination": "single"},
        {"repoPath": folder + "/", "destination": "whole"},
    ]
    kubectl.apply(run("consumer", cells, files=files), namespace=env_namespace)
    obj = _succeeded(kubectl, env_namespace, "consumer")
    executed = _executed(operator, obj)
    assert (
        _stdout(executed.cells[0])
        == str(["./single/notebook.ipynb", "./whole/nbkube.json", "./whole/notebook.ipynb"]) + "\n"
    )
    assert _stdout(executed.cells[1]) == "made by the producer\n"
    workdir = Path(_stdout(executed.cells[2]).strip())
    assert workdir.name.startswith("consumer-") and workdir.parent.name.startswith("kernel-")
    # Released with the kernel: removed before the kernel is shut down (seen from inside the pod).
    pod = next(e for e in events(kubectl, env_namespace, "consumer") if e["reason"] == "Started")
    url, token = gateway_address(kubectl, env_namespace, pod["message"].rsplit(" ", 1)[1])
    assert exists_in_pod(url, token, str(workdir.parent.parent))  # <tmp>/nbkube-runs, as the pod sees it
    wait_for(f"{workdir} to be removed", lambda: not exists_in_pod(url, token, str(workdir)), 60, 0.5)


def test_a_secret_reaches_the_kernel_and_nothing_else(kubectl, env_namespace, operator, tmp_path):
    """Under an operator logging at debug level: the value is found in no status, event, log, journal,
    log-route stream, executed notebook or clone of the results repository."""
    value = f"VALUE-{secrets.token_hex(12)}"
    digest = hashlib.sha256(value.encode()).hexdigest()
    forms = [value, base64.b64encode(value.encode()).decode(), value[6:]]
    kubectl.apply(secret("creds", {"password": value.encode()}), namespace=env_namespace)
    gate = Gate()
    cells = [
        "import hashlib, os, time\nprint(hashlib.sha256(os.environ['DB_PASSWORD'].encode()).hexdigest())",
        "print(hashlib.sha256(open('conf/pw.txt', 'rb').read()).hexdigest())",
        "print(oct(os.stat('conf/pw.txt').st_mode & 0o777), 'DB_PASSWORD' in os.environ)",
        gate.cell + "\nprint('released')",
    ]
    spec = {
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
        "files": [
            {
                "secret": {"name": "creds", "items": [{"key": "password", "path": "pw.txt"}]},
                "destination": "conf",
            }
        ],
    }
    debug = OperatorProcess(operator.info, tmp_path / "debug-operator", extra_args=("--debug",))
    debug.start()
    try:
        kubectl.apply(run("uses-secret", cells, **spec), namespace=env_namespace)

        def waiting_cell_runs() -> bool:
            cells_now = ((get(kubectl, "nbrun", "uses-secret", env_namespace) or {}).get("status") or {}).get(
                "cells", []
            )
            return len(cells_now) == 4 and cells_now[3]["state"] == "running"

        wait_for("the last cell to run", waiting_cell_runs, timeout=120, interval=0.1)
        journals = list((debug.data_dir / "journal").rglob("*"))
        assert any(p.suffix == ".jsonl" for p in journals), journals
        journal_text = b"".join(p.read_bytes() for p in journals if p.is_file())
        assert b'"setup":"done"' in journal_text  # that the setup was done, never what it held
        gate.open()
        obj = _succeeded(kubectl, env_namespace, "uses-secret")
        executed = _executed(debug, obj)
        assert [_stdout(c) for c in executed.cells[:3]] == [f"{digest}\n", f"{digest}\n", "0o600 True\n"]
        user = ApiUser.admin(debug.info)
        log_route = json.dumps(list(user.log_events(env_namespace, "uses-secret")))
        clone = tmp_path / "clone"
        done = user.clone(env_namespace, clone)
        assert done.returncode == 0, done.stderr
        cloned = all_git_objects(clone) + b"".join(p.read_bytes() for p in clone.rglob("*") if p.is_file())
        places = {
            "status": json.dumps(obj),
            "events": kubectl("get", "events", "-o", "json", namespace=env_namespace).stdout,
            "the operator's log": debug.log_path.read_text(errors="replace"),
            "the shared operator's log": operator.log_path.read_text(errors="replace"),
            "the journal": journal_text.decode(errors="replace"),
            "the log route": log_route,
            "the executed notebook": nbformat.writes(executed),
            "a clone of the results repository": cloned.decode(errors="replace"),
        }
        assert "DEBUG" in places["the operator's log"]  # it did log at debug level
        assert digest in places["the executed notebook"] and "DB_PASSWORD" in places["status"]
        for place, text in places.items():
            for form in forms:
                assert form not in text, f"the secret's value ({form[:8]}...) is in {place}"
    finally:
        gate.close()
        debug.stop()


def test_missing_inputs_end_the_run_before_any_cell_with_input_not_found_naming_them(
    kubectl, env_namespace, operator
):
    kubectl.apply(config_map("present", data={"a.txt": "a"}), namespace=env_namespace)
    kubectl.apply(secret("present-secret", {"k": b"v"}), namespace=env_namespace)
    cases = {
        "no-configmap": ({"files": [{"configMap": {"name": "absent"}}]}, "ConfigMap", "absent"),
        "no-secret": (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent-secret", "key": "k"}}}]},
            "Secret",
            "absent-secret",
        ),
        "no-key": (
            {"files": [{"configMap": {"name": "present", "items": [{"key": "b.txt"}]}}]},
            "ConfigMap",
            "no key 'b.txt' (keys: a.txt)",
        ),
        "no-secret-key": (
            {
                "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "present-secret", "key": "nope"}}}
                ]
            },
            "Secret",
            "no key 'nope'",
        ),
        "no-repo-path": (
            {"files": [{"repoPath": f"{env_namespace}/never-ran/notebook.ipynb"}]},
            "never-ran/notebook.ipynb",
            "not found in this namespace's results repository",
        ),
    }
    for name, (spec, _, _) in cases.items():
        kubectl.apply(run(name, ["print('never runs')"], **spec), namespace=env_namespace)
    for name, (_, what, detail) in cases.items():
        obj = wait_run_finished(kubectl, env_namespace, name, timeout=120)
        status = obj["status"]
        assert status["state"] == "Failed" and status["reason"] == "InputNotFound", json.dumps(status)
        assert what in status["message"] and detail in status["message"], status["message"]
        assert condition(obj, "Succeeded")["reason"] == "InputNotFound"
        # nothing half-started: no kernel taken, no cell run, no result
        assert status.get("attempt", 0) == 0 and "kernel" not in status and "result" not in status
        assert all(c["state"] == "pending" for c in status["cells"])
        seen = [(e["type"], e["reason"]) for e in events(kubectl, env_namespace, name)]
        assert ("Warning", "InputNotFound") in seen and ("Normal", "Started") not in seen, seen


def test_another_namespaces_results_are_not_found_exactly_as_a_missing_path_is(
    kubectl, env_namespace, namespace, operator
):
    """team-b (namespace) has a result; a run of team-a (env_namespace) naming it, its folder or a path
    team-b lacks gets the same InputNotFound as a path missing from its own repository, and nothing of
    team-b's notebook: the repoPath resolves in the run's own namespace only."""
    marker = f"team-b only {secrets.token_hex(8)}"
    kubectl.apply(environment(warmKernels=1), namespace=namespace)
    kubectl.apply(run("producer", [f"print({marker!r})"]), namespace=namespace)
    result = _succeeded(kubectl, namespace, "producer")["status"]["result"]
    produced = result["path"]
    assert produced == f"{namespace}/producer/notebook.ipynb"
    assert marker in operator.result(produced, result["commit"]).decode()  # there, in team-b's repository

    paths = {
        "their-file": produced,
        "their-folder": f"{namespace}/producer/",
        "their-missing": f"{namespace}/never-ran/notebook.ipynb",
        "own-missing": f"{env_namespace}/never-ran/notebook.ipynb",
    }
    for name, path in paths.items():
        kubectl.apply(run(name, ["print('never runs')"], files=[{"repoPath": path}]), namespace=env_namespace)
    messages = {}
    for name, path in paths.items():
        obj = wait_run_finished(kubectl, env_namespace, name, timeout=120)
        status = obj["status"]
        assert status["state"] == "Failed" and status["reason"] == "InputNotFound", json.dumps(status)
        assert status.get("attempt", 0) == 0 and "kernel" not in status and "result" not in status
        seen = [(e["type"], e["reason"]) for e in events(kubectl, env_namespace, name)]
        assert ("Warning", "InputNotFound") in seen and ("Normal", "Started") not in seen, seen
        assert marker not in json.dumps(obj)
        messages[name] = status["message"].replace(path, "<path>").replace(path.rstrip("/"), "<path>")
    assert len(set(messages.values())) == 1, messages  # an existing path of team-b reads as a missing one
    assert "<path> not found in this namespace's results repository" in messages["their-file"]
    assert marker not in kubectl("get", "events", "-o", "json", namespace=env_namespace).stdout


def test_inputs_past_the_bound_end_the_run_with_inputs_too_large(kubectl, env_namespace, operator):
    many = {f"k{i:05d}": "" for i in range(MAX_INPUT_FILES + 1)}
    kubectl.apply(config_map("many-keys", data=many), namespace=env_namespace)
    pods = gateway_pods(kubectl, env_namespace)

    def warm_only() -> bool:  # the module's environment keeps two warm kernels per pod
        return sum(len(gateway_api(kubectl, env_namespace, p, "/api/kernels")) for p in pods) == 2 * len(pods)

    wait_for("the gateway pods to hold only their warm kernels", warm_only, 60, 0.5)
    kubectl.apply(
        run("too-many", ["1"], files=[{"configMap": {"name": "many-keys"}}]), namespace=env_namespace
    )
    status = wait_run_finished(kubectl, env_namespace, "too-many")["status"]
    assert status["state"] == "Failed" and status["reason"] == "InputsTooLarge", json.dumps(status)
    assert f"{MAX_INPUT_FILES} files" in status["message"] and "64 MiB" in status["message"]
    assert "volume" in status["message"] and status.get("attempt", 0) == 0
    # The kernel taken while the inputs were read went back untouched: none is left over.
    wait_for("the gateway pods to hold only their warm kernels again", warm_only, 60, 0.5)


@pytest.mark.parametrize(
    "files",
    [
        [{"configMap": {"name": "x"}, "destination": "../outside"}],
        [{"configMap": {"name": "x", "items": [{"key": "k", "path": "a/../../b"}]}}],
        [{"repoPath": "/etc/passwd"}],
    ],
)
def test_a_destination_that_escapes_the_working_directory_is_refused_by_the_api_server(
    kubectl, env_namespace, operator, files
):
    done = kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(run("escapes", ["1"], files=files)),
        namespace=env_namespace,
        check=False,
    )
    assert done.returncode != 0
    assert "must be a relative path without '..' components" in done.stderr, done.stderr
    assert get(kubectl, "nbrun", "escapes", env_namespace) is None


def test_a_retry_sets_the_files_up_again_in_the_fresh_kernel(kubectl, env_namespace, operator):
    kubectl.apply(config_map("retry-inputs", data={"in.txt": "input"}), namespace=env_namespace)
    marker = f"/tmp/died-once-{secrets.token_hex(4)}"  # in the pod: its kernels share it
    cells = [
        f"import os\nif not os.path.exists({marker!r}):\n    open({marker!r}, 'w').close()\n"
        "    os.kill(os.getpid(), 9)",
        "print(open('in.txt').read(), os.environ['MODE'])",
    ]
    spec = {"files": [{"configMap": {"name": "retry-inputs"}}], "env": [{"name": "MODE", "value": "plain"}]}
    kubectl.apply(run("retried", cells, retries=1, **spec), namespace=env_namespace)
    obj = _succeeded(kubectl, env_namespace, "retried")
    assert obj["status"]["attempt"] == 2
    assert _stdout(_executed(operator, obj).cells[1]) == "input plain\n"


def test_each_child_of_a_sweep_gets_the_parents_files(kubectl, env_namespace, operator):
    kubectl.apply(config_map("sweep-inputs", data={"base.txt": "40"}), namespace=env_namespace)
    cells = ["n = 0", "print(int(open('base.txt').read()) + n)"]
    manifest = run("swept", cells, matrix={"n": [1, 2]}, files=[{"configMap": {"name": "sweep-inputs"}}])
    manifest["spec"]["notebook"]["cells"][0]["tags"] = ["parameters"]
    kubectl.apply(manifest, namespace=env_namespace)
    parent = _succeeded(kubectl, env_namespace, "swept")
    outputs = set()
    for child in parent["status"]["sweep"]["children"]:
        obj = _succeeded(kubectl, env_namespace, child)
        outputs.add(_stdout(_executed(operator, obj).cells[-1]))
    assert outputs == {"41\n", "42\n"}


def test_an_operator_killed_mid_run_leaves_the_setup_in_the_kernel_for_the_next_one(
    kubectl, env_namespace, operator
):
    kubectl.apply(config_map("restart-inputs", data={"in.txt": "kept"}), namespace=env_namespace)
    gate = Gate()
    cells = [
        "import os\nprint(os.getcwd())",
        gate.cell,
        "print(os.getcwd(), open('in.txt').read())",
    ]
    kubectl.apply(
        run("restarted", cells, files=[{"configMap": {"name": "restart-inputs"}}]), namespace=env_namespace
    )

    def second_cell_runs() -> bool:
        now = ((get(kubectl, "nbrun", "restarted", env_namespace) or {}).get("status") or {}).get("cells", [])
        return len(now) == 3 and now[1]["state"] == "running"

    wait_for("the waiting cell to run", second_cell_runs, timeout=120, interval=0.1)
    operator.kill()
    gate.open()
    gate.close()
    operator.start()
    obj = _succeeded(kubectl, env_namespace, "restarted")
    assert obj["status"]["attempt"] == 1
    assert "Reattached" in [e["reason"] for e in events(kubectl, env_namespace, "restarted")]
    executed = _executed(operator, obj)
    first = _stdout(executed.cells[0]).strip()
    assert _stdout(executed.cells[2]) == f"{first} kept\n"
    assert [c.execution_count for c in executed.cells] == [1, 2, 3]


@pytest.mark.parametrize("ending", ["Cancelled", "Failed"])
def test_the_working_directory_goes_when_the_run_is_cancelled_or_fails(
    kubectl, env_namespace, operator, ending
):
    kubectl.apply(config_map("ending-inputs", data={"in.txt": "x"}), namespace=env_namespace)
    name = f"ends-{ending.lower()}"
    gate = Gate()
    last = gate.cell + "\n1 / 0" if ending == "Failed" else "import time\nwhile True:\n    time.sleep(0.05)"
    cells = ["import os\nprint(os.getcwd())", last]
    kubectl.apply(run(name, cells, files=[{"configMap": {"name": "ending-inputs"}}]), namespace=env_namespace)

    def second_cell_runs() -> list[dict[str, Any]] | None:
        now = ((get(kubectl, "nbrun", name, env_namespace) or {}).get("status") or {}).get("cells", [])
        return now if len(now) == 2 and now[1]["state"] == "running" else None

    workdir = wait_for("the second cell to run", second_cell_runs, timeout=120, interval=0.1)[0]["summary"]
    assert "/nbkube-runs/kernel-" in workdir
    pod = next(e for e in events(kubectl, env_namespace, name) if e["reason"] == "Started")
    url, token = gateway_address(kubectl, env_namespace, pod["message"].rsplit(" ", 1)[1])
    assert exists_in_pod(url, token, f"{workdir}/in.txt")  # there while the run runs
    if ending == "Cancelled":
        kubectl(
            "patch",
            "nbrun",
            name,
            "--type=merge",
            "-p",
            '{"spec": {"cancel": true}}',
            namespace=env_namespace,
        )
    else:
        gate.open()
    gate.close()
    assert wait_run_finished(kubectl, env_namespace, name)["status"]["state"] == ending
    wait_for(f"{workdir} to be removed", lambda: not exists_in_pod(url, token, workdir), 60, 0.5)
