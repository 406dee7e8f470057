"""Everything the handlers share for the life of the operator process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from nbkube import metrics
from nbkube.config import Settings
from nbkube.environment.service import EnvironmentService
from nbkube.environment.tokens import GatewayTokens
from nbkube.gateways import GatewayRegistry
from nbkube.janitor import GatewayView, Janitor, JanitorSettings, RunView
from nbkube.kube import Kube
from nbkube.run.driver import RunService


@dataclass
class OperatorContext:
    settings: Settings
    kube: Kube
    registry: GatewayRegistry
    results: Any
    environments: EnvironmentService
    runs: RunService
    http: web.AppRunner | None = None
    janitor: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, logger: logging.Logger) -> OperatorContext:
        settings = Settings.from_env()
        kube = await Kube.connect()

        tokens = await GatewayTokens.load(kube, settings.namespace, settings.gateway_token_key_secret)
        registry = GatewayRegistry(
            tokens.token_for,
            port=settings.gateway_port,
            request_timeout=settings.gateway_request_timeout_seconds,
        )
        results = await _open_results(settings, logger)
        ctx = cls(
            settings=settings,
            kube=kube,
            registry=registry,
            results=results,
            environments=EnvironmentService(kube, settings, registry, tokens),
            runs=RunService(kube, settings, registry, results),
        )
        ctx.janitor = asyncio.create_task(_janitor(ctx).run_forever(), name="janitor")
        if settings.metrics_port:
            metrics.serve(settings.metrics_port)
        if results is not None and settings.results_port:
            ctx.http = await _serve_http(kube, results, settings)
        logger.info(
            "nbkube operator started: data in %s, metrics on :%s, results on :%s",
            settings.data_dir,
            settings.metrics_port,
            settings.results_port,
        )
        return ctx

    async def stop(self) -> None:
        if self.janitor is not None:
            self.janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.janitor
        if self.http is not None:
            await self.http.cleanup()
        await self.registry.close()
        if self.results is not None and hasattr(self.results, "close"):
            await self.results.close()
        await self.kube.close()


def _janitor(ctx: OperatorContext) -> Janitor:
    s = ctx.settings
    return Janitor(
        RunView(is_active=ctx.runs.is_active, held_kernels=ctx.runs.held_kernels),
        GatewayView(clients=ctx.registry.clients, in_use=ctx.registry.kernels_in_use),
        s.journal_dir,
        JanitorSettings(
            interval_seconds=s.janitor_interval_seconds,
            first_sweep_seconds=s.janitor_first_sweep_seconds,
            kernel_idle_seconds=s.orphan_kernel_idle_seconds,
            busy_kernel_seconds=s.busy_orphan_kernel_seconds,
            journal_grace_seconds=s.journal_grace_seconds,
            unknown_journal_seconds=s.unknown_journal_seconds,
        ),
    )


async def _open_results(settings: Settings, logger: logging.Logger) -> Any:
    from nbkube.results import ResultsStore

    store = ResultsStore(settings.results_dir)
    await store.open()
    return store


async def _serve_http(kube: Kube, store: Any, settings: Settings) -> web.AppRunner:
    """The operator's user-facing HTTP port: /results (git clone, files) and /logs (live outputs)."""
    from nbkube.results.http import results_http_app
    from nbkube.run.logs import logs_routes

    app = web.Application()
    app.add_subapp("/results", results_http_app(store))
    app.add_routes(logs_routes(kube, store, settings.journal_dir))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, settings.results_host, settings.results_port).start()
    return runner
