"""pytest fixtures for the local control plane.

Register with `pytest_plugins = ["nbkube_testenv.pytest_plugin"]` (tests/conftest.py does).

- `cluster` (session): the running cluster named by NBKUBE_KUBECONFIG (a kubeconfig written by
  `cluster up`), else a healthy one in <rootdir>/.cluster (`make cluster-up`), else a new one in a
  temporary directory, stopped when the session ends (its logs are kept when a test failed).
- `namespace`: a fresh namespace per test (its default ServiceAccount exists), deleted afterwards.
- `kubectl`: runs the cluster's kubectl as admin; see `Kubectl.__call__`.
- `k8s_api`: a kubernetes.client.ApiClient authenticated as admin.

Every test that uses `cluster`, directly or through these fixtures, is marked `cluster` automatically,
so `-m "not cluster"` leaves them out and `-m cluster` selects them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbkube_testenv.cluster import ClusterError, ClusterInfo, LocalCluster
from nbkube_testenv.wait import wait_for


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


class KubectlError(AssertionError):
    pass


class Kubectl:
    """Runs kubectl against the cluster as admin (or with another kubeconfig / --as identity)."""

    def __init__(self, info: ClusterInfo):
        self.info = info

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        namespace: str | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        as_user: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Returns the CompletedProcess; raises KubectlError with stderr when check and it failed."""
        argv = [str(self.info.kubectl), f"--kubeconfig={kubeconfig or self.info.kubeconfig}"]
        if namespace:
            argv.append(f"--namespace={namespace}")
        if as_user:
            argv.append(f"--as={as_user}")
        argv += list(args)
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            cmd = " ".join(args)
            raise KubectlError(f"`kubectl {cmd}` failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def json(self, *args: str, **kwargs: Any) -> Any:
        """`kubectl <args> -o json`, parsed."""
        return json.loads(self(*args, "-o", "json", **kwargs).stdout)

    def apply(self, manifest: str | dict[str, Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", input=text, **kwargs)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Iterator[ClusterInfo]:
    given = os.environ.get("NBKUBE_KUBECONFIG")
    if given:
        named = LocalCluster(Path(given).absolute().parent)
        if not named.is_running():
            pytest.fail(
                f"NBKUBE_KUBECONFIG={given} is not the kubeconfig of a running `cluster up` cluster: "
                "run `make cluster-up` or unset it",
                pytrace=False,
            )
        yield named.info()
        return
    shared = LocalCluster(pytestconfig.rootpath / ".cluster")
    if shared.is_running():
        yield shared.info()
        return
    # Not under pytest's basetemp: concurrent sessions of the same user prune old basetemps.
    own = LocalCluster(tempfile.mkdtemp(prefix="nbkube-cluster-"))
    try:
        info = own.up(quiet=True)
    except ClusterError as e:
        pytest.fail(f"could not start the local cluster: {e}", pytrace=False)
    try:
        yield info
    finally:
        own.down(quiet=True)
        if request.session.testsfailed:
            print(f"\nlocal cluster logs kept in {own.dir}/logs and {own.dir}/pods")
        else:
            shutil.rmtree(own.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _session_kubectl(cluster: ClusterInfo) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture
def kubectl(_session_kubectl: Kubectl) -> Kubectl:
    return _session_kubectl


@pytest.fixture
def namespace(_session_kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kubectl = _session_kubectl
    kubectl("create", "namespace", name)
    wait_for(
        lambda: kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode == 0,
        f"the default ServiceAccount in namespace {name}",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def k8s_api(cluster: ClusterInfo) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()
