"""The values the results store takes and returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .layout import check_component, notebook_file, run_directory, run_path

_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


class InvalidNotebookError(ValueError):
    """The notebook is not valid nbformat (or not JSON at all)."""


class ReadLimitExceeded(ValueError):
    """A read would return more files or bytes than its caller's bounds (nothing was read)."""


class StoreLockedError(RuntimeError):
    """Another live process holds the results repository's writer lock."""


class StoreClosedError(RuntimeError):
    """The store is not open."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What identifies one NotebookRun attempt in the repository.

    `notebook` is the notebook's file name (".ipynb" is appended when missing); the executed notebook lands
    at `<namespace>/<directory>/<notebook>`. Any name Kubernetes accepts works: `directory` is the run's
    name, and it and `notebook` are mapped to safe names (`nbkube.names.safe_component`) when git or a
    clone would refuse them (`*.lock`, a leading ".", more than 255 bytes...). `state` is the run's state
    ("Running" for checkpoints, "Succeeded", "Failed", "Cancelled"...), `reason` its CamelCase reason,
    `progress` e.g. "12/40".
    """

    namespace: str
    name: str
    uid: str
    notebook: str
    environment: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    state: str = "Running"
    reason: str | None = None
    progress: str | None = None
    result_file: str | None = None
    """The file the result's path names when the run has no notebook of its own (a sweep's parent:
    `summary.json`); None: the executed notebook."""

    def __post_init__(self) -> None:
        check_component(self.namespace, "namespace")
        if not self.name or _BAD_NAME_CHARS.search(self.name):
            raise ValueError(f"invalid run name: {self.name!r}")
        if self.namespace.startswith(("_", ".")):
            raise ValueError(f"invalid run location {self.namespace!r}/{self.name!r}")
        if not _UID_RE.match(self.uid):
            raise ValueError(f"invalid run uid: {self.uid!r}")
        if not self.notebook or _BAD_NAME_CHARS.search(self.notebook):
            raise ValueError(f"invalid notebook file name: {self.notebook!r}")
        object.__setattr__(self, "notebook", notebook_file(self.notebook))
        if self.result_file is not None:
            check_component(self.result_file, "result file name")

    @property
    def directory(self) -> str:
        """The run's directory below its namespace's: its name, or a safe name standing for it."""
        return run_directory(self.name)

    @property
    def run_dir(self) -> str:
        return run_path(self.namespace, self.directory)

    @property
    def notebook_path(self) -> str:
        return run_path(self.namespace, self.directory, self.notebook)

    @property
    def result_path(self) -> str:
        """What the result's path names: the executed notebook, or `result_file` in the run's directory."""
        if self.result_file is None:
            return self.notebook_path
        return run_path(self.namespace, self.directory, self.result_file)

    def metadata(self, *, final: bool) -> dict[str, Any]:
        """What goes under `notebook.metadata["nbkube"]`."""
        return {
            "run": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "environment": self.environment,
            "parameters": dict(self.parameters),
            "attempt": self.attempt,
            "state": self.state,
            "reason": self.reason,
            "progress": self.progress,
            "final": final,
        }


@dataclass(frozen=True)
class CommitInfo:
    """Where a result landed: the commit id and the notebook's path in that commit (for the run's status)."""

    commit: str
    path: str


@dataclass(frozen=True)
class RunSummary:
    """One run directory at a given ref, as read from its `nbkube.json`: `name` is the run's name,
    `directory` the name of its directory (they differ for names mapped to a safe one)."""

    namespace: str
    name: str
    uid: str
    path: str
    state: str
    reason: str | None
    attempt: int
    final: bool
    environment: str
    parameters: Mapping[str, Any]
    committed_at: float
    spills: Mapping[str, Mapping[str, Any]]
    directory: str = ""


@dataclass(frozen=True)
class PruneResult:
    removed: list[str]
    commit: str | None
