"""Prometheus metrics, named after controller-runtime's with an nbkube_ prefix."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from nbkube import __version__

REGISTRY = CollectorRegistry(auto_describe=True)

reconcile_total = Counter(
    "nbkube_reconcile_total",
    "Reconciliations by controller and result.",
    ["controller", "result"],
    registry=REGISTRY,
)
reconcile_time = Histogram(
    "nbkube_reconcile_time_seconds",
    "Time a reconciliation took.",
    ["controller"],
    registry=REGISTRY,
)
cell_duration = Histogram(
    "nbkube_cell_duration_seconds",
    "Wall time of executed cells.",
    ["state"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
    registry=REGISTRY,
)
runs = Gauge("nbkube_runs", "NotebookRuns known to the operator, by state.", ["state"], registry=REGISTRY)
kernels = Gauge(
    "nbkube_kernels",
    "Kernels held by the operator, by environment and state (warm, busy).",
    ["environment", "state"],
    registry=REGISTRY,
)
status_patches = Counter(
    "nbkube_status_patches_total", "Status patches written for NotebookRuns.", registry=REGISTRY
)
build_info = Info("nbkube_build", "nbkube build information.", registry=REGISTRY)
build_info.info({"version": __version__})


async def serve(port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Serves /metrics on the operator's event loop: idle connections cost no thread (prometheus_client's
    own server takes one per connection)."""

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=30)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
