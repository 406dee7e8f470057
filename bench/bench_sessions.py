"""NotebookSessions' numbers on the local control plane (`make bench-sessions`), with the real operator.

Starts its own cluster in a temp dir, installs the CRDs, RBAC and the user-facing APIService, runs the
operator under its ServiceAccount, creates one environment (replicas 1, maxKernelsPerPod 48, warmKernels
2) and measures, in the same run:

1. create -> Ready: a NotebookSession of one cell created by an API POST (what `kubectl apply` sends)
   on a warm environment (the pool holding a started kernel), until status.state Ready is seen on a
   watch (timestamped on arrival). Sequential repetitions, each after the pool refilled; each session
   is deleted after. Median (min, max).
2. per-cell overhead: a trivial cell (`1`) executed through the whole user-facing path, one request
   per cell: POST .../notebooksessions/NAME/exec to the kube-apiserver (client certificate, RBAC,
   the aggregator's proxy, the operator's front-proxy mTLS and its SubjectAccessReview) over one
   keep-alive HTTPS connection, timed to the result line of the NDJSON answer (the execution's commit
   included); against the same cell sent straight to the gateway's websocket by nbkube's engine, on a
   kernel of the same gateway pod. A third path, the same request straight to the operator's own
   user-API port as the API server's front proxy (its client certificate, the admin in X-Remote-*
   headers), splits the overhead between the API server's hop and the operator. The three alternate
   cell by cell (the machine is shared); medians. A block of requests through the API server alone
   before them counts the API server's requests per cell (its apiserver_request_total) and the
   operator's status patches per cell.
3. 32 sessions x 50 cells: 32 Ready sessions of 50 trivial cells each, every session executing its
   cells one request per cell (sessions in parallel, each one's requests in sequence), from the first
   request to the last result; against the raw engine running the same 32 x 50 cells, one cell at a
   time per kernel, on 32 kernels started beforehand on the same gateway pod, in parallel. The raw
   figure is the mean of one measurement before the sessions are created and one after they are
   deleted (they never share the pod's kernel limit). Shown beside it: CPU seconds of the operator,
   kube-apiserver and etcd meanwhile, the API server's requests and the status patches per cell.

The last line is one JSON object:
{"session_ready_s", "session_cell_overhead_ms", "parallel_32_sessions_ratio", ...}.
Environment: BENCH_READY_REPEATS (10), BENCH_OVERHEAD_CELLS (50), BENCH_PARALLEL_SESSIONS (32),
BENCH_PARALLEL_CELLS (50), BENCH_KEEP=1 keeps the temp dir, BENCH_PROFILE_DIR (py-spy samples the
operator during each phase into collapsed-stack files; BENCH_PYSPY names py-spy).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import ssl
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _operator_support import (
    Bench,
    LatencyProbe,
    RunWatch,
    bench_cluster,
    cpu_seconds,
    environment,
    environments_path,
    load_average,
    profiled,
    retrying,
    sessions_path,
)
from nbkube.engine import CellState, GatewayClient, KernelConnection, NotebookExecutor
from nbkube.environment.objects import GATEWAY_APP_NAME
from nbkube.environment.podspec import GATEWAY_PORT
from nbkube.userapi import paths
from nbkube_testenv.operator_process import kubectl
from nbkube_testenv.userapi import ApiUser

READY_REPEATS = int(os.environ.get("BENCH_READY_REPEATS", "10"))
OVERHEAD_CELLS = int(os.environ.get("BENCH_OVERHEAD_CELLS", "50"))
OVERHEAD_WARMUP = 5
PARALLEL_SESSIONS = int(os.environ.get("BENCH_PARALLEL_SESSIONS", "32"))
PARALLEL_CELLS = int(os.environ.get("BENCH_PARALLEL_CELLS", "50"))
NS = "bench"
ENV = "py"
WARM = 2
MAX_KERNELS = 48  # 32 sessions' kernels and the warm pool, or 32 raw kernels and the pool: never both
TRIVIAL = "1"
ADMIN_USER, ADMIN_GROUP = "nbkube-admin", "system:masters"  # the local cluster's admin certificate


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text} (load {load_average()})", flush=True)


def session_body(name: str, cells: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookSession",
        "metadata": {"name": name},
        "spec": {
            "environmentRef": {"name": ENV},
            "notebook": {"cells": [{"id": f"c{i}", "source": s} for i, s in enumerate(cells)]},
        },
    }


def parallel_cells() -> list[str]:
    return [f"x{j} = {j}" for j in range(PARALLEL_CELLS)]


def wait_ready(watch: RunWatch, names: list[str], timeout: float) -> dict[str, float]:
    """When each session's Ready was first seen (AssertionError when one ended instead)."""

    def ready(sessions: dict[str, Any]) -> bool:
        ended = [n for n in names if n in sessions and "Ended" in sessions[n].states]
        if ended:
            status = sessions[ended[0]].last.get("status") or {}
            raise RuntimeError(f"session {ended[0]} ended: {status.get('reason')}: {status.get('message')}")
        return all(n in sessions and "Ready" in sessions[n].states for n in names)

    watch.wait(ready, f"{len(names)} session(s) Ready", timeout)
    return {n: watch.runs[n].states["Ready"] for n in names}


