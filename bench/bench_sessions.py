"""NotebookSessions' numbers on the local control plane (`make bench-sessions`), with the real operator.

Starts its own cluster in a temp dir, installs the CRDs, RBAC and the user-facing APIService, runs the
operator under its ServiceAccount, creates one environment (replicas 1, maxKernelsPerPod 48, warmKernels
2) and measures, in the same run:

1. create -> Ready: a NotebookSession of one cell created by an API POST (what `kubectl apply` sends)
   on a warm environment (the pool holding a started kernel), until status.state Ready is seen on a
   watch (timestamped on arrival). Sequential repetitions, each after the pool refilled; each session
   is deleted after. Median (min, max).
2. per-cell overhead: a trivial cell (`1`) executed through the whole user-facing path, one request
   per cell: POST .../notebooksessions/NAME/execute to the kube-apiserver (client certificate, RBAC,
   the aggregator's proxy, the operator's front-proxy mTLS and its SubjectAccessReview) over one
   keep-alive HTTPS connection, timed to the result line of the NDJSON answer (the execution's commit
   included); against the same cell sent straight to the gateway's websocket by nbkube's engine, on a
   kernel of the same gateway pod. The two alternate cell by cell (the machine is shared); medians.
3. 32 sessions x 50 cells: 32 Ready sessions of 50 trivial cells each, every session executing its
   cells one request per cell (sessions in parallel, each one's requests in sequence), from the first
   request to the last result; against the raw engine running the same 32 x 50 cells, one cell at a
   time per kernel, on 32 kernels started beforehand on the same gateway pod, in parallel. The raw
   figure is the mean of one measurement before the sessions are created and one after they are
   deleted (they never share the pod's kernel limit).

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
import ssl
import statistics
import sys
import time
import warnings
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


def delete_sessions(bench: Bench, names: list[str]) -> None:
    for name in names:
        bench.api.delete(sessions_path(NS, name))


# the user-facing API, as a keep-alive HTTPS client with the admin kubeconfig's credentials


class UserApiClient:
    def __init__(self, user: ApiUser, connections: int) -> None:
        context = ssl.create_default_context(cafile=str(user.ca_file))
        if user.cert_file:
            context.load_cert_chain(str(user.cert_file), str(user.key_file) if user.key_file else None)
        self.server = user.server
        headers = {"Authorization": f"Bearer {user.token}"} if user.token else {}
        connector = aiohttp.TCPConnector(ssl=context, limit=connections, keepalive_timeout=300)
        self.http = aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=300)
        )

    async def close(self) -> None:
        await self.http.close()

    async def execute(self, session: str, cell_id: str) -> tuple[float, float, dict[str, Any]]:
        """(seconds to the cell's cellFinished event, seconds to the result, the result) of executing
        one cell of `session`, timed from just before the request."""
        url = self.server + paths.session_path(NS, session, "execute")
        body = json.dumps({"cellIds": [cell_id]}).encode()
        t0 = time.perf_counter()
        finished = float("nan")
        async with self.http.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
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


# 2. per-cell overhead


async def bench_overhead(bench: Bench, watch: RunWatch, url: str, token: str) -> dict[str, Any]:
    say(f"2. per-cell overhead: {OVERHEAD_CELLS} cells via the user API, {OVERHEAD_CELLS} raw, alternating")
    name = "overhead"
    bench.create(NS, session_body(name, [TRIVIAL]))
    await asyncio.to_thread(wait_ready, watch, [name], 120)
    assert bench.info is not None
    api = UserApiClient(ApiUser.admin(bench.info), connections=1)
    try:
        async with GatewayClient(url, token, request_timeout=120) as client:
            raw = await RawKernel.start(client)
            try:
                for _ in range(OVERHEAD_WARMUP):  # connections opened, first-call costs paid
                    await raw.execute(TRIVIAL)
                    await api.execute(name, "c0")
                raw_s, api_s, finished_s = [], [], []
                result: dict[str, Any] = {}
                for _ in range(OVERHEAD_CELLS):
                    raw_s.append(await raw.execute(TRIVIAL))
                    finished, done, result = await api.execute(name, "c0")
                    api_s.append(done)
                    finished_s.append(finished)
            finally:
                await raw.stop()
    finally:
        await api.close()
    outputs = result["cells"][0]["outputs"]
    if not outputs or outputs[0].get("data", {}).get("text/plain") != "1":
        raise RuntimeError(f"the session's cell did not answer 1: {outputs}")
    delete_sessions(bench, [name])
    raw_ms = statistics.median(raw_s) * 1000
    api_ms = statistics.median(api_s) * 1000
    return {
        "raw_ms": raw_ms,
        "api_ms": api_ms,
        "api_finished_ms": statistics.median(finished_s) * 1000,
        "api_p90_ms": sorted(api_s)[int(len(api_s) * 0.9)] * 1000,
        "raw_p90_ms": sorted(raw_s)[int(len(raw_s) * 0.9)] * 1000,
        "overhead_ms": api_ms - raw_ms,
        "execution_count": result.get("executionCount"),
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


async def sessions_parallel(bench: Bench, names: list[str]) -> dict[str, Any]:
    assert bench.info is not None
    api = UserApiClient(ApiUser.admin(bench.info), connections=len(names))
    latencies: list[float] = []
    try:
        # one request each first: every session's connection open (the raw kernels' are too)
        await asyncio.gather(*(api.execute(n, "c0") for n in names))
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
    finally:
        await api.close()
    latencies.sort()
    return {
        "wall": wall,
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
    await asyncio.to_thread(
        lambda: [bench.create(NS, session_body(name, parallel_cells())) for name in names]
    )
    ready_at = await asyncio.to_thread(wait_ready, watch, names, 600)
    all_ready = max(ready_at.values()) - t0
    print(f"   {n} sessions created and Ready after {all_ready:.2f} s", flush=True)
    with profiled(bench.operator_pid(), "parallel"):
        sessions = await sessions_parallel(bench, names)
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
        ("  to its cellFinished event, median", f"{overhead['api_finished_ms']:.2f} ms", "", None),
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
        (f"{n} sessions created -> all Ready", f"{parallel['all_ready_s']:.2f} s", "", None),
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
    ]
    print()
    print(f"bench-sessions: {elapsed:.0f} s on {os.cpu_count()} cores, load average now {load_average()}")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measurement':{width}s}  {'value':{vwidth}s}  {'target':10s}  verdict")
    for label, value, target, ok in rows:
        print(f"{label:{width}s}  {value:{vwidth}s}  {target:10s}  {'' if ok is None else verdict(ok)}")
    result = {
        "session_ready_s": round(ready["median"], 4),
        "session_cell_overhead_ms": round(overhead["overhead_ms"], 2),
        "parallel_32_sessions_ratio": round(parallel["ratio"], 3),
        "session_cell_ms": round(overhead["api_ms"], 2),
        "raw_cell_ms": round(overhead["raw_ms"], 2),
        "parallel_sessions_s": round(parallel["wall"], 2),
        "parallel_raw_s": round(parallel["raw_s"], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
