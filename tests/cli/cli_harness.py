"""Runs the nbkube CLI as a user would: `python -m nbkube.cli` against the test cluster and operator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nbkube_testenv.cluster import ClusterInfo


class Cli:
    """Runs `python -m nbkube.cli` as a user would, against the test cluster and operator."""

    def __init__(self, cluster: ClusterInfo, namespace: str) -> None:
        self.namespace = namespace
        self.env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nbkube.cli", *args, "-n", self.namespace]

    def __call__(
        self, *args: str, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args), env=self.env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
