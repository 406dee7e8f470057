"""The authorised path against a direct one, for `make bench-results`: one 1 MiB notebook fetched

- directly from the repository's HTTP handler on loopback (no authentication: the floor), and
- as a user would: kube-apiserver (client-certificate authentication, RBAC, the aggregator's proxy)
  → the user-facing API over front-proxy mTLS → a SubjectAccessReview the real API server answers →
  the same handler,

each with a fresh connection per fetch, as one CLI invocation makes. The user-facing API runs in this
process on the real local control plane (etcd, kube-apiserver), routed by its APIService.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
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
# As `nbkube fetch` asks (urllib3 asks for no compression): the bytes as stored.
HEADERS = {"Accept-Encoding": "identity"}


def _notebook(size: int) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    per_cell = 64 * 1024
    for i in range(size // per_cell):
        cell = nbformat.v4.new_code_cell(f"print({i})", execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * per_cell)]
        nb.cells.append(cell)
    return nb


async def _median_fetch(url: str, context: ssl.SSLContext | None, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=context if context else False, headers=HEADERS) as response:
                response.raise_for_status()
                size = len(await response.read())
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


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
            client = ssl.create_default_context(cafile=str(info.ca_file))
            client.load_cert_chain(str(info.dir / "pki" / "admin.crt"), str(info.dir / "pki" / "admin.key"))
            authorised_url = (
                info.server + paths.file_path(NAMESPACE, committed.path) + f"?ref={committed.commit}"
            )
            deadline = time.monotonic() + 60
            while True:  # the aggregator picks up the APIService and its caBundle
                try:
                    await _median_fetch(authorised_url, client, 1)
                    break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            direct_url = f"{direct_base}/files/{committed.path}?ref={committed.commit}"
            direct_s, direct_bytes = await _median_fetch(direct_url, None, repeat)
            authorised_s, authorised_bytes = await _median_fetch(authorised_url, client, repeat)
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
    }
