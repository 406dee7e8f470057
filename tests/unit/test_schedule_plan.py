"""NotebookSchedule's decisions without a cluster: cron times, missed times, concurrency, names, pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nbkube.api.schedule import NotebookScheduleSpec
from nbkube.schedule import plan
from nbkube.schedule.cron import MAX_MISSED_COUNTED, CronSchedule, InvalidSchedule
from pydantic import ValidationError


def spec(**fields: Any) -> NotebookScheduleSpec:
    return NotebookScheduleSpec.model_validate(
        {
            "schedule": "0 6 * * *",
            "runTemplate": {
                "spec": {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}}
            },
            **fields,
        }
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


DAILY = CronSchedule.parse("0 6 * * *", None)


def decide(s: NotebookScheduleSpec, cron: CronSchedule = DAILY, **kw: Any) -> plan.Decision:
    args: dict[str, Any] = {
        "created": at("2026-11-01T00:00:00+00:00"),
        "last_schedule": None,
        "active": [],
        "existing": set(),
        "schedule_name": "daily",
        **kw,
    }
    return plan.decide(s, cron, **args)


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@daily", "2026-12-01T10:00:00+00:00", "2026-12-02T00:00:00+00:00"),
        ("@midnight", "2026-12-01T10:00:00+00:00", "2026-12-02T00:00:00+00:00"),
        ("@hourly", "2026-12-01T10:20:00+00:00", "2026-12-01T11:00:00+00:00"),
        ("@weekly", "2026-12-01T10:00:00+00:00", "2026-12-06T00:00:00+00:00"),  # Sunday
        ("@monthly", "2026-12-01T10:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("@yearly", "2026-12-01T10:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("@annually", "2026-12-01T10:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    ],
)
def test_cronjob_macros_are_read_as_cron_reads_them(macro: str, after: str, expected: str) -> None:
    assert CronSchedule.parse(macro, None).next_after(at(after)) == at(expected)


def test_a_time_zone_moves_the_schedule_and_follows_daylight_saving_time() -> None:
    berlin = CronSchedule.parse("0 6 * * *", "Europe/Berlin")
    assert berlin.next_after(at("2026-12-01T10:00:00+00:00")) == at("2026-12-02T05:00:00+00:00")  # CET
    assert berlin.next_after(at("2026-07-01T10:00:00+00:00")) == at("2026-07-02T04:00:00+00:00")  # CEST
    # 2026-03-29: 02:00 becomes 03:00 in Berlin; a 02:30 run happens at 03:00 that day
    spring = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    assert spring.next_after(at("2026-03-28T12:00:00+00:00")) == at("2026-03-29T03:00:00+02:00")


def test_invalid_schedules_and_time_zones_are_refused_with_the_parsers_message() -> None:
    with pytest.raises(InvalidSchedule, match="out of range"):
        CronSchedule.parse("61 * * * *", None)
    with pytest.raises(InvalidSchedule, match="never matches"):
        CronSchedule.parse("0 0 31 2 *", None)
    with pytest.raises(InvalidSchedule, match="unknown time zone 'Mars/Olympus'"):
        CronSchedule.parse("0 6 * * *", "Mars/Olympus")
    with pytest.raises(InvalidSchedule, match="seconds field is for tests only"):
        CronSchedule.parse("*/2 * * * * *", None)
    assert CronSchedule.parse("*/2 * * * * *", None, seconds_field=True).next_after(
        at("2026-12-01T10:00:01+00:00")
    ) == at("2026-12-01T10:00:02+00:00")


def test_the_api_server_pattern_refuses_what_cronjob_refuses() -> None:
    for bad in ("TZ=UTC 0 6 * * *", "0 6 * *", "@every 5m", "0 6 * * * * *"):
        with pytest.raises(ValidationError):
            spec(schedule=bad)
    with pytest.raises(ValidationError):
        spec(timeZone="../etc/passwd")


def test_nothing_is_due_before_the_first_time() -> None:
    decision = decide(spec(), now=at("2026-11-01T05:00:00+00:00"))
    assert decision.action == plan.Action.WAIT
    assert decision.next_time == at("2026-11-01T06:00:00+00:00")


def test_missed_times_give_one_run_for_the_most_recent() -> None:
    decision = decide(
        spec(), last_schedule=at("2026-11-01T06:00:00+00:00"), now=at("2026-11-04T07:00:00+00:00")
    )
    assert decision.action == plan.Action.CREATE
    assert decision.scheduled == at("2026-11-04T06:00:00+00:00")
    assert not decision.too_many_missed


def test_no_run_once_the_starting_deadline_has_passed() -> None:
    late = decide(
        spec(startingDeadlineSeconds=600),
        last_schedule=at("2026-11-01T06:00:00+00:00"),
        now=at("2026-11-04T06:11:00+00:00"),
    )
    assert late.action == plan.Action.WAIT
    in_time = decide(
        spec(startingDeadlineSeconds=600),
        last_schedule=at("2026-11-01T06:00:00+00:00"),
        now=at("2026-11-04T06:09:00+00:00"),
    )
    assert in_time.action == plan.Action.CREATE and in_time.scheduled == at("2026-11-04T06:00:00+00:00")


def test_too_many_missed_times_still_run_the_most_recent_with_a_warning() -> None:
    minutely = CronSchedule.parse("* * * * *", None)
    decision = decide(
        spec(schedule="* * * * *"),
        minutely,
        last_schedule=at("2026-11-01T06:00:00+00:00"),
        now=at("2026-11-01T09:30:30+00:00"),
    )
    assert decision.action == plan.Action.CREATE and decision.too_many_missed
    assert decision.scheduled == at("2026-11-01T09:30:00+00:00")
    assert MAX_MISSED_COUNTED == 100


def test_a_time_already_run_is_not_run_again() -> None:
    now = at("2026-11-02T06:00:30+00:00")
    name = plan.run_name("daily", at("2026-11-02T06:00:00+00:00"), DAILY)
    assert decide(spec(), now=now, existing={name}).action == plan.Action.WAIT
    assert decide(spec(), now=now, last_schedule=at("2026-11-02T06:00:00+00:00")).action == plan.Action.WAIT


def test_concurrency_policies_with_a_run_still_active() -> None:
    now = at("2026-11-02T06:00:30+00:00")
    allow = decide(spec(), now=now, active=["daily-1"])
    assert allow.action == plan.Action.CREATE and allow.replace == []
    forbid = decide(spec(concurrencyPolicy="Forbid"), now=now, active=["daily-1"])
    assert forbid.action == plan.Action.SKIP and forbid.scheduled == at("2026-11-02T06:00:00+00:00")
    replace = decide(spec(concurrencyPolicy="Replace"), now=now, active=["daily-1"])
    assert replace.action == plan.Action.CREATE and replace.replace == ["daily-1"]


def test_suspended_schedules_create_nothing() -> None:
    decision = decide(spec(suspend=True), now=at("2026-11-02T06:00:30+00:00"))
    assert decision.action == plan.Action.WAIT and decision.next_time is None


def test_run_names_are_the_schedule_and_the_time_and_fit_a_label() -> None:
    scheduled = at("2026-11-02T06:00:00+00:00")
    assert plan.run_name("daily", scheduled, DAILY) == f"daily-{int(scheduled.timestamp()) // 60}"
    seconds = CronSchedule.parse("*/2 * * * * *", None, seconds_field=True)
    assert plan.run_name("fast", scheduled, seconds) == f"fast-{int(scheduled.timestamp())}"
    long = plan.run_name("x" * 200, scheduled, DAILY)
    assert len(long) <= 63 and long != plan.run_name("x" * 199 + "y", scheduled, DAILY)
    assert len(plan.manual_run_name("y" * 100)) <= 63


def test_the_run_carries_the_scheduled_time_in_the_schedules_zone_and_is_owned() -> None:
    s = spec(scheduledTimeParameter="run_date", timeZone="Europe/Berlin")
    cron = CronSchedule.parse(s.schedule, s.time_zone)
    schedule = {"metadata": {"name": "daily", "namespace": "ns", "uid": "u-1"}}
    scheduled = at("2026-12-02T05:00:00+00:00")
    run = plan.run_manifest(schedule, s, cron, scheduled, "daily-1")
    assert run["spec"]["parameters"] == {"run_date": "2026-12-02T06:00:00+01:00"}
    assert run["metadata"]["annotations"][plan.SCHEDULED_TIME_ANNOTATION] == "2026-12-02T05:00:00Z"
    assert run["metadata"]["labels"][plan.SCHEDULE_LABEL] == "daily"
    (owner,) = run["metadata"]["ownerReferences"]
    assert owner["uid"] == "u-1" and owner["kind"] == "NotebookSchedule" and owner["controller"]


def test_the_scheduled_time_parameter_must_not_collide_with_the_templates() -> None:
    template = {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}}
    with pytest.raises(ValidationError, match=r"also set in runTemplate\.spec"):
        spec(scheduledTimeParameter="day", runTemplate={"spec": {**template, "parameters": {"day": 1}}})
    with pytest.raises(ValidationError, match="cancel"):
        spec(runTemplate={"spec": {**template, "cancel": True}})


def _run(name: str, state: str | None, minute: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {plan.SCHEDULED_TIME_ANNOTATION: f"2026-11-02T06:{minute:02d}:00Z"},
        },
        "status": {"state": state, "completionTime": f"2026-11-02T06:{minute:02d}:30Z"} if state else {},
    }


def test_history_limits_prune_the_oldest_finished_runs() -> None:
    runs = [
        _run("s-5", "Succeeded", 5),
        _run("s-1", "Succeeded", 1),
        _run("s-3", "Succeeded", 3),
        _run("f-2", "Failed", 2),
        _run("c-4", "Cancelled", 4),
        _run("r-6", "Running", 6),
        _run("p-7", None, 7),
    ]
    assert plan.to_prune(runs, 2, 1) == ["s-1", "f-2"]
    assert plan.to_prune(runs, 0, 0) == ["s-1", "s-3", "s-5", "f-2", "c-4"]
    assert plan.last_successful_time(runs, None) == "2026-11-02T06:05:30Z"
    assert plan.last_successful_time([], "2026-11-02T06:05:30Z") == "2026-11-02T06:05:30Z"


def test_only_runs_the_schedule_controls_are_its_own() -> None:
    mine = {"metadata": {"ownerReferences": [{"uid": "u-1", "controller": True}]}}
    other = {"metadata": {"ownerReferences": [{"uid": "u-0", "controller": True}]}}
    assert plan.owned_runs([mine, other, {"metadata": {}}], "u-1") == [mine]


def test_a_deadline_counts_from_now_not_from_the_last_run() -> None:
    every_minute = CronSchedule.parse("* * * * *", None)
    now = at("2026-11-02T06:10:20+00:00")
    decision = decide(
        spec(schedule="* * * * *", startingDeadlineSeconds=30),
        every_minute,
        last_schedule=now - timedelta(hours=5),
        now=now,
    )
    assert decision.action == plan.Action.CREATE and decision.scheduled == at("2026-11-02T06:10:00+00:00")


def test_the_readmes_schedule_example_is_a_valid_schedule() -> None:
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Schedules") :]
    manifest = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    assert manifest["kind"] == "NotebookSchedule"
    s = NotebookScheduleSpec.model_validate(manifest["spec"])
    cron = CronSchedule.parse(s.schedule, s.time_zone)
    # Monday 2026-11-30 06:00 in Berlin is 05:00 UTC
    assert cron.next_after(at("2026-11-29T12:00:00+00:00")) == at("2026-11-30T05:00:00+00:00")