def start_sessions(bench: Bench, watch: RunWatch, names: list[str]) -> tuple[list[str], list[str]]:
    """Creates the sessions at once and waits until each is Ready. One that ends instead (30 kernels
    started at once on a loaded 2-core machine: a gateway may answer a start with an error, and the
    session says so) is replaced once by a new one, and its reason is kept for the report."""
    for name in names:
        bench.create(NS, session_body(name, parallel_cells()))
    failed: list[str] = []
    pending = list(names)
    ready: list[str] = []
    retried: set[str] = set()

    def settled(sessions: dict[str, Any]) -> bool:
        return all(n in sessions and {"Ready", "Ended"} & set(sessions[n].states) for n in pending)

    while pending:
        watch.wait(settled, f"{len(pending)} session(s) Ready or Ended", 600)
        ended = [n for n in pending if "Ended" in watch.runs[n].states]
        ready += [n for n in pending if n not in ended]
        pending = []
        for name in ended:
            status = watch.runs[name].last.get("status") or {}
            failed.append(f"{name}: {status.get('reason')}: {(status.get('message') or '')[:200]}")
            print(f"   {failed[-1]}", flush=True)
            if name in retried:
                raise RuntimeError(f"session {name} could not start twice: {failed[-1]}")
            bench.api.delete(sessions_path(NS, name))
            replacement = f"{name}-again"
            retried.add(replacement)
            bench.create(NS, session_body(replacement, parallel_cells()))
            pending.append(replacement)
    return ready, failed


def delete_sessions(bench: Bench, names: list[str]) -> None:
    for name in names:
        bench.api.delete(sessions_path(NS, name))


# the user-facing API, as a keep-alive HTTPS client with the admin kubeconfig's credentials


class UserApiClient:
    """Through the API server as `user`; or (front_proxy) straight to the operator's own user-API port
    as the API server's front proxy would call it, with the admin's identity in X-Remote-* headers."""

    def __init__(
        self, user: ApiUser, connections: int, front_proxy: tuple[str, Path, Path] | None = None
    ) -> None:
        if front_proxy is None:
            context = ssl.create_default_context(cafile=str(user.ca_file))
            if user.cert_file:
                context.load_cert_chain(str(user.cert_file), str(user.key_file) if user.key_file else None)
            self.server = user.server
            headers = {"Authorization": f"Bearer {user.token}"} if user.token else {}
        else:
            # the operator's serving CA is its own (published in the APIService): not checked here
            self.server, cert, key = front_proxy
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.load_cert_chain(str(cert), str(key))
            headers = {"X-Remote-User": ADMIN_USER, "X-Remote-Group": ADMIN_GROUP}
        connector = aiohttp.TCPConnector(ssl=context, limit=connections, keepalive_timeout=300)
        self.http = aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=300)
        )

    async def close(self) -> None:
        await self.http.close()

    async def execute(self, session: str, cell_id: str) -> tuple[float, float, dict[str, Any]]:
        """(seconds to the cell's cellFinished event, seconds to the result, the result) of executing
        one cell of `session`, timed from just before the request."""
        url = self.server + paths.session_path(NS, session, paths.SESSION_EXEC)
        body = json.dumps({"cellIds": [cell_id]}).encode()
        t0 = time.perf_counter()
        finished = float("nan")
        # Chunked, as the CLI sends: a Content-Length body lets the API server's proxy cut the stream
        # under load (golang/go#40747; README, "The user-facing API").
        async with self.http.post(
            url, data=_chunked(body), headers={"Content-Type": "application/json"}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"execute {session}/{cell_id}: {response.status} {await response.text()}")
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "cellFinished":
                    finished = time.perf_counter() - t0
                elif event["type"] == "result":
                    done = time.perf_counter() - t0
                    result = event["result"]
                    cells = result.get("cells") or []
                    if not cells or cells[0]["state"] != CellState.SUCCEEDED.value:
                        raise RuntimeError(f"execute {session}/{cell_id}: {result.get('message')}")
                    return finished, done, result
                elif event["type"] == "error":
                    raise RuntimeError(f"execute {session}/{cell_id}: {event}")
        raise RuntimeError(f"execute {session}/{cell_id}: the stream ended without a result")


