"""A parameter matrix fans out into owner-referenced child runs, parallelism at a time."""

import json

from helpers import events, get, run, wait_for, wait_run_finished


def test_a_sweep_runs_every_combination_as_a_child_and_aggregates_their_states(kubectl, env_namespace):
    manifest = run("sweep", ["print(alpha * seed)"], matrix={"alpha": [1, 2, 3], "seed": [10]}, parallelism=2)
    kubectl.apply(manifest, namespace=env_namespace)
    parent = wait_run_finished(kubectl, env_namespace, "sweep", 180)
    status = parent["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    sweep = status["sweep"]
    assert (sweep["total"], sweep["succeeded"], sweep["failed"]) == (3, 3, 0)
    summaries = set()
    for name in sweep["children"]:
        child = get(kubectl, "nbrun", name, env_namespace)
        assert child["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]
        assert child["status"]["state"] == "Succeeded"
        summaries.add(child["status"]["cells"][-1]["summary"])
    assert summaries == {"10", "20", "30"}
    assert status["progress"] == "3/3"


def test_a_sweep_with_a_failing_child_fails_and_says_how_many(kubectl, env_namespace):
    manifest = run("sweep-fail", ["assert x != 2, 'x is two'"], matrix={"x": [1, 2]})
    kubectl.apply(manifest, namespace=env_namespace)
    parent = wait_run_finished(kubectl, env_namespace, "sweep-fail", 180)
    assert parent["status"]["state"] == "Failed"
    assert parent["status"]["reason"] == "ChildRunsFailed"
    assert parent["status"]["message"] == "1 of 2 child runs failed"


def test_a_changed_matrix_is_ignored_with_a_warning_even_across_an_operator_restart(
    kubectl, env_namespace, operator
):
    manifest = run("sweep-fixed", ["import time\ntime.sleep(1.5)\nx"], matrix={"x": [1, 2]}, parallelism=1)
    kubectl.apply(manifest, namespace=env_namespace)

    def started():
        return ((get(kubectl, "nbrun", "sweep-fixed", env_namespace) or {}).get("status") or {}).get("state")

    wait_for("the sweep to start", lambda: started() == "Running")
    kubectl(
        "patch",
        "nbrun",
        "sweep-fixed",
        "--type=merge",
        "-p",
        '{"spec":{"matrix":{"x":[1,2,3],"y":[0,1]}}}',
        namespace=env_namespace,
    )
    wait_for(
        "a MatrixChanged warning",
        lambda: "MatrixChanged" in [e["reason"] for e in events(kubectl, env_namespace, "sweep-fixed")],
    )
    # The next operator reads the changed spec: the matrix the sweep started with still rules.
    operator.kill()
    operator.start()

    parent = wait_run_finished(kubectl, env_namespace, "sweep-fixed", 180)
    status = parent["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert (status["sweep"]["total"], status["sweep"]["succeeded"]) == (2, 2)
    children = kubectl.json("get", "nbrun", "-l", "nbkube.io/sweep=sweep-fixed", namespace=env_namespace)
    assert len(children["items"]) == 2
    assert json.loads(parent["metadata"]["annotations"]["nbkube.io/sweep-matrix"]) == {"x": [1, 2]}
