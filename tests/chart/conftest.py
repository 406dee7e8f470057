import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary: $HELM, else hack/install-helm.sh's cached copy (installed on first use)."""
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "install-helm.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"hack/install-helm.sh failed:\n{done.stderr}", pytrace=False)
    return Path(done.stdout.strip().splitlines()[-1])
