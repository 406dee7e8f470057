"""When a running notebook commits a partial result (a checkpoint) to the results repository."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_EVERY_CELLS = 20
DEFAULT_EVERY_SECONDS = 30.0


@dataclass
class CheckpointPolicy:
    """Checkpoint every `every_cells` finished cells or every `every_seconds`, whichever comes first.

    A value of 0 disables that criterion. Time-based checkpoints only fire when at least one cell finished
    since the last checkpoint, so an idle run does not commit the same notebook again and again.
    Times are monotonic seconds (`time.monotonic()`), supplied by the caller so the policy stays pure.
    """

    every_cells: int = DEFAULT_EVERY_CELLS
    every_seconds: float = DEFAULT_EVERY_SECONDS
    _last_cells: int = field(default=0, init=False, repr=False)
    _last_time: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every_cells < 0 or self.every_seconds < 0:
            raise ValueError("checkpoint intervals cannot be negative")

    def start(self, now: float, cells_done: int = 0) -> None:
        """The run started (or resumed with `cells_done` cells already committed) at `now`."""
        self._last_cells = cells_done
        self._last_time = now

    def should_checkpoint(self, cells_done: int, now: float) -> bool:
        if self._last_time is None:
            self.start(now)
        assert self._last_time is not None
        new_cells = cells_done - self._last_cells
        if new_cells <= 0:
            return False
        if self.every_cells and new_cells >= self.every_cells:
            return True
        return bool(self.every_seconds) and now - self._last_time >= self.every_seconds

    def checkpointed(self, cells_done: int, now: float) -> None:
        """A checkpoint with `cells_done` cells was committed at `now`."""
        self.start(now, cells_done)
