"""`nbkube schedule ...` before the cluster: arguments into NotebookSchedule specs, manual runs and rows
(the commands run on the cluster in test_cli_on_cluster.py)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nbkube.cli import build_parser
from nbkube.cli.errors import UsageError
from nbkube.cli.run import build_spec
from nbkube.cli.schedules import default_name, manual_run, schedule_row, schedule_spec


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_create_turns_options_into_a_schedule_whose_template_is_the_run_spec() -> None:
    args = parse(
        "schedule", "create", "nb.ipynb", "--env", "py", "--cron", "@daily", "--time-zone", "Europe/Berlin",
        "-p", "alpha=0.3", "--matrix", "seed=1,2", "--scheduled-time-parameter", "day",
        "--concurrency-policy", "Replace", "--starting-deadline", "600", "--successful-history", "5",
        "--failed-history", "0", "--suspend",
    )  # fmt: skip
    spec = schedule_spec(args, build_spec(args, "nb", "nb.ipynb"))
    assert spec == {
        "schedule": "@daily",
        "timeZone": "Europe/Berlin",
        "scheduledTimeParameter": "day",
        "concurrencyPolicy": "Replace",
        "startingDeadlineSeconds": 600,
        "successfulRunsHistoryLimit": 5,
        "failedRunsHistoryLimit": 0,
        "suspend": True,
        "runTemplate": {
            "spec": {
                "environmentRef": {"name": "py"},
                "notebook": {"configMapRef": {"name": "nb", "key": "nb.ipynb"}},
                "parameters": {"alpha": 0.3},
                "matrix": {"seed": [1, 2]},
            }
        },
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cron", "61 * * * *"], "out of range"),
        (["--cron", "0 6 * *"], "schedule"),
        (["--cron", "0 6 * * *", "--time-zone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--cron", "0 6 * * *", "-p", "day=1", "--scheduled-time-parameter", "day"], "also set"),
    ],
)
def test_create_refuses_a_bad_schedule_before_the_cluster(options: list[str], message: str) -> None:
    args = parse("schedule", "create", "nb.ipynb", "--env", "py", *options)
    with pytest.raises(UsageError, match=message):
        schedule_spec(args, build_spec(args, "nb", "nb.ipynb"))


def test_the_default_name_is_the_notebooks() -> None:
    assert default_name(Path("reports/Morning Report.ipynb")) == "morning-report"


def test_a_manual_run_is_the_template_now_owned_by_the_schedule() -> None:
    schedule = {
        "metadata": {"name": "daily", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "schedule": "0 6 * * *",
            "scheduledTimeParameter": "day",
            "runTemplate": {
                "spec": {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}}
            },
        },
    }
    run = manual_run(schedule, datetime(2026, 12, 1, 19, 30, 5, tzinfo=UTC))
    assert run["metadata"]["name"].startswith("daily-manual-")
    assert run["metadata"]["annotations"] == {
        "nbkube.io/scheduled-time": "2026-12-01T19:30:05Z",
        "nbkube.io/schedule-trigger": "manual",
    }
    assert run["spec"]["parameters"] == {"day": "2026-12-01T19:30:05+00:00"}
    assert run["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_a_schedule_row_shows_its_state() -> None:
    row = schedule_row(
        {
            "metadata": {"name": "daily", "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"schedule": "0 6 * * *", "suspend": True},
            "status": {
                "active": ["daily-1"],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Suspended"}],
            },
        }
    )
    assert row[:5] == ["daily", "0 6 * * *", "UTC", "true", "1"] and row[7] == "Suspended"
