"""Reclaims what an operator that died left behind: kernels no run holds, and journals of runs that are
finished or gone.

A run's kernel is released, and its journal removed, by the operator that drives it. When that
operator is killed at the wrong moment (after the final status, before the release; during the
journal's grace period; between starting a kernel and recording it in status), those are left over.
The gateway's idle culling would stop such kernels after its timeout; the journals would stay forever.
The janitor sweeps both periodically, keeping anything a live run might still use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nbkube.api.common import parse_timestamp
from nbkube.engine import EngineError, GatewayClient

log = logging.getLogger(__name__)

JOURNAL_SUFFIXES = (".jsonl", ".spill")


@dataclass(frozen=True)
class JanitorSettings:
    interval_seconds: float = 300.0
    first_sweep_seconds: float = 60.0
    """After start-up: time for the watch to report every run before anything is judged unknown."""
    kernel_idle_seconds: float = 120.0
    """A kernel with no connection is reclaimed only after this long without activity (one being
    started for a run has no connection for a moment)."""
    busy_kernel_seconds: float = 1800.0
    """A busy kernel (a cell left running) is reclaimed once sweeps have seen it held by no run and with
    nobody connected for this long."""
    journal_grace_seconds: float = 60.0
    """Journals of finished runs are kept this long after their last write (the /logs stream reads them)."""
    unknown_journal_seconds: float = 3600.0
    """Journals of runs the watch never reported (deleted while no operator ran) are kept this long."""


@dataclass(frozen=True)
class RunView:
    """What the janitor needs to know of the runs, from the operator's watch."""

    is_active: Callable[[str], bool | None]
    """uid -> True (not finished), False (finished), None (unknown)."""
    held_kernels: Callable[[], set[str]]
    """Kernel ids that runs (running, or waiting to be reattached) hold."""


@dataclass(frozen=True)
class GatewayView:
    """What the janitor needs to know of the gateway pods."""

    clients: Callable[[], Iterable[tuple[str, GatewayClient]]]
    """(pod name, client) for every known gateway pod."""
    in_use: Callable[[], set[str]]
    """Kernel ids this operator holds (leased to runs)."""


def orphaned_kernels(kernels: list[dict[str, object]], keep: set[str]) -> list[str]:
    """Ids of the kernels no run holds (not in keep) and nobody is connected to."""
    orphans = []
    for kernel in kernels:
        kernel_id = str(kernel.get("id") or "")
        connections = kernel.get("connections")
        if kernel_id and kernel_id not in keep and isinstance(connections, int) and connections == 0:
            orphans.append(kernel_id)
    return orphans


def reclaimable_kernels(
    kernels: list[dict[str, object]],
    orphaned_since: Mapping[str, float],
    idle_seconds: float,
    now: float,
    busy_seconds: float = math.inf,
) -> list[str]:
    """Orphaned kernels to shut down (orphaned_since: each orphan, with when a sweep first saw it so):
    idle ones after idle_seconds without activity, busy ones after busy_seconds orphaned."""
    reclaim = []
    for kernel in kernels:
        kernel_id = str(kernel.get("id") or "")
        if kernel_id not in orphaned_since:
            continue
        if kernel.get("execution_state") == "busy":
            if now - orphaned_since[kernel_id] >= busy_seconds:
                reclaim.append(kernel_id)
            continue
        last_activity = parse_timestamp(str(kernel.get("last_activity") or ""))
        if last_activity is not None and now - last_activity >= idle_seconds:
            reclaim.append(kernel_id)
    return reclaim


def journal_files(journal_dir: Path) -> list[tuple[Path, float]]:
    """(path, mtime) of the journal files and spill directories. Blocking: call it in a thread."""
    if not journal_dir.is_dir():
        return []
    files = []
    for path in journal_dir.iterdir():
        if path.suffix in JOURNAL_SUFFIXES:
            try:
                files.append((path, path.stat().st_mtime))
            except FileNotFoundError:
                continue
    return files


def reclaimable_journals(
    files: list[tuple[Path, float]],
    is_active: Callable[[str], bool | None],
    settings: JanitorSettings,
    now: float,
) -> list[Path]:
    """Those of `files` that belong to runs that are finished, or unknown for long enough."""
    reclaim = []
    for path, mtime in files:
        active = is_active(path.stem)
        if active:
            continue
        limit = settings.journal_grace_seconds if active is False else settings.unknown_journal_seconds
        if now - mtime >= limit:
            reclaim.append(path)
    return sorted(reclaim)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Janitor:
    def __init__(
        self, runs: RunView, gateways: GatewayView, journal_dir: Path, settings: JanitorSettings
    ) -> None:
        self.runs = runs
        self.gateways = gateways
        self.journal_dir = journal_dir
        self.settings = settings
        # pod -> kernel id -> when a sweep first saw that kernel orphaned
        self._orphaned_since: dict[str, dict[str, float]] = {}

    async def run_forever(self) -> None:
        await asyncio.sleep(self.settings.first_sweep_seconds)
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("janitor sweep failed; trying again in %ss", self.settings.interval_seconds)
            await asyncio.sleep(self.settings.interval_seconds)

    async def sweep(self) -> None:
        await self.sweep_kernels()
        await self.sweep_journals()

    async def sweep_kernels(self) -> int:
        reclaimed = 0
        settings = self.settings
        orphaned_since: dict[str, dict[str, float]] = {}
        for pod, client in list(self.gateways.clients()):
            seen = self._orphaned_since.get(pod, {})
            try:
                kernels = await client.list_kernels()
            except EngineError as exc:
                log.debug("janitor: cannot list kernels on %s: %s", pod, exc)
                orphaned_since[pod] = seen  # a pod out of reach for a sweep keeps its orphans' clocks
                continue
            # Read what is held after listing: a kernel leased meanwhile is then in the set.
            keep = self.gateways.in_use() | self.runs.held_kernels()
            now = time.time()
            orphans = {k: seen.get(k, now) for k in orphaned_kernels(kernels, keep)}
            for kernel_id in reclaimable_kernels(
                kernels, orphans, settings.kernel_idle_seconds, now, settings.busy_kernel_seconds
            ):
                try:
                    await client.delete_kernel(kernel_id)
                except EngineError as exc:
                    log.debug("janitor: kernel %s on %s: %s", kernel_id, pod, exc)
                    continue
                reclaimed += 1
                del orphans[kernel_id]
                log.info("janitor: shut down kernel %s on %s, which no run holds", kernel_id, pod)
            orphaned_since[pod] = orphans
        # A kernel held or connected again, or gone (or its pod), starts afresh if ever orphaned again.
        self._orphaned_since = orphaned_since
        return reclaimed

    async def sweep_journals(self) -> int:
        files = await asyncio.to_thread(journal_files, self.journal_dir)
        # Decided here, on the event loop, where the watch updates what is_active reads.
        paths = reclaimable_journals(files, self.runs.is_active, self.settings, time.time())
        for path in paths:
            await asyncio.to_thread(_remove, path)
            log.info("janitor: removed %s of a run that is finished or gone", path.name)
        return len(paths)
