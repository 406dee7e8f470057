"""NotebookSchedule: NotebookRuns on a cron schedule, as a CronJob creates Jobs.

The semantics are CronJob's (kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/): `schedule`
in cron syntax with an optional `timeZone`, `suspend`, `startingDeadlineSeconds`,
`concurrencyPolicy` (Allow, Forbid, Replace) and history limits; the run template is a NotebookRun
spec. A run is named after the schedule and its scheduled time, so no scheduled time ever gets two.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from nbkube.api.common import ApiModel, Condition, StatusModel
from nbkube.api.run import PARAMETER_NAME_PATTERN, NotebookRunSpec, check_parameter_names

# Five cron fields (minute hour day-of-month month day-of-week, with names, ranges, steps, lists, ? and
# the L/W/# forms), six with the test-only seconds field first, or a macro. The operator's cron parser
# (croniter) judges the values; this pattern keeps other text (e.g. `TZ=...`, which CronJob refuses
# too: use timeZone) out at the API server.
_FIELD = r"[0-9A-Za-z*?,/#-]+"
SCHEDULE_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|" + _FIELD + r"( +" + _FIELD + r"){4,5})$"
)
TIME_ZONE_PATTERN = r"^[A-Za-z][-+A-Za-z0-9_]*(/[-+A-Za-z0-9_]+)*$"
DEFAULT_SUCCESSFUL_HISTORY = 3
DEFAULT_FAILED_HISTORY = 1


class RunTemplate(ApiModel):
    """The NotebookRun each scheduled time creates."""

    spec: NotebookRunSpec


class NotebookScheduleSpec(ApiModel):
    """A NotebookRun created at each time of a cron schedule."""

    schedule: str = Field(
        min_length=1,
        max_length=256,
        pattern=SCHEDULE_PATTERN,
        description="Cron syntax as CronJob takes it: five fields (minute hour day-of-month month "
        "day-of-week, e.g. '0 6 * * *' or '*/15 9-17 * * MON-FRI') or a macro (@yearly, @annually, "
        "@monthly, @weekly, @daily, @midnight, @hourly). A six-field form with seconds first exists for "
        "tests only (the operator's NBKUBE_SCHEDULE_SECONDS_FIELD); without it such a schedule is "
        "InvalidSpec.",
    )
    time_zone: str | None = Field(
        None,
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="An IANA time zone (e.g. Europe/Berlin) the schedule is read in; UTC when unset. "
        "A name the operator's zone database does not know is InvalidSpec.",
    )
    suspend: bool = Field(
        False,
        description="No new runs while true (running ones go on). Times passed while suspended count as "
        "missed: on resume the most recent one runs, unless startingDeadlineSeconds has passed.",
    )
    starting_deadline_seconds: int | None = Field(
        None,
        ge=0,
        le=31_536_000,
        description="A scheduled time not started within this many seconds (the operator was down, the "
        "schedule suspended, a Forbid run still active) is skipped; unset: it starts late, whenever it can.",
    )
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        "Allow",
        description="When a run of this schedule is still active at the next time: Allow starts another, "
        "Forbid starts none until it ends (the time is missed: see startingDeadlineSeconds), Replace "
        "cancels it and starts the new one.",
    )
    successful_runs_history_limit: int = Field(
        DEFAULT_SUCCESSFUL_HISTORY,
        ge=0,
        le=1000,
        description="Succeeded runs kept; older ones are deleted (their results stay in the repository).",
    )
    failed_runs_history_limit: int = Field(
        DEFAULT_FAILED_HISTORY,
        ge=0,
        le=1000,
        description="Failed and cancelled runs kept; older ones are deleted.",
    )
    scheduled_time_parameter: str | None = Field(
        None,
        max_length=128,
        pattern=PARAMETER_NAME_PATTERN,
        description="A parameter each run gets with its scheduled time as an ISO 8601 string in the "
        "schedule's time zone (e.g. 2026-12-02T06:00:00+01:00), injected like the template's parameters.",
    )
    run_template: RunTemplate

    @model_validator(mode="after")
    def _check(self) -> NotebookScheduleSpec:
        run = self.run_template.spec
        if run.cancel:
            raise ValueError("runTemplate.spec.cancel would cancel every run: leave it unset")
        name = self.scheduled_time_parameter
        if name is not None:
            check_parameter_names([name])
            if name in run.parameters or name in run.matrix:
                raise ValueError(
                    f"scheduledTimeParameter {name!r} is also set in runTemplate.spec: the scheduled "
                    "time would overwrite it"
                )
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        # No CEL rule on scheduledTimeParameter against the template's parameters: CEL cannot look into
        # a free-form map; the operator says InvalidSpec.
        return [
            {
                "rule": "!has(self.runTemplate.spec.cancel) || !self.runTemplate.spec.cancel",
                "message": "runTemplate.spec.cancel must not be true",
            },
        ]


class NotebookScheduleStatus(StatusModel):
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    last_schedule_time: str | None = Field(None, description="The scheduled time of the latest run created.")
    last_successful_time: str | None = Field(
        None, description="When the latest run of this schedule that succeeded finished."
    )
    next_schedule_time: str | None = Field(None, description="The next time a run is due.")
    active: list[str] = Field(default_factory=list, max_length=256, description="Runs not finished.")
