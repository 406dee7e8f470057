"""NotebookSchedule on the local control plane, in real time: schedules fire every two seconds (the
operator's test-only seconds field, NBKUBE_SCHEDULE_SECONDS_FIELD). Assertions compare run names and
scheduled times, not durations; the only waits on the clock are the ones that must let slots pass (a
suspended schedule, a stopped operator)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import nbformat
import pytest
from helpers import condition, events, get, wait_for
from schedule_helpers import Latch, RunRecorder, creation_time, now, schedule, scheduled_time

EVERY = 2


@pytest.fixture(scope="module")
def recorder(env_namespace, operator) -> Iterator[RunRecorder]:
    rec = RunRecorder(str(operator.info.kubeconfig), env_namespace)
    yield rec
    rec.stop()


def _slots_between(after, until) -> list:
    """The scheduled times (every EVERY seconds) in (after, until]."""
    first = int(after.timestamp()) // EVERY * EVERY + EVERY
    return [s for s in range(first, int(until.timestamp()) + 1, EVERY)]


def _epochs(runs) -> list[int]:
    return [int(scheduled_time(r).timestamp()) for r in runs]


def test_runs_appear_at_their_times_with_the_scheduled_time_and_history_is_pruned(
    kubectl, env_namespace, operator, recorder
):
    kubectl.apply(
        schedule(
            "daily",
            [{"source": "scheduled = None", "tags": ["parameters"]}, "print('processing', scheduled)"],
            scheduledTimeParameter="scheduled",
            timeZone="Europe/Berlin",
            successfulRunsHistoryLimit=2,
        ),
        namespace=env_namespace,
    )
    # Four succeeded runs, the first two pruned by the history limit.
    wait_for(
        "four runs of daily, two of them pruned",
        lambda: (
            len(recorder.finished("daily")) >= 4
            and sum(recorder.deleted(n) for n in _names("daily", recorder)) >= 2
        ),
        timeout=60,
    )
    kubectl(
        "patch",
        "nbsched",
        "daily",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
        namespace=env_namespace,
    )
    runs = recorder.finished("daily")
    for run in runs:
        scheduled = scheduled_time(run)
        epoch = int(scheduled.timestamp())
        assert run["metadata"]["name"] == f"daily-{epoch}"  # deterministic: the schedule and its time
        assert epoch % EVERY == 0
        assert creation_time(run) >= scheduled.replace(microsecond=0)  # never early
        local = scheduled.astimezone(ZoneInfo("Europe/Berlin")).isoformat()
        assert run["spec"]["parameters"] == {"scheduled": local}
        owner = run["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "NotebookSchedule" and owner["name"] == "daily" and owner["controller"]
    assert _epochs(runs) == sorted(set(_epochs(runs)))
    # Pruned: the oldest succeeded runs are gone from the API, their executed notebooks stay in git.
    oldest = runs[0]
    assert recorder.deleted(oldest["metadata"]["name"])
    assert get(kubectl, "nbrun", oldest["metadata"]["name"], env_namespace) is None
    result = oldest["status"]["result"]
    nb = nbformat.reads(operator.result(result["path"], result["commit"]).decode(), as_version=4)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert printed.strip() == f"processing {oldest['spec']['parameters']['scheduled']}"

    def live_succeeded() -> list[str]:
        return [
            n["metadata"]["name"]
            for n in recorder.finished("daily")
            if not recorder.deleted(n["metadata"]["name"])
        ]

    wait_for("daily's history down to its limit of 2", lambda: len(live_succeeded()) == 2, timeout=30)
    assert live_succeeded() == [r["metadata"]["name"] for r in recorder.finished("daily")][-2:]  # the newest
    sched = wait_for(
        "daily Suspended",
        lambda: (lambda s: s if condition(s, "Ready")["reason"] == "Suspended" else None)(
            kubectl.json("get", "nbsched", "daily", namespace=env_namespace)
        ),
        timeout=30,
    )
    assert sched["status"]["lastScheduleTime"] and sched["status"]["lastSuccessfulTime"]
    reasons = {e["reason"] for e in events(kubectl, env_namespace, "daily")}
    assert {"RunCreated", "RunDeleted"} <= reasons


def _names(schedule_name: str, recorder: RunRecorder) -> list[str]:
    return [r["metadata"]["name"] for r in recorder.runs(schedule_name)]


def _state(run) -> str | None:
    return (run.get("status") or {}).get("state")


def test_each_concurrency_policy_with_a_run_that_outlives_its_slot(
    kubectl, env_namespace, operator, recorder
):
    latches = {policy: Latch() for policy in ("Allow", "Forbid", "Replace")}
    try:
        for policy, latch in latches.items():
            kubectl.apply(
                schedule(f"policy-{policy.lower()}", [latch.cell], concurrencyPolicy=policy),
                namespace=env_namespace,
            )

        # Allow: a second run starts while the first still waits at the latch.
        def two_running(name: str):
            runs = recorder.runs(name)
            return runs if len([r for r in runs if _state(r) == "Running"]) >= 2 else None

        wait_for("two Allow runs at once", lambda: two_running("policy-allow"), timeout=30)
        kubectl(
            "patch",
            "nbsched",
            "policy-allow",
            "--type=merge",
            "-p",
            '{"spec":{"suspend":true}}',
            namespace=env_namespace,
        )

        # Replace: the first run is cancelled when the next time comes, and a new one created for it.
        replaced = wait_for(
            "a Replace run cancelled",
            lambda: next((r for r in recorder.runs("policy-replace") if _state(r) == "Cancelled"), None),
            timeout=30,
        )
        replacements = [
            r for r in recorder.runs("policy-replace") if scheduled_time(r) > scheduled_time(replaced)
        ]
        assert replacements, "a run was cancelled without a replacement"
        assert replaced["spec"]["cancel"] is True

        # Forbid: the next time is skipped while the first run waits; one run only.
        wait_for(
            "a RunSkipped event of Forbid",
            lambda: any(e["reason"] == "RunSkipped" for e in events(kubectl, env_namespace, "policy-forbid")),
            timeout=30,
        )
        forbidden = recorder.runs("policy-forbid")
        assert len(forbidden) == 1 and _state(forbidden[0]) in ("Pending", "Running", None)
        first = forbidden[0]
        sched = kubectl.json("get", "nbsched", "policy-forbid", namespace=env_namespace)
        assert sched["status"]["active"] == [first["metadata"]["name"]]
        assert (
            sched["status"]["lastScheduleTime"]
            == first["metadata"]["annotations"]["nbkube.io/scheduled-time"]
        )

        latches["Forbid"].open()
        # ... and the missed time runs as soon as the first run has ended (no starting deadline).
        second = wait_for(
            "Forbid's missed time run after the first ended",
            lambda: (lambda rs: rs[1] if len(rs) > 1 else None)(recorder.runs("policy-forbid")),
            timeout=30,
        )
        ended = next(
            r for r in recorder.runs("policy-forbid") if r["metadata"]["name"] == first["metadata"]["name"]
        )
        assert _state(ended) == "Succeeded"
        # never two at once: the second was created once the first had completed
        completed = datetime.fromisoformat(ended["status"]["completionTime"].replace("Z", "+00:00"))
        assert creation_time(second) >= completed
        assert scheduled_time(second) > scheduled_time(first)
        reasons = {e["reason"] for e in events(kubectl, env_namespace, "policy-replace")}
        assert "RunReplaced" in reasons
    finally:
        for name in ("allow", "forbid", "replace"):
            kubectl(
                "delete", "nbsched", f"policy-{name}", "--wait=false", namespace=env_namespace, check=False
            )
        for latch in latches.values():
            latch.close()


def _last_epoch(recorder: RunRecorder, name: str) -> int:
    return max(_epochs(recorder.runs(name)))


def _listed_last_epoch(kubectl, namespace: str, name: str) -> int:
    """The latest scheduled time of a schedule's runs, as the API server has them now."""
    runs = kubectl.json("get", "nbrun", "-l", f"nbkube.io/schedule={name}", namespace=namespace)["items"]
    return max(_epochs(runs))


