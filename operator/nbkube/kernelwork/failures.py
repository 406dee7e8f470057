"""Errors in the bookkeeping around kernel work (journal, status, checkpoints) become a failure with
a reason, never an exception escaping into the engine, where it would end a daemon without a word."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Failure:
    """Why kernel work cannot go on: a CamelCase reason and a message for the user."""

    reason: str
    message: str


class Failures:
    """The first failure of one piece of work; `happened` is set when there is one."""

    def __init__(self, label: str) -> None:
        self.label = label  # e.g. "namespace/name", for the operator's log
        self.first: Failure | None = None
        self.happened = asyncio.Event()

    def fail(self, reason: str, message: str) -> None:
        """Records a failure: the work stops at its next step and keeps what it did."""
        if self.first is None:
            log.error("%s: %s: %s", self.label, reason, message)
            self.first = Failure(reason, message[:MAX_MESSAGE_CHARS])
            self.happened.set()

    @contextlib.contextmanager
    def guard(self, reason: str, what: str) -> Iterator[None]:
        """Turns an error in the guarded step into a failure (see `fail`)."""
        try:
            yield
        except Exception as exc:
            log.exception("%s: %s failed", self.label, what)
            self.fail(reason, f"{what} failed: {type(exc).__name__}: {exc}")
