import asyncio
import json

from nbkube.api import CellStatus, NotebookRunStatus
from nbkube.api.common import parse_timestamp
from nbkube.kernelwork.statuswriter import StatusWriter
from nbkube.run import cellstatus, sweep
from nbkube.run.service import ttl_remaining


def test_status_of_any_notebook_stays_under_256_kib():
    long_summary = "x" * 10_000
    cells = [
        CellStatus(
            index=i,
            id=f"cell-{'a' * 50}-{i}",
            state="failed" if i % 7 == 0 else "succeeded",
            execution_count=i,
            duration_ms=123456,
            summary=cellstatus.shorten(long_summary),
        )
        for i in range(20_000)
    ]
    kept, omitted = cellstatus.bound_cells(cells)
    status = NotebookRunStatus(cells=kept, cells_omitted=omitted, progress="20000/20000")
    size = len(json.dumps(status.to_api()))
    assert size < 256 * 1024, size
    assert omitted == 20_000 - len(kept) and omitted > 0


def test_bounded_cells_keep_failures_and_the_running_cell():
    cells = [CellStatus(index=i, id=f"c{i}", state="succeeded") for i in range(2000)]
    cells[3].state = "failed"
    cells[1500].state = "running"
    kept, _ = cellstatus.bound_cells(cells, limit=100)
    indexes = {c.index for c in kept}
    assert {3, 1500} <= indexes and len(kept) == 100
    assert [c.index for c in kept] == sorted(indexes)


def test_summary_prefers_the_error_then_the_last_line_of_text():
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "first\nsecond\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}},
    ]
    assert cellstatus.summarize_outputs(outputs) == "42"
    outputs.append({"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": []})
    assert cellstatus.summarize_outputs(outputs) == "ValueError: bad"
    figure = {"output_type": "display_data", "data": {"image/png": "...", "text/plain": "<Figure>"}}
    assert cellstatus.summarize_outputs([figure]) == "<image/png>"


def test_durations_read_like_kubectl():
    assert cellstatus.format_duration(5.4) == "5s"
    assert cellstatus.format_duration(125) == "2m5s"
    assert cellstatus.format_duration(3 * 3600 + 60) == "3h1m"


def test_sweep_children_cover_every_combination_once_with_stable_names():
    from nbkube.api import NotebookRunSpec

    spec = NotebookRunSpec.model_validate(
        {
            "environmentRef": {"name": "py"},
            "notebook": {"cells": [{"source": "1"}]},
            "parameters": {"base": 1},
            "matrix": {"alpha": [0.1, 0.3], "seed": [1, 2]},
        }
    )
    children = sweep.child_runs("my-sweep", "team", "uid-9", spec)
    params = [c["spec"]["parameters"] for c in children]
    assert params == [
        {"base": 1, "alpha": 0.1, "seed": 1},
        {"base": 1, "alpha": 0.1, "seed": 2},
        {"base": 1, "alpha": 0.3, "seed": 1},
        {"base": 1, "alpha": 0.3, "seed": 2},
    ]
    names = [c["metadata"]["name"] for c in children]
    assert len(set(names)) == 4 and all(len(n) <= 63 for n in names)
    assert names == [c["metadata"]["name"] for c in sweep.child_runs("my-sweep", "team", "uid-9", spec)]
    assert all("matrix" not in c["spec"] for c in children)
    assert children[0]["metadata"]["ownerReferences"][0]["uid"] == "uid-9"


def test_sweep_parents_of_any_length_give_valid_distinct_child_names_and_labels():
    import re

    from nbkube.api import NotebookRunSpec

    dns = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    label = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    spec = NotebookRunSpec.model_validate(
        {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "x"}]}, "matrix": {"x": [1, 2]}}
    )
    seen: set[str] = set()
    for parent in ("s" * 63, "s" * 64, "s" * 253, "s" * 252 + "t", ("s.s-" * 70)[:251] + "ss"):
        parent = parent[:253]
        children = sweep.child_runs(parent, "team", "uid", spec)
        for child in children:
            name, value = child["metadata"]["name"], child["metadata"]["labels"][sweep.PARENT_LABEL]
            assert len(name) <= 63 and dns.match(name), name
            assert len(value) <= 63 and label.match(value), value
            assert sweep.parent_selector(parent) == f"{sweep.PARENT_LABEL}={value}"
            assert name not in seen
            seen.add(name)
    assert (
        sweep.child_runs("s" * 63, "team", "uid", spec)[0]["metadata"]["labels"][sweep.PARENT_LABEL]
        == "s" * 63
    )


def test_a_sweep_whose_children_would_take_too_many_parameters_is_invalid():
    import pytest
    from nbkube.api import NotebookRunSpec
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="more than 128 parameters"):
        NotebookRunSpec.model_validate(
            {
                "environmentRef": {"name": "py"},
                "notebook": {"cells": [{"source": "x"}]},
                "parameters": {f"p{i}": i for i in range(120)},
                "matrix": {f"m{i}": [1] for i in range(10)},
            }
        )


def test_sweep_aggregate_counts_missing_children_as_pending():
    agg = sweep.aggregate(["a", "b", "c", "d"], {"a": "Succeeded", "b": "Running", "c": "Cancelled"})
    assert (agg.total, agg.succeeded, agg.running, agg.failed, agg.pending) == (4, 1, 1, 1, 1)


async def test_status_writer_coalesces_bursts_into_one_patch_per_interval():
    written = []

    async def patch(status):
        written.append(status)

    writer = StatusWriter(patch, interval=0.2)
    for i in range(500):
        writer.update({"progress": f"{i}/500"})
        if i % 50 == 0:
            await asyncio.sleep(0)
    await asyncio.sleep(0.3)
    await writer.flush()
    assert written[-1] == {"progress": "499/500"}
    assert len(written) <= 3, written


async def test_status_writer_flush_writes_at_once():
    written = []

    async def patch(status):
        written.append(status)

    writer = StatusWriter(patch, interval=60)
    writer.update({"state": "Running"})
    await writer.flush({"state": "Succeeded"})
    assert written == [{"state": "Succeeded"}]
    await writer.flush()
    assert written == [{"state": "Succeeded"}]


def test_a_runs_ttl_counts_from_its_completion_time_and_only_once_it_finished():
    spec = {"ttlSecondsAfterFinished": 5}
    done = {"completionTime": "2026-01-01T00:00:00Z"}
    finished_at = parse_timestamp(done["completionTime"])
    assert ttl_remaining(spec, done, finished_at + 2) == 3
    assert ttl_remaining(spec, done, finished_at + 7) == -2
    assert ttl_remaining(spec, {"state": "Running"}, finished_at) is None
    assert ttl_remaining({}, done, finished_at) is None
