import json

import nbformat
from helpers import (
    FINISHED_STATES,
    condition,
    environment,
    events,
    gateway_api,
    run,
    wait_env_ready,
    wait_for,
    wait_run_finished,
)
from nbkube_testenv.rest import Rest


def test_a_notebook_run_executes_every_cell_for_real_and_commits_the_result(kubectl, namespace, operator):
    kubectl.apply(environment(), namespace=namespace)
    wait_env_ready(kubectl, namespace)
    cells = [
        "import os, sys\nprint('hello from', os.getpid())",
        "x = 6 * 7\nx",
        "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))",
        "x + 1",
    ]
    kubectl.apply(run("hello", cells, parameters={"greeting": "hi"}), namespace=namespace)
    obj = wait_run_finished(kubectl, namespace, "hello")
    status = obj["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert condition(obj, "Succeeded")["status"] == "True"
    assert condition(obj, "Progressing")["status"] == "False"
    assert status["progress"] == "5/5"  # four cells and the injected parameters cell
    by_index = {c["index"]: c for c in status["cells"]}
    assert all(c["state"] == "succeeded" for c in status["cells"])
    assert by_index[2]["summary"] == "42"
    assert by_index[4]["summary"] == "43"
    assert by_index[1]["summary"].startswith("hello from ")
    pid = int(by_index[1]["summary"].split()[-1])
    assert pid > 0
    assert [by_index[i]["executionCount"] for i in range(5)] == [1, 2, 3, 4, 5]

    result = status["result"]
    assert result["path"] == f"{namespace}/hello/notebook.ipynb"
    nb = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].metadata["tags"] == ["injected-parameters"]
    assert 'greeting = "hi"' in nb.cells[0].source
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "42"
    assert nb.cells[3].outputs[0]["data"]["text/html"] == "<b>bold</b>"
    assert nb.metadata["nbkube"]["uid"] == obj["metadata"]["uid"]

    reasons = [e["reason"] for e in events(kubectl, namespace, "hello")]
    assert "Started" in reasons and "Succeeded" in reasons and "ResultsCommitted" in reasons


def _log_events(operator, namespace, name, follow):
    return operator.log_events(namespace, name, follow)


def test_cell_outputs_stream_while_the_run_executes_and_stay_readable_after(kubectl, env_namespace, operator):
    cells = [
        "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(0.3)",
        "'done'",
    ]
    kubectl.apply(run("streaming", cells), namespace=env_namespace)
    events = _log_events(operator, env_namespace, "streaming", follow=True)
    assert events[-1] == {"event": "end", "state": "Succeeded", "reason": "Succeeded"}
    ticks = "".join(e["output"]["text"] for e in events if e["event"] == "output" and e["index"] == 0)
    assert ticks.splitlines() == [f"tick {i}" for i in range(5)]
    finished = [e for e in events if e["event"] == "cellFinished"]
    assert [(e["index"], e["state"]) for e in finished] == [(0, "succeeded"), (1, "succeeded")]

    after = _log_events(operator, env_namespace, "streaming", follow=False)
    assert [e for e in after if e["event"] == "output"][-1]["output"]["data"]["text/plain"] == "'done'"
    assert after[-1]["event"] == "end"


def test_operator_metrics_follow_controller_runtime_names(operator):
    text = operator.metrics()
    for name in (
        "nbkube_reconcile_total",
        "nbkube_reconcile_time_seconds",
        "nbkube_cell_duration_seconds",
        "nbkube_runs",
        "nbkube_kernels",
        "nbkube_build_info",
    ):
        assert f"\n{name}" in text or text.startswith(name) or f"# TYPE {name}" in text, name


def test_a_finished_run_is_deleted_after_its_ttl_and_its_result_stays(kubectl, env_namespace, operator):
    # Watched rather than polled: with a 1 s TTL the finished object can be gone before a poll sees it.
    api = Rest(operator.info.kubeconfig)
    runs = f"/apis/nbkube.io/v1alpha1/namespaces/{env_namespace}/notebookruns"
    since = api.get(runs)["metadata"]["resourceVersion"]
    kubectl.apply(run("short-lived", ["1 + 1"], ttlSecondsAfterFinished=1), namespace=env_namespace)
    finished: dict | None = None
    deleted = False
    for event in api.watch(f"{runs}?fieldSelector=metadata.name%3Dshort-lived", since, timeout_seconds=120):
        status = event["object"].get("status") or {}
        if event["type"] == "MODIFIED" and status.get("state") in FINISHED_STATES:
            finished = finished or status
        if event["type"] == "DELETED":
            deleted = True
            break
    assert finished is not None and finished["state"] == "Succeeded", finished
    assert deleted, "the run was not deleted after its TTL"
    assert any(e["reason"] == "Expired" for e in events(kubectl, env_namespace, "short-lived"))
    nb = nbformat.reads(operator.result(finished["result"]["path"], finished["result"]["commit"]).decode(), 4)
    assert nb.cells[0].outputs[0]["data"]["text/plain"] == "2"
    assert 'nbkube_runs{state="Succeeded"}' in operator.metrics()


def test_a_finished_runs_kernel_is_shut_down_on_its_gateway_pod(kubectl, env_namespace, operator):
    kubectl.apply(run("kernel-released", ["1 + 1"]), namespace=env_namespace)
    assert wait_run_finished(kubectl, env_namespace, "kernel-released")["status"]["state"] == "Succeeded"
    started = next(e for e in events(kubectl, env_namespace, "kernel-released") if e["reason"] == "Started")
    # "attempt 1: kernel 76f2db62 on gateway pod py-gateway-b775f6657-zwwxs"
    kernel_prefix = started["message"].split("kernel ")[1].split()[0]
    pod_name = started["message"].rsplit(" ", 1)[1]

    def run_kernel_gone():
        kernels = gateway_api(kubectl, env_namespace, pod_name, "/api/kernels")
        return not any(k["id"].startswith(kernel_prefix) for k in kernels)

    wait_for("the finished run's kernel to be shut down", run_kernel_gone, timeout=60)
