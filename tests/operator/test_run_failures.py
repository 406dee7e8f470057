"""Every way a run can end badly, reached for real, each with a clear reason where users look."""

import json

from helpers import condition, environment, events, get, run, wait_env_ready, wait_for, wait_run_finished


def _finished(kubectl, ns, manifest, timeout=120):
    kubectl.apply(manifest, namespace=ns)
    return wait_run_finished(kubectl, ns, manifest["metadata"]["name"], timeout)


def _failed_with(obj, reason):
    status = obj["status"]
    assert status["state"] == "Failed", json.dumps(status, indent=1)
    assert status["reason"] == reason, json.dumps(status, indent=1)
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", reason)
    return status


def test_a_failing_cell_fails_the_run_with_cell_error_and_keeps_what_ran(kubectl, env_namespace):
    obj = _finished(kubectl, env_namespace, run("cell-error", ["print('before')", "1/0", "print('never')"]))
    status = _failed_with(obj, "CellError")
    assert "ZeroDivisionError" in status["message"]
    states = [c["state"] for c in status["cells"]]
    assert states == ["succeeded", "failed", "pending"]
    assert status["result"]["commit"]  # the partial notebook is committed: nothing lost
    assert "CellError" in [e["reason"] for e in events(kubectl, env_namespace, "cell-error")]


def test_allow_errors_runs_past_a_failing_cell_and_succeeds(kubectl, env_namespace):
    obj = _finished(kubectl, env_namespace, run("allow", ["1/0", "print('after')"], allowErrors=True))
    assert obj["status"]["state"] == "Succeeded"
    cells = obj["status"]["cells"]
    assert cells[0]["state"] == "failed" and cells[1]["summary"] == "after"


def test_a_cell_over_its_timeout_is_interrupted_and_the_run_times_out(kubectl, env_namespace):
    manifest = run("slow-cell", ["import time\ntime.sleep(120)"], timeouts={"cellSeconds": 2})
    status = _failed_with(_finished(kubectl, env_namespace, manifest), "TimedOut")
    assert status["cells"][0]["state"] == "timedOut"
    assert "cellSeconds=2" in status["message"]


