"""A restarted operator's execution keeps what the dead one spilled for the cells it does not run again."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from nbkube.engine.outputs import CellOutputs, NotebookBudget, OutputLimits, Spill

LIMITS = OutputLimits(cell_bytes=100, notebook_bytes=10_000, spill_bytes=1_000_000)
TORN = b'{"index": 1, "cell_id": "cell1", "output": {"output_ty'


def stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


async def add_outputs(budget: NotebookBudget, index: int, outputs: list[dict]) -> CellOutputs:
    cell = CellOutputs(budget, index, f"cell{index}")
    for output in outputs:
        await cell.add(output)
    return cell


def spilled(path: Path) -> list[tuple[int, str]]:
    """(cell index, text) of every line of a spill file; each line must be whole JSON."""
    return [(r["index"], r["output"]["text"]) for r in map(json.loads, path.read_bytes().splitlines())]


async def operator_killed_in_cell_1(spill_dir: Path) -> tuple[Path, bytes]:
    """The first operator: cell 0 passes its cap (spilled whole), cell 1 is in flight when the operator
    is killed, part of its spill written and the last line torn. The spill file, and cell 0's bytes."""
    budget = NotebookBudget(replace(LIMITS, spill_dir=spill_dir))
    await (await add_outputs(budget, 0, [stream("a" * 80), stream("b" * 80)])).finish()
    cell_0 = budget.spill.written
    await add_outputs(budget, 1, [stream("c" * 80), stream("d" * 80)])
    await budget.spill.flush()
    path = budget.spill.path
    assert path is not None and spilled(path) == [(0, "a" * 80), (0, "b" * 80), (1, "c" * 80), (1, "d" * 80)]
    with path.open("ab") as f:
        f.write(TORN)
    return path, path.read_bytes()[:cell_0]


async def test_a_restarted_execution_keeps_the_earlier_cells_spilled_outputs_and_appends_after_them(
    tmp_path: Path,
) -> None:
    path, cell_0 = await operator_killed_in_cell_1(tmp_path)

    # The restarted operator resumes cell 1: the journal gives it cell 1's outputs so far, then more come.
    budget = NotebookBudget(replace(LIMITS, spill_dir=tmp_path))
    await budget.spill.start(1)
    cell = await add_outputs(budget, 1, [stream("c" * 80), stream("d" * 80), stream("e" * 80)])
    outputs = await cell.finish()

    assert "The full output is in the spill file outputs.spill.jsonl" in outputs[-1]["text"]
    assert budget.spill.path == path
    assert path.read_bytes().startswith(cell_0)  # cell 0's lines, byte for byte
    # cell 1's lines once (spilled again from the outputs the resumed cell starts with), no torn line
    assert spilled(path) == [(0, "a" * 80), (0, "b" * 80), (1, "c" * 80), (1, "d" * 80), (1, "e" * 80)]


async def test_a_restarted_execution_that_spills_nothing_still_has_the_earlier_spill(tmp_path: Path) -> None:
    path, cell_0 = await operator_killed_in_cell_1(tmp_path)

    spill = Spill(tmp_path, LIMITS.spill_bytes)
    await spill.start(1)
    await spill.flush()

    assert spill.path == path and spill.written == len(cell_0)  # what the run's final commit takes
    assert path.read_bytes() == cell_0


async def test_the_spill_cap_counts_what_the_dead_operator_spilled(tmp_path: Path) -> None:
    _, cell_0 = await operator_killed_in_cell_1(tmp_path)
    line = len(json.dumps({"index": 1, "cell_id": "cell1", "output": stream("x" * 80)})) + 1

    spill = Spill(tmp_path, len(cell_0) + line)
    await spill.start(1)
    await spill.write(1, "cell1", stream("x" * 80))
    await spill.write(1, "cell1", stream("y" * 80))  # past the cap
    await spill.flush()

    assert spill.full and spill.dropped == line
    assert spilled(spill.path)[-1] == (1, "x" * 80)  # type: ignore[arg-type]


async def test_an_execution_from_the_first_cell_starts_an_empty_spill(tmp_path: Path) -> None:
    path, _ = await operator_killed_in_cell_1(tmp_path)

    spill = Spill(tmp_path, LIMITS.spill_bytes)
    await spill.start(0)

    assert spill.path is None and spill.written == 0 and not path.exists()  # nothing stale is committed
    await spill.write(0, "cell0", stream("z"))
    await spill.flush()
    assert spill.path == path and spilled(path) == [(0, "z")]


async def test_lines_of_later_cells_among_earlier_ones_go_and_the_rest_keep_their_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / Spill.FILE_NAME
    lines = [
        json.dumps({"index": index, "cell_id": f"cell{index}", "output": stream(text)}) + "\n"
        for index, text in [(0, "a"), (2, "late"), (1, "b"), (3, "later"), (1, "c")]
    ]
    path.write_text("".join(lines))

    spill = Spill(tmp_path, LIMITS.spill_bytes)
    await spill.start(2)

    assert spilled(path) == [(0, "a"), (1, "b"), (1, "c")]
    assert spill.written == path.stat().st_size
    assert not path.with_name(f"{Spill.FILE_NAME}.partial").exists()  # the rewrite's file is gone


async def test_without_a_spill_directory_there_is_nothing_to_keep() -> None:
    spill = Spill(None, LIMITS.spill_bytes)
    await spill.start(3)
    assert spill.path is None and spill.written == 0
