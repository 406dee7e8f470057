from collections.abc import Iterator

import pytest
from nbkube_testenv import operator_process
from nbkube_testenv.cluster import ClusterInfo


@pytest.fixture(scope="session")
def operator(
    cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[operator_process.OperatorProcess]:
    """The operator running under the chart's ServiceAccount identity, one per test session."""
    operator_process.install(cluster)
    proc = operator_process.OperatorProcess(cluster, tmp_path_factory.mktemp("operator"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log tail ---\n{proc.log_tail(40)}")


@pytest.fixture(scope="module")
def env_namespace(_session_kubectl, operator, request) -> Iterator[str]:
    """A namespace with a ready NotebookEnvironment "py", shared by one test module."""
    import re
    import secrets

    from helpers import environment, wait_env_ready

    slug = re.sub(r"[^a-z0-9]+", "-", request.module.__name__.lower()).strip("-")[-30:].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kubectl = _session_kubectl
    kubectl("create", "namespace", name)
    kubectl.apply(environment(warmKernels=2), namespace=name)
    wait_env_ready(kubectl, name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
