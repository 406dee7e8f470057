"""NotebookRun: one execution of a notebook (or a sweep of them) in a NotebookEnvironment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

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
from nbkube.api.pod import DNS_SUBDOMAIN
from nbkube.api.states import CellState, RunState
from nbkube.run.values import MAX_NOTES, MAX_VALUES

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CELL_ID_PATTERN = r"^[a-zA-Z0-9-_]+$"
REPO_PATH_PATTERN = r"^[^/][^\\]*\.ipynb$"
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_SWEEP_SIZE = 256
MAX_PARAMETERS = 128

_IMMUTABLE: JsonDict = {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}]}


class EnvironmentRef(ApiModel):
    # Any NotebookEnvironment's name (a DNS subdomain: dots too); over 63 characters it is InvalidSpec.
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    namespace: str | None = Field(
        None,
        max_length=63,
        description="Must be the run's own namespace if set: runs may not use other namespaces' kernels.",
    )


class ConfigMapKeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class CellSpec(ApiModel):
    """An inline notebook cell."""

    id: str | None = Field(None, min_length=1, max_length=64, pattern=CELL_ID_PATTERN)
    cell_type: Literal["code", "markdown", "raw"] = "code"
    source: str = Field(max_length=1_000_000)
    tags: list[str] = Field(default_factory=list, max_length=32)


class NotebookSource(ApiModel):
    """Where the notebook comes from: exactly one of cells, configMapRef or repoPath."""

    cells: list[CellSpec] | None = Field(None, max_length=2000)
    config_map_ref: ConfigMapKeyRef | None = None
    repo_path: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        pattern=REPO_PATH_PATTERN,
        description="Path of an .ipynb in the results repository.",
    )
    name: str | None = Field(
        None,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+\.ipynb$",
        description="File name of the executed notebook in the results repository.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> NotebookSource:
        given = [x is not None for x in (self.cells, self.config_map_ref, self.repo_path)]
        if sum(given) != 1:
            raise ValueError(
                "exactly one of notebook.cells, notebook.configMapRef, notebook.repoPath is required"
            )
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "[has(self.cells), has(self.configMapRef), has(self.repoPath)]"
                ".filter(x, x).size() == 1",
                "message": "exactly one of cells, configMapRef, repoPath is required",
            }
        ]

    def file_name(self) -> str:
        if self.name:
            return self.name
        if self.config_map_ref is not None:
            key = self.config_map_ref.key
            return key if key.endswith(".ipynb") else f"{key}.ipynb"
        if self.repo_path is not None:
            return self.repo_path.rsplit("/", 1)[-1]
        return "notebook.ipynb"


class Timeouts(ApiModel):
    cell_seconds: int = Field(
        600,
        ge=1,
        le=7 * 86400,
        description="A cell running longer is interrupted and the run ends TimedOut; with allowErrors "
        "the interrupted cell keeps its error output and the run goes on with the next cell.",
    )
    run_seconds: int | None = Field(
        None, ge=1, le=30 * 86400, description="Deadline of the whole run, all attempts included."
    )


class NotebookRunSpec(ApiModel):
    """One execution of a notebook, or a sweep over a parameter matrix."""

    environment_ref: EnvironmentRef = Field(json_schema_extra=_IMMUTABLE)
    notebook: NotebookSource = Field(json_schema_extra=_IMMUTABLE)
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_PARAMETERS,
        description="Injected after the cell tagged 'parameters', as papermill does.",
        json_schema_extra=_IMMUTABLE,
    )
    # No CEL rules over parameters' or matrix' keys: CEL cannot range over free-form maps, so the
    # identifier check on their keys happens in the operator (InvalidSpec). Nor can an immutability
    # rule type the matrix (the API server refuses it): the sweep driver keeps the started matrix.
    matrix: dict[str, Annotated[list[Any], Field(min_length=1, max_length=256)]] = Field(
        default_factory=dict,
        max_length=16,
        description="Each combination of these values becomes a child run. Fixed once the sweep has "
        "started: later changes are ignored, with a MatrixChanged warning event.",
    )
    parallelism: int = Field(4, ge=1, le=64, description="Child runs of a sweep running at once.")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: int = Field(
        1, ge=0, le=10, description="Fresh attempts after a kernel death or a lost gateway pod."
    )
    allow_errors: bool = Field(
        False,
        description="Keep going after a failing cell or one interrupted at timeouts.cellSeconds; the run "
        "still succeeds. A cell that only a kernel restart could stop still ends the run: its state is lost.",
    )
    cancel: bool = Field(False, description="Set to true to interrupt the run; it ends Cancelled.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=365 * 86400)
    files: list[InputFiles] = Field(
        default_factory=list,
        max_length=MAX_FILE_SOURCES,
        description="Files placed in the run's working directory (a fresh one per run) before its first "
        "cell.",
        json_schema_extra=_IMMUTABLE,
    )
    env: list[RunEnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Environment variables set in the run's kernel only, resolved at run start.",
        json_schema_extra=_IMMUTABLE,
    )

    @model_validator(mode="after")
    def _check(self) -> NotebookRunSpec:
        check_unique_env(self.env)
        check_parameter_names([*self.parameters, *self.matrix])
        for key, values in self.matrix.items():
            if not values:
                raise ValueError(f"matrix.{key} must list at least one value")
        if len({*self.parameters, *self.matrix}) > MAX_PARAMETERS:
            raise ValueError(
                f"parameters and matrix together name more than {MAX_PARAMETERS} parameters: "
                "a sweep's child runs take them all as parameters"
            )
        if self.sweep_size() > MAX_SWEEP_SIZE:
            raise ValueError(f"matrix expands to {self.sweep_size()} runs, more than {MAX_SWEEP_SIZE}")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || self.cancel",
                "message": "a cancelled run cannot be resumed",
                "fieldPath": ".cancel",
            },
            ENV_UNIQUE_RULE,
        ]

    def sweep_size(self) -> int:
        size = 1
        for values in self.matrix.values():
            size *= len(values)
        return size if self.matrix else 0

    def is_sweep(self) -> bool:
        return bool(self.matrix)


def check_parameter_names(names: Iterable[str]) -> None:
    """Parameters become Python assignments in the notebook: their names must be identifiers."""
    for key in names:
        if key.lower() in ("true", "false"):
            raise ValueError(
                f"parameter name {key!r}: YAML reads unquoted keys such as n, y, no, yes, off and on as "
                "booleans; quote the name"
            )
        if not _is_identifier(key):
            raise ValueError(f"parameter name {key!r} is not a valid identifier")


def _is_identifier(name: str) -> bool:
    import keyword

    return name.isidentifier() and not keyword.iskeyword(name) and name.isascii()


class CellStatus(StatusModel):
    index: int = Field(ge=0)
    id: str = Field(max_length=64)
    state: CellState
    execution_count: int | None = None
    duration_ms: int | None = Field(None, ge=0)
    summary: str | None = Field(None, max_length=512, description="Short output or error summary.")


class KernelAttachment(StatusModel):
    """What a restarted operator needs to pick up a running cell where it left off."""

    pod: str
    address: str
    kernel_id: str
    session_id: str
    cell_index: int | None = None
    msg_id: str | None = None


class RunResult(StatusModel):
    commit: str
    path: str
    final: bool = True


class SweepRow(StatusModel):
    """One child run of a sweep in its parent's table."""

    name: str = Field(description="The child run.")
    index: int = Field(ge=0, description="Its place in the matrix' combinations.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Its combination of the matrix (strings cut to 64 characters)."
    )
    state: str = Field(
        description="Pending (also: not created yet), Running, Succeeded, Failed or Cancelled."
    )
    reason: str | None = None
    message: str | None = Field(None, max_length=256, description="Why it failed, when it did (cut).")
    duration: str | None = None
    seconds: int | None = Field(None, ge=0, description="Its duration in whole seconds, once it ended.")
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Its recorded values (status.values of the child) among sweep.valueNames, strings cut "
        "to 64 characters.",
    )


