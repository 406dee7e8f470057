"""Everything the handlers share for the life of the operator process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nbkube import metrics
from nbkube.config import Settings
from nbkube.environment.objects import token_secret_name
from nbkube.environment.service import EnvironmentService
from nbkube.gateways import GatewayRegistry, decode_token
from nbkube.janitor import GatewayView, Janitor, JanitorSettings, RunView
from nbkube.kube import Kube, resource_path
from nbkube.run.driver import RunService

if TYPE_CHECKING:
    from nbkube.results import ResultsRepositories


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

        async def read_token(namespace: str, environment: str) -> str | None:
            secret = await kube.get_or_none(
                resource_path("v1", "secrets", namespace, token_secret_name(environment))
            )
            return decode_token(secret) if secret else None

        registry = GatewayRegistry(
            read_token, port=settings.gateway_port, request_timeout=settings.gateway_request_timeout_seconds
        )
        results = await _open_results(settings, logger)
        ctx = cls(
            settings=settings,
            kube=kube,
            registry=registry,
            results=results,
            environments=EnvironmentService(kube, settings, registry),
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


async def _open_results(settings: Settings, logger: logging.Logger) -> ResultsRepositories:
    """One results repository per namespace below the results directory (a single repository of an
    earlier version is migrated on open)."""
    from nbkube.results import ResultsRepositories

    repositories = ResultsRepositories(settings.results_dir)
    await repositories.open()
    logger.info(
        "results: %d namespace repositories in %s", len(repositories.namespaces()), settings.results_dir
    )
    return repositories


async def _serve_http(kube: Kube, results: ResultsRepositories, settings: Settings) -> web.AppRunner:
    """The operator's user-facing HTTP port: /results/files/<namespace>/... and /logs (live outputs)."""
    from nbkube.run.logs import logs_routes

    app = web.Application()
    app.add_routes([web.get("/results/files/{namespace}/{rest:.+}", _results_file_handler(results))])
    app.add_routes(logs_routes(kube, results, settings.journal_dir))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, settings.results_host, settings.results_port).start()
    return runner


def _results_file_handler(results: ResultsRepositories) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Interim, until the per-namespace HTTP layer (nbkube.results.http) lands: `GET /results/files/<path>
    ?ref=<commit>` answered from the repository of the namespace `<path>` starts with (what `nbkube fetch`
    asks for). git clone over HTTP is not served here meanwhile."""

    async def handler(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        path = f"{namespace}/{request.match_info['rest']}"
        ref = request.query.get("ref", "HEAD")
        store = await results.repository(namespace)
        try:
            commit = await store.resolve(ref) if store is not None else None
            stat = await store.stat_file(path, commit) if store is not None and commit else None
            data = await store.read_file(path, commit) if store is not None and commit and stat else None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc
        except FileNotFoundError:
            data = None
        if data is None or stat is None or commit is None:
            raise web.HTTPNotFound(text=f"{path} not found at {ref}\n")
        content_type = "application/x-ipynb+json" if path.endswith(".ipynb") else "application/octet-stream"
        headers = {"X-Nbkube-Commit": commit, "ETag": f'"{stat[0]}"'}
        return web.Response(body=data, headers=headers, content_type=content_type)

    return handler
