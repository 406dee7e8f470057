"""How a run ends: the terminal state, reason and message, decided from what happened."""

from __future__ import annotations

from dataclasses import dataclass

from nbkube.api import Reason, RunState


@dataclass(frozen=True)
class Outcome:
    state: RunState
    reason: str
    message: str

    @property
    def retryable(self) -> bool:
        """Only infrastructure failures are retried, never a failing cell."""
        return self.reason in (Reason.KERNEL_DIED, Reason.GATEWAY_LOST)


def succeeded(cells: int) -> Outcome:
    return Outcome(RunState.SUCCEEDED, Reason.SUCCEEDED, f"{cells} cell(s) executed")


def failed(reason: str, message: str) -> Outcome:
    return Outcome(RunState.FAILED, reason, message)


def cancelled(message: str = "cancelled by spec.cancel") -> Outcome:
    return Outcome(RunState.CANCELLED, Reason.CANCELLED, message)