class SweepStatus(StatusModel):
    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    children: list[str] = Field(default_factory=list, max_length=256)
    parameter_names: list[str] = Field(
        default_factory=list, max_length=16, description="The matrix' keys: the table's parameter columns."
    )
    value_names: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Names the children recorded, in the order first seen: the table's value columns.",
    )
    rows: list[SweepRow] = Field(
        default_factory=list,
        max_length=256,
        description="The sweep's table, one row per child in matrix order (`nbkube sweep` prints it; the "
        "whole table is summary.csv and summary.json in the results repository once the sweep ended).",
    )
    rows_omitted: int = Field(0, ge=0, description="Rows left out to keep the status small.")


class NotebookRunStatus(StatusModel):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    state: RunState | None = None
    reason: str | None = None
    message: str | None = Field(None, max_length=4096)
    attempt: int = Field(0, ge=0)
    start_time: str | None = None
    completion_time: str | None = None
    duration: str | None = None
    progress: str | None = None
    cells_total: int | None = None
    cells_done: int | None = None
    cells_omitted: int = Field(0, ge=0, description="Cell entries left out to keep the status small.")
    cells: list[CellStatus] = Field(default_factory=list, max_length=1000)
    kernel: KernelAttachment | None = None
    result: RunResult | None = None
    sweep: SweepStatus | None = None
    values: dict[str, Any] | None = Field(
        None,
        max_length=MAX_VALUES,
        description="The values the executed notebook recorded (scrapbook's glue, or the same display "
        "output written by hand): numbers, bools and strings of at most 256 characters.",
    )
    values_omitted: int | None = Field(
        None, ge=0, description="Recorded names left out of values (too many, too long, not a scalar)."
    )
    value_notes: list[str] | None = Field(
        None, max_length=MAX_NOTES, description="What was cut or left out of values, and why."
    )
