"""Fixtures for the CLI's tests on the local control plane.

The operator here is module-scoped on purpose: it is stopped when the CLI's cluster module ends,
before another directory's operator starts (two operators must never watch the cluster at once).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest
from cli_harness import Cli
from nbkube_testenv import operator_process
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.wait import wait_for

GATEWAY_IMAGE = "nbkube/kernel-python:dev"


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[operator_process.OperatorProcess]:
    """The operator under the chart's ServiceAccount identity, for one test module."""
    operator_process.install(cluster)
    proc = operator_process.OperatorProcess(cluster, tmp_path_factory.mktemp("cli-operator"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log tail ---\n{proc.log_tail(40)}")


@pytest.fixture(scope="module")
def env_namespace(_session_kubectl, operator, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace with a Ready NotebookEnvironment "py", shared by one test module."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.module.__name__.lower()).strip("-")[-30:].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kubectl = _session_kubectl
    kubectl("create", "namespace", name)
    env = {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookEnvironment",
        "metadata": {"name": "py"},
        "spec": {"image": GATEWAY_IMAGE, "warmKernels": 2},
    }
    kubectl.apply(env, namespace=name)

    def ready() -> bool:
        done = kubectl("get", "nbenv", "py", "-o", "json", namespace=name, check=False)
        conditions = (
            (json.loads(done.stdout).get("status") or {}).get("conditions", []) if done.stdout else []
        )
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, f"NotebookEnvironment {name}/py Ready", timeout=180)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def cli(cluster: ClusterInfo, operator: operator_process.OperatorProcess, env_namespace: str) -> Cli:
    return Cli(cluster, operator.http_url, env_namespace)
