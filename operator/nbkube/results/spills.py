"""A run's spilled outputs in the repository: how much of them is kept, and where the bytes come from.

Spills of a run are capped at `max_spill_bytes_per_run` in all: taken in name order, each keeps what is
left of the cap, and one cut short ends with a `[nbkube: output truncated ...]` marker line;
`nbkube.json` records each one's original size (`SpillCut.info`). `cap_spills` is that decision, pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_SPILL_BYTES = 64 * 1024 * 1024
"""What a run's spills may hold in all, unless the store is given another cap."""


@dataclass(frozen=True)
class SpillCut:
    """How much of one spill the repository keeps: `stored` of its `size` bytes."""

    name: str
    size: int
    stored: int

    @property
    def truncated(self) -> bool:
        return self.stored < self.size

    def info(self) -> dict[str, Any]:
        """What `nbkube.json` says of it under `spills`."""
        return {"bytes": self.size, "stored": self.stored, "truncated": self.truncated}

    def marker(self, limit: int) -> bytes:
        """The line a truncated spill ends with."""
        return (
            f"\n[nbkube: output truncated: {self.stored} of {self.size} bytes kept; "
            f"the per-run spill limit is {limit} bytes]\n"
        ).encode()


def cap_spills(sizes: Mapping[str, int], limit: int) -> list[SpillCut]:
    """The spills named in `sizes` (name -> bytes), in name order, each with what it keeps of `limit`:
    the first ones are kept whole while the cap lasts, the one that passes it is cut, the rest keep
    nothing (a negative limit is taken as 0)."""
    budget = max(limit, 0)
    cuts = []
    for name in sorted(sizes):
        keep = min(sizes[name], budget)
        budget -= keep
        cuts.append(SpillCut(name, sizes[name], keep))
    return cuts


class SpillSource:
    """A spill given as bytes or as a file, read the same way whichever it is."""

    def __init__(self, source: bytes | bytearray | Path | str) -> None:
        """Blocking (a file's size is read here): call it in a thread."""
        if isinstance(source, bytes | bytearray):
            self._data: bytes | None = bytes(source)
            self._path: Path | None = None
            self.size = len(self._data)
        else:
            self._data = None
            self._path = Path(source).absolute()
            self.size = self._path.stat().st_size

    def head(self, size: int) -> bytes:
        """Its first `size` bytes (blocking)."""
        if self._data is not None:
            return self._data[:size]
        assert self._path is not None
        with self._path.open("rb") as f:
            return f.read(size)

    def whole(self) -> bytes:
        """All of it (blocking)."""
        if self._data is not None:
            return self._data
        assert self._path is not None
        return self._path.read_bytes()

    @property
    def git_path(self) -> Path | None:
        """The file git can hash and store as is (`hash-object --stdin-paths` takes one path a line), or
        None when the bytes must be written to a file first."""
        return self._path if self._path is not None and "\n" not in str(self._path) else None