def apiserver_requests(bench: Bench) -> Counter[str]:
    """kube-apiserver's apiserver_request_total by "VERB resource[/subresource]" so far."""
    assert bench.info is not None
    text = kubectl(bench.info, "get", "--raw", "/metrics")
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        resource = labels.get("resource", "") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        counts[f"{labels.get('verb')} {resource}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def per_operation(before: Counter[str], after: Counter[str], operations: int) -> dict[str, float]:
    """API server requests per operation between two counts (the ones of at least 0.1 per operation)."""
    delta = {k: (after[k] - before.get(k, 0)) / operations for k in after}
    return dict(sorted(((k, round(v, 2)) for k, v in delta.items() if v >= 0.1), key=lambda kv: -kv[1]))


# the raw engine, straight on the environment's gateway pod


def gateway_address(bench: Bench) -> tuple[str, str]:
    """(base URL, token) of the environment's gateway pod, read as the cluster admin."""
    selector = f"app.kubernetes.io/name={GATEWAY_APP_NAME}"
    pods = bench.api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=selector)["items"]
    ips = [p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")]
    if len(ips) != 1:
        raise RuntimeError(f"expected one gateway pod with an IP, found {len(ips)}")
    secret_name = bench.api.get(environments_path(NS, ENV))["status"]["tokenSecret"]
    secret = bench.api.get(f"/api/v1/namespaces/{NS}/secrets/{secret_name}")
    return f"http://{ips[0]}:{GATEWAY_PORT}", base64.b64decode(secret["data"]["token"]).decode()


class RawKernel:
    """A kernel started on the gateway pod by nbkube's engine, executing cells one call at a time."""

    def __init__(self, client: GatewayClient, connection: KernelConnection) -> None:
        self.client = client
        self.connection = connection
        self.executor = NotebookExecutor(connection)
        self.count = 0

    @classmethod
    async def start(cls, client: GatewayClient) -> RawKernel:
        model = await client.start_kernel("python3")
        connection = await client.connect(model["id"])
        await connection.kernel_info()
        return cls(client, connection)

    async def execute(self, source: str) -> float:
        cell: NotebookNode = new_code_cell(source)
        t0 = time.perf_counter()
        result = await self.executor.execute_cell(cell, self.count)
        elapsed = time.perf_counter() - t0
        self.count += 1
        if result.state is not CellState.SUCCEEDED:
            raise RuntimeError(f"raw cell {source!r} ended {result.state}")
        return elapsed

    async def stop(self) -> None:
        await self.connection.close()
        await self.client.delete_kernel(self.connection.kernel_id)


async def wait_gateway_kernels(client: GatewayClient, at_most: int, timeout: float = 120) -> None:
    """The pod's kernels down to `at_most` (deleted sessions give theirs back)."""
    deadline = time.monotonic() + timeout
    while len(await client.list_kernels()) > at_most:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway pod still has more than {at_most} kernels after {timeout}s")
        await asyncio.sleep(0.5)


# 1. create -> Ready


def bench_ready(bench: Bench, watch: RunWatch) -> dict[str, Any]:
    say(f"1. create -> Ready: {READY_REPEATS} sessions, one at a time, each on a warm pool")
    samples, calls = [], []
    for i in range(READY_REPEATS):
        bench.wait_environment_warm(NS, ENV, WARM)
        name = f"ready-{i}"
        t0 = time.time()
        bench.create(NS, session_body(name, [TRIVIAL]))
        calls.append(time.time() - t0)
        samples.append(wait_ready(watch, [name], 120)[name] - t0)
        print(f"   {name}: Ready seen after {samples[-1] * 1000:7.1f} ms", flush=True)
        delete_sessions(bench, [name])
    writes = [watch.runs[f"ready-{i}"].writes for i in range(READY_REPEATS)]
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "create_call_median": statistics.median(calls),
        "writes_to_ready": statistics.fmean(writes),
    }


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    yield body


