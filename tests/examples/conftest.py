from collections.abc import Iterator

import pytest
from nbkube_testenv import operator_process
from nbkube_testenv.cluster import ClusterInfo


@pytest.fixture(scope="package")
def operator(
    cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[operator_process.OperatorProcess]:
    """The operator under the chart's rules, for this package only (two operators must never overlap)."""
    operator_process.install(cluster)
    proc = operator_process.OperatorProcess(cluster, tmp_path_factory.mktemp("examples-operator"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log tail ---\n{proc.log_tail(40)}")
