"""Everything the handlers share for the life of the operator process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from nbkube import metrics
from nbkube.config import Settings
from nbkube.environment.service import EnvironmentService
from nbkube.environment.tokens import GatewayTokens
from nbkube.janitor import GatewayView, Janitor, JanitorSettings, RunView
from nbkube.kernels import KernelRegistry
from nbkube.kube import Kube
from nbkube.run.service import RunService
from nbkube.schedule.service import ScheduleService
from nbkube.session.service import SessionService

if TYPE_CHECKING:
    from nbkube.results import ResultsRepositories


@dataclass
class OperatorContext:
    settings: Settings
    kube: Kube
    registry: KernelRegistry
    results: Any
    environments: EnvironmentService
    runs: RunService
    sessions: SessionService
    schedules: ScheduleService
    servers: list[web.AppRunner] = field(default_factory=list)
    user_api: asyncio.Task[None] | None = None
    janitor: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, logger: logging.Logger) -> OperatorContext:
        settings = Settings.from_env()
        kube = await Kube.connect()

        tokens = await GatewayTokens.load(kube, settings.namespace, settings.gateway_token_key_secret)
        registry = KernelRegistry(
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
            sessions=SessionService(kube, settings, registry, results, results)
            if results is not None
            else None,
            schedules=ScheduleService(kube, settings),
        )
        ctx.janitor = asyncio.create_task(_janitor(ctx).run_forever(), name="janitor")
        if settings.metrics_port:
            ctx.servers.append(await metrics.serve(settings.metrics_port, settings.metrics_host))
        if results is not None and settings.api_port:
            ctx.user_api = asyncio.create_task(_user_api(ctx, logger), name="user-api")
        logger.info(
            "nbkube operator started: data in %s, metrics on :%s, user API on :%s",
            settings.data_dir,
            settings.metrics_port,
            settings.api_port,
        )
        return ctx

    async def stop(self) -> None:
        for task in (self.janitor, self.user_api):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for runner in self.servers:
            await runner.cleanup()
        await self.registry.close()
        if self.results is not None and hasattr(self.results, "close"):
            await self.results.close()
        await self.kube.close()


def _any_active(ctx: OperatorContext) -> Callable[[str], bool | None]:
    """Whether the run or session of a journal's uid is live (None: neither is known)."""

    def is_active(uid: str) -> bool | None:
        run = ctx.runs.is_active(uid)
        return run if run is not None else ctx.sessions.is_active(uid)

    return is_active


def _held_kernels(ctx: OperatorContext) -> Callable[[], set[str]]:
    """Kernels held by unfinished runs and live sessions, as their status says."""

    def held() -> set[str]:
        return ctx.runs.held_kernels() | ctx.sessions.held_kernels()

    return held


def _janitor(ctx: OperatorContext) -> Janitor:
    s = ctx.settings
    return Janitor(
        RunView(is_active=_any_active(ctx), held_kernels=_held_kernels(ctx)),
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


USER_API_RETRY_SECONDS = 10.0


async def _user_api(ctx: OperatorContext, logger: logging.Logger) -> None:
    """Starts the user-facing API once the API server's front-proxy settings can be read (retrying, with
    an error in the log, while they cannot: runs go on meanwhile), then keeps it until stopped."""
    from nbkube.userapi.startup import start_user_api

    while True:
        try:
            ctx.servers.append(
                await start_user_api(ctx.kube, ctx.results, ctx.settings, logger, sessions=ctx.sessions)
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error(
                "the user-facing API (results, clones, logs) cannot start yet, retrying in %.0fs: %s",
                USER_API_RETRY_SECONDS,
                exc,
            )
            await asyncio.sleep(USER_API_RETRY_SECONDS)
