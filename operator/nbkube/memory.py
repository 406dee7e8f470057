"""Giving freed memory back to the system after a burst of large allocations.

A run's input files pass through the operator as megabytes of bytes objects (read from the API server,
framed for the kernel's websocket). Once freed, glibc keeps much of it in its heap (its mmap threshold
grows with the large blocks it saw), so the operator's RSS stayed ~12 MiB higher after a few 10 MiB runs.
malloc_trim(0) returns it; it walks the heap, so it runs in a worker thread, not awaited.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging

log = logging.getLogger(__name__)

TRIM_AFTER_BYTES = 1024 * 1024
"""Release freed memory after handling at least this much in one go."""


def _load() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _load()


def _trim() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def release_freed_memory(handled_bytes: int) -> None:
    """After `handled_bytes` passed through and were freed: trim the heap in the background (glibc only)."""
    if _LIBC is None or handled_bytes < TRIM_AFTER_BYTES:
        return
    asyncio.get_running_loop().run_in_executor(None, _trim).add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("malloc_trim failed: %s", future.exception())
