"""Notebook execution against a real tuned gateway: outputs, counts, metadata, tags, callbacks."""

from __future__ import annotations

import base64

import nbformat
import pytest
from engine_helpers import notebook, stream_text
from nbkube.engine import CellResult, CellState, KernelConnection, NotebookExecutor

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(120)]


async def test_outputs_become_nbformat_v4_outputs(kernel: KernelConnection) -> None:
    nb = notebook(
        "import sys\nprint('a', flush=True); print('b', flush=True)\n"
        "print('err', file=sys.stderr, flush=True)\nprint('c', flush=True)\n40 + 2",
        "from IPython.display import display, HTML\ndisplay(HTML('<b>bold</b>'))",
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()",
        "h = display(HTML('<i>v1</i>'), display_id=True)",
        "h.update(HTML('<i>v2</i>'))",
        "from IPython.display import clear_output\n"
        "for i in range(3):\n    clear_output(wait=True)\n    print(i)",
        "print('gone')\nclear_output()\nprint('kept')",
    )
    result = await NotebookExecutor(kernel).execute_notebook(nb)

    assert result.state is CellState.SUCCEEDED
    first, html, png, shown, update, cleared, cleared_now = nb.cells
    assert [o["output_type"] for o in first.outputs] == ["stream", "stream", "stream", "execute_result"]
    assert stream_text(first) == "a\nb\nc\n"  # consecutive stdout merged, stderr in between splits
    assert first.outputs[0]["text"] == "a\nb\n"
    assert first.outputs[3]["data"]["text/plain"] == "42"
    assert first.outputs[3]["execution_count"] == first.execution_count
    assert html.outputs[0]["data"]["text/html"] == "<b>bold</b>"
    image = png.outputs[-1]["data"]["image/png"]
    assert base64.b64decode(image).startswith(b"\x89PNG")
    assert shown.outputs[0]["data"]["text/html"] == "<i>v2</i>"  # updated in place by display_id
    assert update.outputs == []
    assert cleared.outputs == [nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": "2\n"})]
    assert stream_text(cleared_now) == "kept\n"
    nbformat.validate(nb)


async def test_execution_counts_timing_metadata_and_cell_ids(kernel: KernelConnection) -> None:
    nb = notebook("x = 1", "# md: text", "x + 1")
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    result = await NotebookExecutor(kernel).execute_notebook(nb)

    assert nb.nbformat_minor == 5
    assert all(cell.get("id") for cell in nb.cells)
    first, _, third = nb.cells
    assert third.execution_count == first.execution_count + 1
    for cell, cell_result in zip([first, third], result.cells, strict=True):
        assert cell_result.cell_id == cell.id
        assert cell_result.execution_count == cell.execution_count
        assert set(cell.metadata.execution) == {
            "iopub.status.busy",
            "iopub.execute_input",
            "shell.execute_reply",
            "iopub.status.idle",
        }
        assert cell.metadata.nbkube["state"] == "succeeded"
        assert cell.metadata.nbkube["duration_ms"] == pytest.approx(cell_result.duration_ms, abs=0.001)
    assert nb.metadata.language_info["name"] == "python"
    assert [r.index for r in result.cells] == [0, 2]
    nbformat.validate(nb)


async def test_error_fails_the_cell_and_stops_the_notebook(kernel: KernelConnection) -> None:
    nb = notebook("x = 1", "raise ValueError('boom')", "x = 2")
    result = await NotebookExecutor(kernel).execute_notebook(nb)

    assert result.state is CellState.FAILED
    assert result.failed_index == 1
    assert [c.state for c in result.cells] == [CellState.SUCCEEDED, CellState.FAILED, CellState.PENDING]
    failed = result.cells[1]
    assert (failed.error_name, failed.error_value) == ("ValueError", "boom")
    assert "ValueError: boom" in (failed.traceback_summary or "")
    assert "\x1b[" not in (failed.traceback_summary or "")
    assert nb.cells[1].outputs[0]["output_type"] == "error"
    assert nb.cells[2].outputs == []


async def test_raises_exception_tag_and_allow_errors_let_the_notebook_go_on(kernel: KernelConnection) -> None:
    tagged = notebook("1 / 0", "y = 5", tags={0: ["raises-exception"]})
    result = await NotebookExecutor(kernel).execute_notebook(tagged)
    assert result.state is CellState.SUCCEEDED
    assert result.cells[0].state is CellState.FAILED and result.cells[0].error_allowed
    assert result.cells[1].state is CellState.SUCCEEDED

    untagged = notebook("1 / 0", "y = 6")
    result = await NotebookExecutor(kernel, allow_errors=True).execute_notebook(untagged)
    assert result.state is CellState.SUCCEEDED
    assert [c.state for c in result.cells] == [CellState.FAILED, CellState.SUCCEEDED]
    assert result.cells[0].error_name == "ZeroDivisionError"


async def test_skip_execution_tag_and_empty_cells_are_skipped(kernel: KernelConnection) -> None:
    nb = notebook("ran = []", "ran.append('skipped one')", "   ", "print(ran)", tags={1: ["skip-execution"]})
    result = await NotebookExecutor(kernel).execute_notebook(nb)
    assert [c.state for c in result.cells] == [
        CellState.SUCCEEDED,
        CellState.SKIPPED,
        CellState.SKIPPED,
        CellState.SUCCEEDED,
    ]
    assert stream_text(nb.cells[3]) == "[]\n"


async def test_input_gets_an_empty_reply_and_marks_the_cell(kernel: KernelConnection) -> None:
    nb = notebook("answer = input('name? ')\nprint(repr(answer))", "print('after')")
    result = await NotebookExecutor(kernel).execute_notebook(nb)
    assert result.cells[0].state is CellState.INPUT_REQUESTED
    assert result.cells[0].input_requested
    assert stream_text(nb.cells[0]) == "''\n"
    assert result.cells[1].state is CellState.SUCCEEDED


@pytest.mark.parametrize("pipeline", [False, True])
async def test_callbacks_sync_and_async_see_msg_ids_outputs_and_results(
    kernel: KernelConnection, pipeline: bool
) -> None:
    events: list[tuple] = []

    def on_cell_start(index: int, cell: nbformat.NotebookNode, msg_id: str) -> None:
        events.append(("start", index, msg_id))

    async def on_output(index: int, output: dict) -> None:
        events.append(("output", index, output["output_type"], output.get("text")))

    async def on_cell_end(index: int, result: CellResult) -> None:
        events.append(("end", index, result.state, result.msg_id))

    nb = notebook("print('one')", "print('two')")
    executor = NotebookExecutor(
        kernel, on_cell_start=on_cell_start, on_output=on_output, on_cell_end=on_cell_end, pipeline=pipeline
    )
    result = await executor.execute_notebook(nb)

    ids = [r.msg_id for r in result.cells]
    assert len(set(ids)) == 2
    expected = [
        ("start", 0, ids[0]),
        ("output", 0, "stream", "one\n"),
        ("end", 0, CellState.SUCCEEDED, ids[0]),
        ("start", 1, ids[1]),
        ("output", 1, "stream", "two\n"),
        ("end", 1, CellState.SUCCEEDED, ids[1]),
    ]
    if not pipeline:
        assert events == expected
    else:
        # The second request may go out before the first cell's end (its reply came before its idle
        # status), never before its reply; each cell's own events keep their order, and the second
        # cell's output comes after the first cell's end.
        assert sorted(events, key=expected.index) == expected
        for index in (0, 1):
            assert [e for e in events if e[1] == index] == [e for e in expected if e[1] == index]
        assert events.index(expected[2]) < events.index(expected[4])


async def test_start_index_leaves_earlier_cells_alone(kernel: KernelConnection) -> None:
    nb = notebook("x = 'first run'", "print('second')", "print('third')")
    result = await NotebookExecutor(kernel).execute_notebook(nb, start_index=1)
    assert [r.index for r in result.cells] == [1, 2]
    assert nb.cells[0].outputs == [] and nb.cells[0].execution_count is None
    assert stream_text(nb.cells[2]) == "third\n"
