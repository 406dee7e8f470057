"""NotebookSession: a live kernel that an agent or a person drives cell by cell, every change a commit.

The session holds one kernel of its environment from Ready until it is deleted, idle for
`idleTimeoutSeconds` or older than `maxLifetimeSeconds`. Its notebook lives on its own branch of the
namespace's results repository; every completed edit or execution is one commit there. Operations
(edit, execute, interrupt, restart, state, read) go through the user API (`nbkube session ...`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from nbkube.api.common import ApiModel, Condition, StatusModel
from nbkube.api.inputs import (
    ENV_UNIQUE_RULE,
    MAX_ENV,
    MAX_FILE_SOURCES,
    InputFiles,
    RunEnvVar,
    check_unique_env,
)
from nbkube.api.run import (
    MAX_PARAMETERS,
    NAME_PATTERN,
    REPO_PATH_PATTERN,
    CellSpec,
    CellStatus,
    ConfigMapKeyRef,
    EnvironmentRef,
    KernelAttachment,
    check_parameter_names,
)

_IMMUTABLE: JsonDict = {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}]}
COMMIT_PATTERN = r"^[0-9a-f]{7,64}$"
DEFAULT_IDLE_TIMEOUT_SECONDS = 1800
DEFAULT_EXECUTION_TIMEOUT_SECONDS = 600
MAX_SESSION_CELLS = 2000


class SessionState(StrEnum):
    """A one-word summary of a NotebookSession's Ready condition, for printer columns and the CLI."""

    PENDING = "Pending"
    READY = "Ready"
    ENDED = "Ended"


class KernelState(StrEnum):
    """The session's kernel as its last operation left it."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"
    DEAD = "dead"


class ForkSource(ApiModel):
    """A commit of another session or of a run of the same namespace to start from: exactly one of
    session or run."""

    session: str | None = Field(None, min_length=1, max_length=253, pattern=NAME_PATTERN)
    run: str | None = Field(None, min_length=1, max_length=253, pattern=NAME_PATTERN)
    commit: str | None = Field(
        None,
        pattern=COMMIT_PATTERN,
        description="A commit of the session's branch (default: its head); runs use their final result.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ForkSource:
        if (self.session is None) == (self.run is None):
            raise ValueError("exactly one of notebook.fork.session, notebook.fork.run is required")
        if self.run is not None and self.commit is not None:
            raise ValueError("notebook.fork.commit applies to a session; a run forks from its result")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "has(self.session) != has(self.run)",
                "message": "exactly one of session, run is required",
            },
            {"rule": "!has(self.run) || !has(self.commit)", "message": "commit applies to a session"},
        ]


class SessionNotebook(ApiModel):
    """What the session's notebook starts as: at most one of cells, configMapRef, repoPath or fork
    (none: an empty notebook)."""

    cells: list[CellSpec] | None = Field(None, max_length=MAX_SESSION_CELLS)
    config_map_ref: ConfigMapKeyRef | None = None
    repo_path: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        pattern=REPO_PATH_PATTERN,
        description="Path of an .ipynb in the namespace's results repository.",
    )
    fork: ForkSource | None = None
    name: str = Field(
        "notebook.ipynb",
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+\.ipynb$",
        description="File name of the session's notebook on its branch.",
    )

    @model_validator(mode="after")
    def _at_most_one(self) -> SessionNotebook:
        given = [x is not None for x in (self.cells, self.config_map_ref, self.repo_path, self.fork)]
        if sum(given) > 1:
            raise ValueError("at most one of notebook.cells, configMapRef, repoPath, fork may be given")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "[has(self.cells), has(self.configMapRef), has(self.repoPath), has(self.fork)]"
                ".filter(x, x).size() <= 1",
                "message": "at most one of cells, configMapRef, repoPath, fork may be given",
            }
        ]


class NotebookSessionSpec(ApiModel):
    """A live kernel of an environment, with a notebook driven cell by cell."""

    environment_ref: EnvironmentRef = Field(json_schema_extra=_IMMUTABLE)
    notebook: SessionNotebook = Field(default_factory=SessionNotebook, json_schema_extra=_IMMUTABLE)
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_PARAMETERS,
        description="Injected after the cell tagged 'parameters' of the starting notebook, as runs do.",
        json_schema_extra=_IMMUTABLE,
    )
    files: list[InputFiles] = Field(
        default_factory=list,
        max_length=MAX_FILE_SOURCES,
        description="Files placed in the session's working directory before the kernel is Ready.",
        json_schema_extra=_IMMUTABLE,
    )
    env: list[RunEnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Environment variables set in the session's kernel only.",
        json_schema_extra=_IMMUTABLE,
    )
    idle_timeout_seconds: int = Field(
        DEFAULT_IDLE_TIMEOUT_SECONDS,
        ge=10,
        le=30 * 86400,
        description="The session ends (its kernel goes, its history stays) after this long without an "
        "operation.",
    )
    max_lifetime_seconds: int | None = Field(
        None, ge=10, le=365 * 86400, description="The session ends this long after it started."
    )
    execution_timeout_seconds: int = Field(
        DEFAULT_EXECUTION_TIMEOUT_SECONDS,
        ge=1,
        le=7 * 86400,
        description="Default limit of one execution (an operation may ask for less); a cell running "
        "longer is interrupted.",
    )

    @model_validator(mode="after")
    def _check(self) -> NotebookSessionSpec:
        check_unique_env(self.env)
        check_parameter_names(self.parameters)
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [ENV_UNIQUE_RULE]


class SessionKernel(KernelAttachment):
    """The session's kernel: where it is (to reattach after an operator restart) and its state."""

    state: KernelState = KernelState.STARTING


class NotebookSessionStatus(StatusModel):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    state: SessionState | None = None
    reason: str | None = None
    message: str | None = Field(None, max_length=4096)
    start_time: str | None = None
    end_time: str | None = None
    last_activity_time: str | None = None
    kernel: SessionKernel | None = None
    execution_count: int = Field(0, ge=0, description="The kernel's execution count.")
    operations: int = Field(0, ge=0, description="Operations completed.")
    branch: str | None = Field(
        None, description="The session's branch of the namespace's results repository."
    )
    path: str | None = Field(None, description="The notebook's path on the branch.")
    head: str | None = Field(None, description="The branch's head commit: the notebook as it is now.")
    cells_total: int | None = None
    cells_omitted: int = Field(0, ge=0, description="Cell entries left out to keep the status small.")
    cells: list[CellStatus] = Field(default_factory=list, max_length=1000)
