"""Which runs a prune removes: a pure decision over the runs' summaries."""

from __future__ import annotations

from datetime import timedelta

from nbkube.results import RunSummary
from nbkube.results.prune import select_prunable

DAY = 86400.0
NOW = 100 * DAY


def run(namespace: str, name: str, days_ago: float) -> RunSummary:
    return RunSummary(
        namespace=namespace,
        name=name,
        uid=f"uid-{namespace}-{name}",
        path=f"{namespace}/{name}/nb.ipynb",
        state="Succeeded",
        reason=None,
        attempt=1,
        final=True,
        environment="py",
        parameters={},
        committed_at=NOW - days_ago * DAY,
        spills={},
        directory=name,
    )


RUNS = [run("a", "old", 40), run("a", "older", 50), run("a", "new", 1), run("b", "old", 45)]


def names(runs: list[RunSummary]) -> set[str]:
    return {f"{r.namespace}/{r.name}" for r in runs}


def test_runs_older_than_the_age_go_in_every_namespace() -> None:
    doomed = select_prunable(list(RUNS), timedelta(days=30), None, NOW)
    assert names(doomed) == {"a/old", "a/older", "b/old"}


def test_keep_last_alone_keeps_the_newest_of_each_namespace() -> None:
    assert names(select_prunable(list(RUNS), None, 2, NOW)) == {"a/older"}
    assert names(select_prunable(list(RUNS), None, 0, NOW)) == names(RUNS)


def test_with_both_a_run_goes_only_when_it_is_old_and_not_among_the_newest() -> None:
    assert names(select_prunable(list(RUNS), timedelta(days=30), 1, NOW)) == {"a/old", "a/older"}
    assert names(select_prunable(list(RUNS), timedelta(days=45), 1, NOW)) == {"a/older"}