# 2. per-cell overhead


async def bench_overhead(bench: Bench, watch: RunWatch, url: str, token: str) -> dict[str, Any]:
    say(
        f"2. per-cell overhead: {OVERHEAD_CELLS} cells each via the user API, straight to the operator "
        "and raw, alternating"
    )
    name = "overhead"
    bench.create(NS, session_body(name, [TRIVIAL]))
    await asyncio.to_thread(wait_ready, watch, [name], 120)
    assert bench.info is not None and bench.operator is not None
    pki = bench.info.dir / "pki"
    api = UserApiClient(ApiUser.admin(bench.info), connections=1)
    direct = UserApiClient(
        ApiUser.admin(bench.info),
        connections=1,
        front_proxy=(bench.operator.api_url, pki / "front-proxy-client.crt", pki / "front-proxy-client.key"),
    )
    samples: dict[str, list[float]] = {
        "raw": [],
        "api": [],
        "api_finished": [],
        "api_alone": [],
        "direct": [],
    }
    try:
        async with GatewayClient(url, token, request_timeout=120) as client:
            raw = await RawKernel.start(client)
            try:
                for _ in range(OVERHEAD_WARMUP):  # connections opened, first-call costs paid
                    await raw.execute(TRIVIAL)
                    await api.execute(name, "c0")
                    await direct.execute(name, "c0")
                requests0 = await asyncio.to_thread(apiserver_requests, bench)
                patches0 = bench.metric("nbkube_status_patches_total")
                for _ in range(OVERHEAD_CELLS):
                    finished, done, result = await api.execute(name, "c0")
                    samples["api_alone"].append(done)
                    samples["api_finished"].append(finished)
                requests = per_operation(
                    requests0, await asyncio.to_thread(apiserver_requests, bench), OVERHEAD_CELLS
                )
                patches = (bench.metric("nbkube_status_patches_total") - patches0) / OVERHEAD_CELLS
                for _ in range(OVERHEAD_CELLS):
                    samples["raw"].append(await raw.execute(TRIVIAL))
                    samples["direct"].append((await direct.execute(name, "c0"))[1])
                    samples["api"].append((await api.execute(name, "c0"))[1])
            finally:
                await raw.stop()
    finally:
        await api.close()
        await direct.close()
    outputs = result["cells"][0]["outputs"]
    if not outputs or outputs[0].get("data", {}).get("text/plain") != "1":
        raise RuntimeError(f"the session's cell did not answer 1: {outputs}")
    delete_sessions(bench, [name])
    ms = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    p90 = {k: sorted(v)[int(len(v) * 0.9)] * 1000 for k, v in samples.items()}
    return {
        "raw_ms": ms["raw"],
        "api_ms": ms["api"],
        "direct_ms": ms["direct"],
        "api_finished_ms": ms["api_finished"],
        "api_alone_ms": ms["api_alone"],
        "api_p90_ms": p90["api"],
        "raw_p90_ms": p90["raw"],
        "direct_p90_ms": p90["direct"],
        "overhead_ms": ms["api"] - ms["raw"],
        "apiserver_requests_per_cell": requests,
        "status_patches_per_cell": patches,
    }


# 3. 32 sessions x 50 cells


async def raw_parallel(url: str, token: str) -> float:
    async with GatewayClient(url, token, request_timeout=120) as client:
        kernels = await asyncio.gather(*(RawKernel.start(client) for _ in range(PARALLEL_SESSIONS)))
        try:

            async def cells(kernel: RawKernel) -> None:
                for source in parallel_cells():
                    await kernel.execute(source)

            t0 = time.perf_counter()
            await asyncio.gather(*(cells(k) for k in kernels))
            return time.perf_counter() - t0
        finally:
            await asyncio.gather(*(k.stop() for k in kernels), return_exceptions=True)