def test_with_allow_errors_a_timed_out_cell_is_interrupted_and_the_run_goes_on(kubectl, env_namespace):
    cells = ["state = 'kept'", "import time\nprint('before', flush=True)\ntime.sleep(120)", "print(state)"]
    manifest = run("slow-allowed", cells, timeouts={"cellSeconds": 2}, allowErrors=True)
    obj = _finished(kubectl, env_namespace, manifest)
    status = obj["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert [c["state"] for c in status["cells"]] == ["succeeded", "timedOut", "succeeded"]
    assert status["cells"][2]["summary"] == "kept"
    assert status["result"]["commit"]


def test_a_run_past_its_deadline_ends_deadline_exceeded(kubectl, env_namespace):
    manifest = run("deadline", ["import time\ntime.sleep(120)"], timeouts={"runSeconds": 3})
    _failed_with(_finished(kubectl, env_namespace, manifest), "DeadlineExceeded")


def test_a_dying_kernel_fails_the_run_as_kernel_died_after_its_retries(kubectl, env_namespace):
    manifest = run("dies", ["print('start')", "import os\nos._exit(1)"], retries=1)
    status = _failed_with(_finished(kubectl, env_namespace, manifest), "KernelDied")
    assert status["attempt"] == 2
    reasons = [e["reason"] for e in events(kubectl, env_namespace, "dies")]
    assert "Retrying" in reasons and reasons.count("Started") == 2


def test_cancel_interrupts_the_running_cell_and_ends_cancelled(kubectl, env_namespace):
    kubectl.apply(
        run("cancel-me", ["import time\nfor i in range(600):\n    time.sleep(0.1)"]), namespace=env_namespace
    )

    def running():
        obj = get(kubectl, "nbrun", "cancel-me", env_namespace)
        cells = ((obj or {}).get("status") or {}).get("cells", [])
        return any(c["state"] == "running" for c in cells)

    wait_for("the long cell to start", running, 60)
    kubectl(
        "patch",
        "nbrun",
        "cancel-me",
        "--type=merge",
        "-p",
        '{"spec":{"cancel":true}}',
        namespace=env_namespace,
    )
    obj = wait_run_finished(kubectl, env_namespace, "cancel-me", 60)
    assert obj["status"]["state"] == "Cancelled" and obj["status"]["reason"] == "Cancelled"
    assert obj["status"]["cells"][0]["state"] == "cancelled"


def test_a_missing_environment_is_reported_as_environment_not_found(kubectl, env_namespace):
    obj = _finished(kubectl, env_namespace, run("no-env", ["1"], env="does-not-exist"))
    status = _failed_with(obj, "EnvironmentNotFound")
    assert "does-not-exist" in status["message"]


def test_an_environment_in_another_namespace_is_refused(kubectl, env_namespace):
    manifest = run("cross-ns", ["1"])
    manifest["spec"]["environmentRef"]["namespace"] = "default"
    status = _failed_with(_finished(kubectl, env_namespace, manifest), "EnvironmentNotAllowed")
    assert "own namespace" in status["message"]


def test_a_configmap_that_is_not_a_notebook_fails_as_invalid_notebook(kubectl, env_namespace):
    kubectl("create", "configmap", "broken", "--from-literal=nb.ipynb={not json", namespace=env_namespace)
    manifest = run("bad-nb", None)
    manifest["spec"]["notebook"] = {"configMapRef": {"name": "broken", "key": "nb.ipynb"}}
    status = _failed_with(_finished(kubectl, env_namespace, manifest), "InvalidNotebook")
    assert "ConfigMap" in status["message"] and "broken" in status["message"]


def test_a_spec_only_the_operator_can_judge_fails_as_invalid_spec(kubectl, env_namespace):
    status = _failed_with(
        _finished(kubectl, env_namespace, run("bad-params", ["1"], parameters={"not-valid": 1})),
        "InvalidSpec",
    )
    assert "not-valid" in status["message"]


def test_a_notebook_from_a_configmap_runs(kubectl, env_namespace, tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 0.1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(alpha * 10)")]
    path = tmp_path / "analysis.ipynb"
    nbformat.write(nb, path)
    kubectl("create", "configmap", "analysis", f"--from-file={path}", namespace=env_namespace)
    manifest = run("from-cm", None, parameters={"alpha": 0.3})
    manifest["spec"]["notebook"] = {"configMapRef": {"name": "analysis", "key": "analysis.ipynb"}}
    obj = _finished(kubectl, env_namespace, manifest)
    assert obj["status"]["state"] == "Succeeded"
    assert obj["status"]["cells"][-1]["summary"] == "3.0"
    assert obj["status"]["result"]["path"].endswith("/from-cm/analysis.ipynb")


def test_a_run_waits_for_a_free_kernel_when_every_gateway_pod_is_at_its_limit(kubectl, namespace, operator):
    kubectl.apply(environment("one", maxKernelsPerPod=1, warmKernels=0), namespace=namespace)
    wait_env_ready(kubectl, namespace, "one")
    kubectl.apply(run("first", ["import time\ntime.sleep(5)\n'first'"], env="one"), namespace=namespace)
    first_running = lambda: _state(kubectl, namespace, "first") == "Running"  # noqa: E731
    wait_for("the first run to hold the only kernel", first_running)

    kubectl.apply(run("second", ["'second'"], env="one"), namespace=namespace)

    def waiting():
        status = (get(kubectl, "nbrun", "second", namespace) or {}).get("status") or {}
        return status.get("state") == "Pending" and status.get("reason") == "WaitingForKernel"

    wait_for("the second run to wait for a kernel", waiting, 30, 0.2)
    assert _state(kubectl, namespace, "first") == "Running"
    second = wait_run_finished(kubectl, namespace, "second")["status"]
    assert (second["state"], second["attempt"]) == ("Succeeded", 1), json.dumps(second, indent=1)
    assert wait_run_finished(kubectl, namespace, "first")["status"]["state"] == "Succeeded"


def _state(kubectl, namespace, name):
    return ((get(kubectl, "nbrun", name, namespace) or {}).get("status") or {}).get("state")
