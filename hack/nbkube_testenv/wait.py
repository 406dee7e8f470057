"""Waiting for a condition of an eventually consistent system, with a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_for(check: Callable[[], T], what: str, timeout: float = 120, interval: float = 0.2) -> T:
    """Calls check until it returns something truthy and returns that; fails naming `what` (and the last
    value seen) once timeout seconds have passed. The timeout guards against hangs, it is no assertion
    about speed."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise WaitTimeout(f"gave up waiting for {what} after {timeout:.0f}s (last: {last!r})")
        time.sleep(interval)