async def sessions_parallel(bench: Bench, watch: RunWatch, names: list[str]) -> dict[str, Any]:
    assert bench.info is not None
    api = UserApiClient(ApiUser.admin(bench.info), connections=len(names))
    latencies: list[float] = []
    try:
        # one request each first: every session's connection open (the raw kernels' are too)
        await asyncio.gather(*(api.execute(n, "c0") for n in names))
        requests0 = await asyncio.to_thread(apiserver_requests, bench)
        patches0 = bench.metric("nbkube_status_patches_total")
        writes0 = sum(watch.runs[n].writes for n in names)
        pids = bench.control_plane_pids()
        cpu0 = cpu_seconds(pids)
        probe = LatencyProbe(bench.api, f"/api/v1/namespaces/{NS}")

        async def cells(name: str) -> None:
            for j in range(PARALLEL_CELLS):
                latencies.append((await api.execute(name, f"c{j}"))[1])

        t0 = time.perf_counter()
        await asyncio.gather(*(cells(n) for n in names))
        wall = time.perf_counter() - t0
        api_latencies = probe.stop()
        cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu_seconds(pids).items()}
        operations = len(names) * PARALLEL_CELLS
        patches = (bench.metric("nbkube_status_patches_total") - patches0) / operations
        writes = (sum(watch.runs[n].writes for n in names) - writes0) / operations
        requests = per_operation(requests0, await asyncio.to_thread(apiserver_requests, bench), operations)
    finally:
        await api.close()
    latencies.sort()
    return {
        "wall": wall,
        "status_patches_per_cell": patches,
        "session_writes_per_cell": writes,
        "apiserver_requests_per_cell": requests,
        "cpu": cpu,
        "request_median": statistics.median(latencies),
        "request_p90": latencies[int(len(latencies) * 0.9)],
        "api_latency_median": statistics.median(api_latencies) if api_latencies else float("nan"),
    }


async def bench_parallel(bench: Bench, watch: RunWatch, url: str, token: str) -> dict[str, Any]:
    n, c = PARALLEL_SESSIONS, PARALLEL_CELLS
    say(f"3. {n} sessions x {c} cells through the user API, and the raw engine on {n} kernels of the pod")
    async with GatewayClient(url, token, request_timeout=120) as client:
        await wait_gateway_kernels(client, WARM)
    raw_before = await raw_parallel(url, token)
    print(f"   raw engine, {n} kernels: {raw_before:.2f} s", flush=True)
    names = [f"par-{k:02d}" for k in range(n)]
    await asyncio.to_thread(bench.wait_environment_warm, NS, ENV, WARM)
    t0 = time.time()
    names, failed = await asyncio.to_thread(start_sessions, bench, watch, names)
    all_ready = max(watch.runs[name].states["Ready"] for name in names) - t0
    print(f"   {n} sessions created and Ready after {all_ready:.2f} s", flush=True)
    with profiled(bench.operator_pid(), "parallel"):
        sessions = await sessions_parallel(bench, watch, names)
    print(f"   {n} sessions x {c} cells: {sessions['wall']:.2f} s", flush=True)
    delete_sessions(bench, names)
    async with GatewayClient(url, token, request_timeout=120) as client:
        await wait_gateway_kernels(client, WARM)
    raw_after = await raw_parallel(url, token)
    print(f"   raw engine, {n} kernels: {raw_after:.2f} s", flush=True)
    raw = statistics.fmean([raw_before, raw_after])
    return {
        **sessions,
        "raw_before": raw_before,
        "raw_after": raw_after,
        "raw_s": raw,
        "ratio": sessions["wall"] / raw,
        "all_ready_s": all_ready,
        "failed_starts": failed,
    }


