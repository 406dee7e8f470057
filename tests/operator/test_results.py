"""What lands in the results repository: checkpoints of long runs, and notebooks run again from it."""

import json

import nbformat
from helpers import get, run, wait_for, wait_run_finished


def _notebook(operator, path, commit):
    return nbformat.reads(operator.result(path, commit).decode(), as_version=4)


def test_a_long_run_commits_a_checkpoint_before_it_ends(kubectl, env_namespace, operator):
    cells = [f"c{i} = {i}" for i in range(24)] + ["import time\ntime.sleep(4)", "print(c23)"]
    kubectl.apply(run("long", cells), namespace=env_namespace)

    def checkpoint():
        obj = get(kubectl, "nbrun", "long", env_namespace)
        status = (obj or {}).get("status") or {}
        result = status.get("result")
        return result if status.get("state") == "Running" and result else None

    partial = wait_for("a checkpoint while the run is running", checkpoint, 90, 0.2)
    assert partial["final"] is False
    nb = _notebook(operator, partial["path"], partial["commit"])
    assert nb.metadata["nbkube"]["final"] is False
    executed = [c for c in nb.cells if c.get("execution_count")]
    assert len(executed) >= 20

    final = wait_run_finished(kubectl, env_namespace, "long", 120)["status"]["result"]
    assert final["final"] is True and final["commit"] != partial["commit"]
    nb = _notebook(operator, final["path"], final["commit"])
    assert nb.cells[-1].outputs[0]["text"] == "23\n"


def test_an_executed_notebook_in_the_repository_runs_again_by_repo_path(kubectl, env_namespace, operator):
    kubectl.apply(run("first", ["value = 20", "value * 2"]), namespace=env_namespace)
    first = wait_run_finished(kubectl, env_namespace, "first")["status"]
    assert first["state"] == "Succeeded"

    again = run("again", None)
    again["spec"]["notebook"] = {"repoPath": first["result"]["path"]}
    kubectl.apply(again, namespace=env_namespace)
    status = wait_run_finished(kubectl, env_namespace, "again")["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert status["cells"][-1]["summary"] == "40"
    assert status["result"]["path"] == f"{env_namespace}/again/notebook.ipynb"

    missing = run("missing", None)
    missing["spec"]["notebook"] = {"repoPath": "nowhere/none.ipynb"}
    kubectl.apply(missing, namespace=env_namespace)
    status = wait_run_finished(kubectl, env_namespace, "missing", 90)["status"]
    assert (status["state"], status["reason"]) == ("Failed", "NotebookNotFound")
    assert "nowhere/none.ipynb" in status["message"]


def test_a_huge_output_is_truncated_in_the_notebook_and_kept_whole_beside_it(
    kubectl, env_namespace, operator
):
    kubectl.apply(run("huge", ["print('x' * 6_000_000)", "print('after')"]), namespace=env_namespace)
    status = wait_run_finished(kubectl, env_namespace, "huge", 120)["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    result = status["result"]
    nb = _notebook(operator, result["path"], result["commit"])
    kept = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert len(kept) < 6_000_000 and "truncated" in kept
    assert nb.cells[1].outputs[0]["text"] == "after\n"
    spill_path = result["path"].rsplit("/", 1)[0] + "/outputs/outputs.jsonl"
    spilled = [json.loads(line) for line in operator.result(spill_path, result["commit"]).splitlines()]
    assert sum(len(e["output"].get("text", "")) for e in spilled) >= 6_000_000
