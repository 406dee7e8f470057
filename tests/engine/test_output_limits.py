"""Output caps, the truncation marker, the spill, bounded memory, and no iopub rate limiting."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import psutil
import pytest
from engine_helpers import notebook, stream_text
from nbkube.engine import CellState, KernelConnection, NotebookExecutor, OutputLimits

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(240)]


def spilled(path: object, index: int) -> tuple[str, list[dict]]:
    text, others = [], []
    with open(path, encoding="utf-8") as f:  # type: ignore[arg-type]
        for line in f:
            record = json.loads(line)
            if record["index"] != index:
                continue
            output = record["output"]
            if output["output_type"] == "stream":
                text.append(output["text"])
            else:
                others.append(output)
    return "".join(text), others


async def test_cell_cap_truncates_with_a_marker_and_spills_the_full_output(
    kernel: KernelConnection, tmp_path: Path
) -> None:
    lines = "".join(f"line {i:05d}\n" for i in range(2000))  # 22000 bytes
    nb = notebook(
        "for i in range(2000):\n    print(f'line {i:05d}', flush=(i % 100 == 99))",
        "print('small')",
    )
    limits = OutputLimits(cell_bytes=5000, notebook_bytes=100_000, spill_dir=tmp_path)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)

    big, small = result.cells
    assert big.state is CellState.SUCCEEDED
    assert big.truncated and big.output_bytes == len(lines)
    shown = stream_text(nb.cells[0])
    assert len(shown.encode()) == 5000 and lines.startswith(shown)
    marker = nb.cells[0].outputs[-1]
    assert marker["name"] == "stderr" and "output truncated" in marker["text"]
    assert f"produced {len(lines)} bytes" in marker["text"] and "outputs.spill.jsonl" in marker["text"]
    assert result.spill_path is not None and result.spill_path.parent == tmp_path
    assert spilled(result.spill_path, 0)[0] == lines
    assert not small.truncated and stream_text(nb.cells[1]) == "small\n"


async def test_notebook_cap_truncates_later_cells(kernel: KernelConnection, tmp_path: Path) -> None:
    nb = notebook("print('a' * 3000)", "print('b' * 3000)", "print('c' * 3000)")
    limits = OutputLimits(cell_bytes=10_000, notebook_bytes=7000, spill_dir=tmp_path)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)
    assert [c.truncated for c in result.cells] == [False, False, True]
    assert len(stream_text(nb.cells[2])) == 7000 - 2 * 3001
    assert spilled(result.spill_path, 2)[0] == "c" * 3000 + "\n"


async def test_errors_stay_visible_after_truncation(kernel: KernelConnection, tmp_path: Path) -> None:
    nb = notebook("print('x' * 5000)\nraise RuntimeError('after the flood')")
    limits = OutputLimits(cell_bytes=1000, spill_dir=tmp_path)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)
    kinds = [o["output_type"] for o in nb.cells[0].outputs]
    assert kinds == ["stream", "error", "stream"]  # head, the error, the marker
    assert result.cells[0].error_value == "after the flood"


async def test_spill_is_capped_too(kernel: KernelConnection, tmp_path: Path) -> None:
    nb = notebook("for i in range(50):\n    print('y' * 1000, flush=True)")
    limits = OutputLimits(cell_bytes=1000, spill_bytes=10_000, spill_dir=tmp_path)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)
    assert result.spill_path.stat().st_size <= 10_000
    assert "the spill is full" in nb.cells[0].outputs[-1]["text"]


async def test_an_execution_from_a_later_cell_keeps_the_spill_of_the_cells_before_it(
    kernel: KernelConnection, tmp_path: Path
) -> None:
    """As after an operator restart: the execution that goes on from cell 1 appends to the spill of
    the one before it (cell 0's full output stays) instead of emptying it."""
    nb = notebook("print('a' * 3000)", "print('b' * 3000)")
    limits = OutputLimits(cell_bytes=1000, spill_dir=tmp_path)
    first = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)
    assert [c.truncated for c in first.cells] == [True, True]

    again = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb, start_index=1)

    assert [c.index for c in again.cells] == [1] and again.cells[0].truncated
    assert again.spill_path == first.spill_path
    assert spilled(again.spill_path, 0)[0] == "a" * 3000 + "\n"
    assert spilled(again.spill_path, 1)[0] == "b" * 3000 + "\n"  # once: the first one's cell 1 went


async def test_a_cell_printing_100_mb_keeps_engine_memory_bounded(
    kernel: KernelConnection, tmp_path: Path
) -> None:
    chunk = 1024 * 1024
    nb = notebook(
        f"block = 'z' * {chunk - 1}\nfor i in range(100):\n    print(block, flush=True)", "print('next')"
    )
    limits = OutputLimits(
        cell_bytes=1024 * 1024,
        notebook_bytes=2 * 1024 * 1024,
        spill_bytes=8 * 1024 * 1024,
        spill_dir=tmp_path,
    )
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    peak = before

    def sample(index: int, output: dict) -> None:
        nonlocal peak
        peak = max(peak, process.memory_info().rss)

    result = await NotebookExecutor(kernel, limits=limits, on_output=sample).execute_notebook(nb)
    growth = peak - before
    print(f"RSS growth while a cell printed 100 MiB: {growth / 2**20:.1f} MiB")

    first = result.cells[0]
    assert first.state is CellState.SUCCEEDED
    assert first.output_bytes == 100 * chunk  # every byte was seen and counted
    assert first.truncated
    assert result.spill_path.stat().st_size <= 8 * 1024 * 1024
    assert stream_text(nb.cells[1]) == "next\n"
    assert growth < 50 * 2**20


async def test_fast_chatty_output_is_not_dropped_by_the_gateway(kernel: KernelConnection) -> None:
    """Stock jupyter_server drops iopub data above 1 MB/s (this cell loses ~70% of its lines on the stock
    gateway); the tuned gateway must deliver every byte."""
    nb = notebook("for i in range(100):\n    print(str(i).rjust(100000, '.'), flush=True)")
    limits = OutputLimits(cell_bytes=16 * 2**20)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)
    assert result.cells[0].state is CellState.SUCCEEDED
    assert stream_text(nb.cells[0]) == "".join(str(i).rjust(100000, ".") + "\n" for i in range(100))
    assert "rate exceeded" not in json.dumps(nb.cells[0].outputs)
