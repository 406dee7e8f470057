"""Pieces shared by both resources: the camelCase base model and Kubernetes-style conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields in a spec are an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    # Status is written by us but read back from the API server, which may carry fields an
    # older or newer operator wrote: tolerate them instead of crashing on read.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """CamelCase reasons used in conditions and events."""

    # NotebookRun
    PENDING = "Pending"
    WAITING_FOR_ENVIRONMENT = "WaitingForEnvironment"
    WAITING_FOR_KERNEL = "WaitingForKernel"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    CELL_ERROR = "CellError"
    TIMED_OUT = "TimedOut"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    KERNEL_DIED = "KernelDied"
    GATEWAY_LOST = "GatewayLost"
    KERNEL_LIMIT_REACHED = "KernelLimitReached"
    CANCELLED = "Cancelled"
    ENVIRONMENT_NOT_FOUND = "EnvironmentNotFound"
    ENVIRONMENT_NOT_ALLOWED = "EnvironmentNotAllowed"
    INVALID_NOTEBOOK = "InvalidNotebook"
    INVALID_SPEC = "InvalidSpec"
    NOTEBOOK_NOT_FOUND = "NotebookNotFound"
    INPUT_NOT_FOUND = "InputNotFound"
    INPUTS_TOO_LARGE = "InputsTooLarge"
    SETUP_FAILED = "SetupFailed"
    SWEEP_RUNNING = "SweepRunning"
    SOME_CHILDREN_FAILED = "ChildRunsFailed"
    RESULTS_NOT_COMMITTED = "ResultsNotCommitted"
    JOURNAL_NOT_WRITTEN = "JournalNotWritten"
    STATUS_NOT_UPDATED = "StatusNotUpdated"
    OPERATOR_ERROR = "OperatorError"
    # NotebookEnvironment
    GATEWAYS_READY = "GatewaysReady"
    GATEWAYS_NOT_READY = "GatewaysNotReady"
    ROLLING_OUT = "RollingOut"
    CHILD_CONFLICT = "ChildConflict"
    PACKAGES_FAILED = "PackagesFailed"
    # sessions
    STARTING = "Starting"
    KERNEL_READY = "KernelReady"
    IDLE_TIMEOUT = "IdleTimeout"
    LIFETIME_EXCEEDED = "LifetimeExceeded"
    FORK_NOT_FOUND = "ForkNotFound"
    KERNEL_RESTARTED = "KernelRestarted"
    # NotebookSchedule
    SCHEDULED = "Scheduled"
    SUSPENDED = "Suspended"


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 / ISO 8601 time (a missing zone means UTC); None for
    nothing or something unreadable."""
    if not value:
        return None
    try:
        then = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (then if then.tzinfo is not None else then.replace(tzinfo=UTC)).timestamp()


class Condition(StatusModel):
    """A metav1.Condition."""

    type: str = Field(max_length=316)
    status: ConditionStatus
    reason: str = Field(max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str | None = None
    observed_generation: int | None = Field(None, ge=0)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
) -> list[Condition]:
    """Returns the conditions with ``type_`` set; lastTransitionTime moves only when status changes."""
    previous = get_condition(conditions, type_)
    unchanged = previous is not None and previous.status == status
    condition = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=previous.last_transition_time if unchanged and previous else now_rfc3339(),
        observed_generation=observed_generation,
    )
    if previous is None:
        return [*conditions, condition]
    return [condition if c.type == type_ else c for c in conditions]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def validation_message(exc: ValidationError, prefix: str = "spec") -> str:
    """One readable line per pydantic error, with the field path as users write it in YAML."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{prefix}.{loc}: {err['msg']}" if loc else f"{prefix}: {err['msg']}")
    return "; ".join(parts)[:2000]