def _wait_past(epoch: float) -> None:
    """Lets scheduled times pass (nothing to wait on: the point is that nothing happens meanwhile)."""
    time.sleep(max(0.0, epoch - time.time()))


def test_suspend_creates_nothing_and_resume_catches_up_once(kubectl, env_namespace, operator, recorder):
    kubectl.apply(schedule("pausable", ["1 + 1"]), namespace=env_namespace)
    wait_for("a first pausable run", lambda: recorder.runs("pausable"), timeout=30)
    kubectl(
        "patch",
        "nbsched",
        "pausable",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
        namespace=env_namespace,
    )

    def suspended_seen():
        sched = get(kubectl, "nbsched", "pausable", env_namespace) or {}
        ready = next(
            (c for c in (sched.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {}
        )
        return (
            sched
            if ready.get("reason") == "Suspended"
            and ready.get("observedGeneration") == sched["metadata"]["generation"]
            else None
        )

    wait_for("the operator to see the suspension", suspended_seen, timeout=30)
    last = _last_epoch(recorder, "pausable")
    _wait_past(last + 3 * EVERY + 0.5)  # three times pass while suspended
    assert _last_epoch(recorder, "pausable") == last, "a run was created while suspended"
    resumed_at = now()
    kubectl(
        "patch",
        "nbsched",
        "pausable",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
        namespace=env_namespace,
    )
    wait_for("a run after resume", lambda: _last_epoch(recorder, "pausable") > last, timeout=30)
    after = [e for e in _epochs(recorder.runs("pausable")) if e > last]
    missed = _slots_between(datetime.fromtimestamp(last, resumed_at.tzinfo), resumed_at)
    assert len(missed) >= 3
    # One catch-up run, for the most recent missed time (or a later one): none for the others.
    assert after[0] >= missed[-1]
    assert not set(after) & set(missed[:-1])
    kubectl(
        "patch",
        "nbsched",
        "pausable",
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
        namespace=env_namespace,
    )


def test_an_operator_down_across_two_times_catches_up_once_or_not_past_the_deadline(
    kubectl, env_namespace, operator, recorder
):
    kubectl.apply(schedule("catchup", ["1 + 1"]), namespace=env_namespace)
    kubectl.apply(schedule("deadline", ["1 + 1"], startingDeadlineSeconds=1), namespace=env_namespace)
    wait_for("runs of both", lambda: recorder.runs("catchup") and recorder.runs("deadline"), timeout=30)
    operator.stop()
    try:
        last = {name: _listed_last_epoch(kubectl, env_namespace, name) for name in ("catchup", "deadline")}
        # Down long enough that two times of each fall more than the deadline before the restart.
        _wait_past(max(last.values()) + 2 * EVERY + 1 + 0.5)
        restarted_at = now()
    finally:
        operator.start()
    for name in ("catchup", "deadline"):
        wait_for(
            f"a {name} run after the restart", lambda n=name: _last_epoch(recorder, n) > last[n], timeout=60
        )
    # No deadline: one catch-up run, for the most recent missed time; the other missed times get none.
    missed = _slots_between(datetime.fromtimestamp(last["catchup"], restarted_at.tzinfo), restarted_at)
    assert len(missed) >= 2
    after = [e for e in _epochs(recorder.runs("catchup")) if e > last["catchup"]]
    assert after[0] >= missed[-1] and not set(after) & set(missed[:-1])
    # startingDeadlineSeconds: 1: every time missed more than a second before the restart is skipped.
    too_late = _slots_between(
        datetime.fromtimestamp(last["deadline"], restarted_at.tzinfo), restarted_at - timedelta(seconds=1)
    )
    assert len(too_late) >= 2
    assert not set(_epochs(recorder.runs("deadline"))) & set(too_late)
    for name in ("catchup", "deadline"):
        kubectl(
            "patch",
            "nbsched",
            name,
            "--type=merge",
            "-p",
            '{"spec":{"suspend":true}}',
            namespace=env_namespace,
        )


def test_an_invalid_schedule_or_time_zone_is_refused_or_invalid_spec(kubectl, env_namespace, operator):
    refused = kubectl.apply(
        {
            **schedule("tz-in-cron", ["1"]),
            "spec": {**schedule("x", ["1"])["spec"], "schedule": "TZ=UTC 0 6 * * *"},
        },
        namespace=env_namespace,
        check=False,
    )
    assert refused.returncode != 0 and "spec.schedule" in refused.stderr
    for name, change in (
        ("bad-minute", {"schedule": "61 * * * *"}),
        ("bad-zone", {"timeZone": "Mars/Olympus"}),
    ):
        manifest = schedule(name, ["1"])
        manifest["spec"].update(change)
        kubectl.apply(manifest, namespace=env_namespace)

    def invalid(name):
        sched = get(kubectl, "nbsched", name, env_namespace) or {}
        ready = next(
            (c for c in (sched.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None
        )
        return ready if ready and ready["reason"] == "InvalidSpec" else None

    minute = wait_for("bad-minute InvalidSpec", lambda: invalid("bad-minute"), timeout=30)
    assert (
        minute["status"] == "False"
        and "61 * * * *" in minute["message"]
        and "out of range" in minute["message"]
    )
    zone = wait_for("bad-zone InvalidSpec", lambda: invalid("bad-zone"), timeout=30)
    assert "unknown time zone 'Mars/Olympus'" in zone["message"]
    assert any(e["reason"] == "InvalidSpec" for e in events(kubectl, env_namespace, "bad-zone"))
    # Fixed, the schedule is Ready (and the operator kept running meanwhile).
    kubectl(
        "patch",
        "nbsched",
        "bad-zone",
        "--type=merge",
        "-p",
        '{"spec":{"timeZone":"Europe/Berlin","suspend":true}}',
        namespace=env_namespace,
    )
    wait_for(
        "bad-zone Ready once fixed",
        lambda: (lambda c: c if c and c["status"] == "True" else None)(
            next(
                (
                    c
                    for c in (
                        (get(kubectl, "nbsched", "bad-zone", env_namespace) or {}).get("status") or {}
                    ).get("conditions", [])
                    if c["type"] == "Ready"
                ),
                None,
            )
        ),
        timeout=30,
    )
