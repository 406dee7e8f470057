"""The nbkube.io/v1alpha1 API: pydantic models are the one source of truth.

The CRDs in crds/ are generated from these models (``python -m nbkube.api.crdgen``) and a test
keeps the committed files equal to the generator's output.
"""

from nbkube.api.common import Condition, ConditionStatus, Reason
from nbkube.api.environment import (
    EnvVar,
    NotebookEnvironmentSpec,
    NotebookEnvironmentStatus,
    ResourceRequirements,
)
from nbkube.api.run import (
    CellSpec,
    CellStatus,
    ConfigMapKeyRef,
    EnvironmentRef,
    KernelAttachment,
    NotebookRunSpec,
    NotebookRunStatus,
    NotebookSource,
    RunResult,
    SweepRow,
    SweepStatus,
    Timeouts,
)
from nbkube.api.states import TERMINAL_RUN_STATES, CellState, RunState

__all__ = [
    "TERMINAL_RUN_STATES",
    "CellSpec",
    "CellState",
    "CellStatus",
    "Condition",
    "ConditionStatus",
    "ConfigMapKeyRef",
    "EnvVar",
    "EnvironmentRef",
    "KernelAttachment",
    "NotebookEnvironmentSpec",
    "NotebookEnvironmentStatus",
    "NotebookRunSpec",
    "NotebookRunStatus",
    "NotebookSource",
    "Reason",
    "ResourceRequirements",
    "RunResult",
    "RunState",
    "SweepRow",
    "SweepStatus",
    "Timeouts",
]
