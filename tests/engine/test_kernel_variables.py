"""A kernel's user variables are read without a cell: no execution count, nothing added to the
user's namespace, a hostile repr costs only its own variable, and the list is bounded."""

from __future__ import annotations

import pytest
from nbkube.engine import KernelConnection, NotebookExecutor
from nbkube.engine.variables import user_variables

pytestmark = pytest.mark.gateway


async def run(kernel: KernelConnection, source: str) -> dict:
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    result = await NotebookExecutor(kernel).execute_cell(cell)
    assert result.state == "succeeded", cell.outputs
    return cell


async def test_variables_are_named_typed_and_sized_without_a_cell_or_a_count(
    kernel: KernelConnection,
) -> None:
    await run(
        kernel, "import os\nrows = [1, 2, 3]\nname = 'x' * 500\nclass Grid:\n    shape = (3, 4)\ng = Grid()\n"
    )
    found, truncated = await user_variables(kernel)
    by_name = {v["name"]: v for v in found}
    assert set(by_name) == {"rows", "name", "g"}  # no module, class, IPython name or private name
    assert by_name["rows"] == {"name": "rows", "type": "list", "length": 3, "repr": "[1, 2, 3]"}
    assert by_name["g"]["shape"] == "(3, 4)"
    assert len(by_name["name"]["repr"]) <= 120 and by_name["name"]["length"] == 500
    assert not truncated
    again = await run(kernel, "print(sorted(k for k in globals() if not k.startswith('_')))")
    assert again.execution_count == 2  # the read bumped nothing
    printed = again.outputs[0]["text"]
    assert "d" not in eval(printed)  # nothing added to the user's namespace


async def test_a_hostile_repr_costs_only_its_own_variable_and_the_list_is_bounded(
    kernel: KernelConnection,
) -> None:
    await run(
        kernel,
        "class Evil:\n    def __repr__(self):\n        raise RuntimeError('no')\n    def __len__(self):\n"
        "        raise RuntimeError('no')\nevil = Evil()\nfor i in range(50):\n    globals()[f'v{i}'] = i\n",
    )
    found, truncated = await user_variables(kernel, limit=10)
    assert truncated and len(found) == 10
    everything, _ = await user_variables(kernel)
    evil = next(v for v in everything if v["name"] == "evil")
    assert evil["repr"].startswith("<Evil instance at ") and "length" not in evil  # reprlib's fallback
