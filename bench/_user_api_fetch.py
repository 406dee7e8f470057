"""The authorised path against a direct one, for `make bench-results`: one 1 MiB notebook fetched

- directly from the repository's HTTP handler on loopback (no authentication: the floor), and
- as a user would: kube-apiserver (client-certificate authentication, RBAC, the aggregator's proxy)
  → the user-facing API over front-proxy mTLS → a SubjectAccessReview the real API server answers →
  the same handler,

each with a fresh connection per fetch, as one CLI invocation makes. The user-facing API runs in this
process on the real local control plane (etcd, kube-apiserver), routed by its APIService. The fetches
are made by another process with urllib3, as `nbkube fetch` makes them: a client in this process would
share the server's event loop and interpreter lock, and its TLS work (the authorised path only) would
be counted against the server's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbkube.kube import Kube, resource_path
from nbkube.results import ResultsRepositories, RunRecord
from nbkube.results.http import serve_results
from nbkube.userapi import paths
from nbkube.userapi.certs import ensure_serving_certificate, service_dns_names
from nbkube.userapi.frontproxy import (
    AUTHENTICATION_CONFIGMAP,
    parse_authentication_configmap,
    server_ssl_context,
)
from nbkube.userapi.server import UserApi, serve_user_api
from nbkube.userapi.startup import publish_ca_bundle
from nbkube_testenv.cluster import LocalCluster, free_port
from nbkube_testenv.operator_process import API_SERVICE_NAME, kubectl, user_api_manifests

NAMESPACE = "bench"


def _notebook(size: int) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    per_cell = 64 * 1024
    for i in range(size // per_cell):
        cell = nbformat.v4.new_code_cell(f"print({i})", execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * per_cell)]
        nb.cells.append(cell)
    return nb


# One process, `repeat` fetches of one URL, each on a fresh connection; prints the times and the size.
_FETCHER = """
import json, sys, time, urllib3
url, repeat, ca, cert, key = sys.argv[1], int(sys.argv[2]), *(a or None for a in sys.argv[3:6])
times, size = [], 0
for _ in range(repeat):
    start = time.perf_counter()
    with urllib3.PoolManager(ca_certs=ca, cert_file=cert, key_file=key) as pool:
        response = pool.request("GET", url, headers={"Accept-Encoding": "identity"})
        if response.status != 200:
            sys.exit(f"{url}: HTTP {response.status}")
        size = len(response.data)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "size": size}))
"""


async def _median_fetch(url: str, tls: tuple[Path, Path, Path] | None, repeat: int) -> tuple[float, int]:
    """The median time and the size of `repeat` fetches from a separate process; tls is (CA bundle,
    client certificate, its key)."""
    files = [str(f) for f in tls] if tls else ["", "", ""]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FETCHER, url, str(repeat), *files, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"fetching {url} failed ({process.returncode})")
    answer = json.loads(out)
    return statistics.median(answer["times"]), int(answer["size"])


async def authorised_vs_direct(size: int = 1024 * 1024, repeat: int = 30) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nbkube-bench-userapi-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        info = cluster.up(quiet=True)
        try:
            return await _measure(info, Path(tmp), size, repeat)
        finally:
            cluster.down(quiet=True)


async def _measure(info: Any, tmp: Path, size: int, repeat: int) -> dict[str, float]:
    port = free_port()
    kubectl(info, "create", "namespace", "nbkube-system")
    items = {"apiVersion": "v1", "kind": "List", "items": user_api_manifests(port=port)}
    kubectl(info, "apply", "-f", "-", input=json.dumps(items))
    kube = await Kube.connect(str(info.kubeconfig), connections=4)
    async with ResultsRepositories(tmp / "results", fsync=False) as repositories:
        record = RunRecord(
            namespace=NAMESPACE, name="big", uid="bench-uid", notebook="big.ipynb", state="Succeeded"
        )
        committed = await repositories.commit_run(record, _notebook(size), final=True)
        store = await repositories.repository(NAMESPACE)
        assert store is not None
        namespace, name = AUTHENTICATION_CONFIGMAP
        requestheader = parse_authentication_configmap(
            await kube.get(resource_path("v1", "configmaps", namespace, name))
        )
        cert = ensure_serving_certificate(tmp / "tls", service_dns_names(API_SERVICE_NAME, "nbkube-system"))
        await publish_ca_bundle(kube, cert.ca_pem, logging.getLogger("bench"))
        api = UserApi(kube=kube, results=repositories, journal_dir=tmp, requestheader=requestheader)
        user_api = await serve_user_api(
            api, "127.0.0.1", port, server_ssl_context(cert.cert_file, cert.key_file, requestheader)
        )
        direct, direct_base = await serve_results(store)
        try:
            tls = (Path(info.ca_file), info.dir / "pki" / "admin.crt", info.dir / "pki" / "admin.key")
            authorised_url = (
                info.server + paths.file_path(NAMESPACE, committed.path) + f"?ref={committed.commit}"
            )
            deadline = time.monotonic() + 60
            while True:  # the aggregator picks up the APIService and its caBundle
                try:
                    await _median_fetch(authorised_url, tls, 1)
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            direct_url = f"{direct_base}/files/{committed.path}?ref={committed.commit}"
            direct_s, direct_bytes = await _median_fetch(direct_url, None, repeat)
            authorised_s, authorised_bytes = await _median_fetch(authorised_url, tls, repeat)
            # What any request through the API server costs on a fresh connection (TLS with a client
            # certificate, authentication): the part of the authorised path that is not nbkube's.
            floor_s, _ = await _median_fetch(info.server + "/version", tls, repeat)
            assert direct_bytes == authorised_bytes
        finally:
            await direct.cleanup()
            await user_api.cleanup()
            await kube.close()
    return {
        "fetch_bytes": direct_bytes,
        "direct_fetch_ms": round(direct_s * 1e3, 2),
        "authorised_fetch_ms": round(authorised_s * 1e3, 2),
        "authorised_over_direct": round(authorised_s / direct_s, 2),
        "apiserver_version_ms": round(floor_s * 1e3, 2),
    }