# report


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    started = time.monotonic()
    say("bench-sessions: starting a private local cluster and the operator")
    with bench_cluster() as bench:
        bench.keep_dir = os.environ.get("BENCH_KEEP") == "1"
        bench.namespace(NS)
        watch = bench.watch(NS, "notebooksessions")
        bench.create(NS, environment(ENV, replicas=1, maxKernelsPerPod=MAX_KERNELS, warmKernels=WARM))
        bench.wait_environment_warm(NS, ENV, WARM)
        url, token = retrying(lambda: gateway_address(bench))
        time.sleep(2)
        say(f"cluster up, environment {ENV} warm; work dir {bench.dir}")
        with profiled(bench.operator_pid(), "ready"):
            ready = bench_ready(bench, watch)
        with profiled(bench.operator_pid(), "overhead"):
            overhead = asyncio.run(bench_overhead(bench, watch, url, token))
        parallel = asyncio.run(bench_parallel(bench, watch, url, token))
    elapsed = time.monotonic() - started

    n, c = PARALLEL_SESSIONS, PARALLEL_CELLS
    rows = [
        (
            "create -> Ready (API create, watch), median",
            f"{ready['median']:.3f} s",
            "< 0.3 s",
            ready["median"] < 0.3,
        ),
        ("  min / max", f"{ready['min']:.3f} / {ready['max']:.3f} s", "", None),
        ("  create request itself, median", f"{ready['create_call_median'] * 1000:.1f} ms", "", None),
        ("  writes to a session until Ready (watch)", f"{ready['writes_to_ready']:.1f}", "", None),
        (
            "trivial cell through the user API, median (p90)",
            f"{overhead['api_ms']:.2f} ms ({overhead['api_p90_ms']:.2f})",
            "",
            None,
        ),
        (
            "  the same alone (not alternating): to the result / to cellFinished",
            f"{overhead['api_alone_ms']:.2f} / {overhead['api_finished_ms']:.2f} ms",
            "",
            None,
        ),
        (
            "  straight to the operator (no API server), median (p90)",
            f"{overhead['direct_ms']:.2f} ms ({overhead['direct_p90_ms']:.2f})",
            "",
            None,
        ),
        ("  status patches per cell", f"{overhead['status_patches_per_cell']:.2f}", "", None),
        (
            "same cell, raw engine on the pod, median (p90)",
            f"{overhead['raw_ms']:.2f} ms ({overhead['raw_p90_ms']:.2f})",
            "",
            None,
        ),
        (
            "per-cell overhead (user API - raw)",
            f"{overhead['overhead_ms']:.2f} ms",
            "<= 10 ms",
            overhead["overhead_ms"] <= 10,
        ),
        (
            f"{n} sessions created -> all Ready (failed starts replaced)",
            f"{parallel['all_ready_s']:.2f} s ({len(parallel['failed_starts'])})",
            "",
            None,
        ),
        (f"{n} sessions x {c} cells through the user API", f"{parallel['wall']:.2f} s", "", None),
        (
            "  one request, median / p90",
            f"{parallel['request_median'] * 1000:.1f} / {parallel['request_p90'] * 1000:.1f} ms",
            "",
            None,
        ),
        (
            f"raw engine, {n} kernels x {c} cells (before/after)",
            f"{parallel['raw_before']:.2f} / {parallel['raw_after']:.2f} s",
            "",
            None,
        ),
        ("sessions / raw", f"{parallel['ratio']:.2f}", "<= 1.5", parallel["ratio"] <= 1.5),
        (
            "  CPU s meanwhile: operator/apiserver/etcd",
            "/".join(
                f"{parallel['cpu'].get(k, float('nan')):.1f}" for k in ("operator", "kube-apiserver", "etcd")
            ),
            "",
            None,
        ),
        ("  API GET latency meanwhile, median", f"{parallel['api_latency_median'] * 1000:.0f} ms", "", None),
        (
            "  status patches (session writes) per cell",
            f"{parallel['status_patches_per_cell']:.2f} ({parallel['session_writes_per_cell']:.2f})",
            "",
            None,
        ),
    ]
    print()
    print(f"bench-sessions: {elapsed:.0f} s on {os.cpu_count()} cores, load average now {load_average()}")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measurement':{width}s}  {'value':{vwidth}s}  {'target':10s}  verdict")
    for label, value, target, ok in rows:
        print(f"{label:{width}s}  {value:{vwidth}s}  {target:10s}  {'' if ok is None else verdict(ok)}")
    for phase, counts in (("one session", overhead), (f"{n} sessions", parallel)):
        shown = ", ".join(f"{k} {v:g}" for k, v in counts["apiserver_requests_per_cell"].items())
        print(f"API server requests per cell, {phase}: {shown}")
    result = {
        "session_ready_s": round(ready["median"], 4),
        "session_cell_overhead_ms": round(overhead["overhead_ms"], 2),
        "parallel_32_sessions_ratio": round(parallel["ratio"], 3),
        "session_cell_ms": round(overhead["api_ms"], 2),
        "raw_cell_ms": round(overhead["raw_ms"], 2),
        "parallel_sessions_s": round(parallel["wall"], 2),
        "parallel_raw_s": round(parallel["raw_s"], 2),
        "direct_cell_ms": round(overhead["direct_ms"], 2),
        "parallel_failed_starts": len(parallel["failed_starts"]),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
