"""The CLI's cluster tests use the shared `operator` and `env_namespace` fixtures
(nbkube_testenv.operator_fixtures, registered in tests/conftest.py)."""

from __future__ import annotations

import pytest
from cli_harness import Cli
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.operator_process import OperatorProcess


@pytest.fixture(scope="module")
def cli(cluster: ClusterInfo, operator: OperatorProcess, env_namespace: str) -> Cli:
    return Cli(cluster, env_namespace)
