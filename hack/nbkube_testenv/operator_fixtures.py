"""pytest fixtures for tests that need the nbkube operator running on the local cluster.

`operator` is one operator process for the whole session. A test that starts an operator of its own
(say, under the identity a `helm install` created) pauses this one until its own stops
(OperatorProcess.start), so two operators never drive the same runs at once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from nbkube_testenv import operator_process
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.wait import wait_for

_LOG_OFFSET = pytest.StashKey[int]()
FAILED_TEST_LOG_LINES = 200


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test that used the operator gets the operator's log lines written while it ran
    (CI keeps only the test output: without them a flake there cannot be told apart)."""
    report = yield
    proc = getattr(item, "funcargs", {}).get("operator")
    if not isinstance(proc, operator_process.OperatorProcess):
        return report
    if call.when == "setup":
        item.stash[_LOG_OFFSET] = proc.log_path.stat().st_size if proc.log_path.exists() else 0
    elif report.failed:
        offset = item.stash.get(_LOG_OFFSET, 0)
        with proc.log_path.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()[-FAILED_TEST_LOG_LINES:]
        report.sections.append(("operator log during the test", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[operator_process.OperatorProcess]:
    """The operator under the chart's ServiceAccount identity (exactly the chart's ClusterRole rules)."""
    operator_process.install(cluster)
    proc = operator_process.OperatorProcess(
        cluster,
        tmp_path_factory.mktemp("operator"),
        # Schedules seconds apart for tests/operator/test_schedules.py: a test-only seconds field.
        extra_env={"NBKUBE_SCHEDULE_SECONDS_FIELD": "true"},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log tail ---\n{proc.log_tail(40)}")


def environment_manifest(name: str = "py", **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookEnvironment",
        "metadata": {"name": name},
        "spec": {
            "image": "nbkube/kernel-python:dev",
            "warmKernels": 1,
            "env": [{"name": "MPLBACKEND", "value": "Agg"}],
            **spec,
        },
    }


@pytest.fixture(scope="module")
def env_namespace(_session_kubectl, operator, request) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A namespace with a ready NotebookEnvironment "py" (two warm kernels), shared by one test module."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.module.__name__.lower()).strip("-")[-30:].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kubectl = _session_kubectl
    kubectl("create", "namespace", name)
    kubectl.apply(environment_manifest(warmKernels=2), namespace=name)

    def ready() -> bool:
        env = kubectl.json("get", "nbenv", "py", namespace=name)
        conds = (env.get("status") or {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_for(ready, f"environment {name}/py to be Ready", timeout=120)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
