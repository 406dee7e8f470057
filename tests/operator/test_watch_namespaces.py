"""An operator that watches chosen namespaces, with rights there only (the chart's watchNamespaces):
it runs notebooks in those, leaves every other namespace alone, and needs no cluster-wide rights on
namespaced resources."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import nbformat
from helpers import environment, get, run, wait_env_ready, wait_run_finished
from nbkube_testenv import operator_process
from nbkube_testenv.operator_process import OperatorProcess
from nbkube_testenv.operator_rbac import operator_namespace_rbac_manifests


def test_an_operator_watching_one_namespace_runs_there_only_with_rights_there_only(
    kubectl: Any, cluster: Any, operator: OperatorProcess, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(3)
    home, watched, other = f"scoped-op-{suffix}", f"watched-{suffix}", f"unwatched-{suffix}"
    for ns in (watched, other):
        kubectl("create", "namespace", ns)
    account = "scoped-operator"
    manifests = [
        *operator_process.rbac_manifests(home, account, watch_namespaces=(watched,)),
        *operator_namespace_rbac_manifests(home, account),
    ]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": manifests})
    # Nothing cluster-wide on namespaced resources: only the watched namespace grants them.
    can = f"--as=system:serviceaccount:{home}:{account}"
    assert (
        kubectl("auth", "can-i", "list", "notebookruns.nbkube.io", "-n", other, can, check=False).returncode
        != 0
    )
    assert kubectl("auth", "can-i", "list", "notebookruns.nbkube.io", "-n", watched, can).returncode == 0

    scoped = OperatorProcess(
        cluster, tmp_path / "operator", namespace=home, service_account=account, watch_namespaces=(watched,)
    )
    try:
        scoped.start()  # pauses the session's operator until this one stops
        kubectl.apply(run("ignored", ["1 + 1"]), namespace=other)
        kubectl.apply(environment(), namespace=watched)
        wait_env_ready(kubectl, watched)
        kubectl.apply(run("work", ["6 * 7"]), namespace=watched)
        finished = wait_run_finished(kubectl, watched, "work")
        status = finished["status"]
        assert status["state"] == "Succeeded", json.dumps(status)
        nb = nbformat.reads(scoped.result(status["result"]["path"], status["result"]["commit"]).decode(), 4)
        assert nb.cells[-1].outputs[0]["data"]["text/plain"] == "42"
        # The run in the namespace not watched was applied first and is still untouched.
        assert (get(kubectl, "nbrun", "ignored", other) or {}).get("status") is None
        assert "ignored" not in scoped.log_tail(400)
    finally:
        scoped.stop()
        for ns in (home, watched, other):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
