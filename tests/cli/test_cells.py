"""`nbkube cells ...`: cell-level edits of real notebook files, by nbformat 4.5 cell id."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nbformat
import pytest
from nbkube.cli import main


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title", id="intro"),
        nbformat.v4.new_code_cell("alpha = 1", id="params", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "print(alpha)",
            id="show",
            execution_count=2,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")],
        ),
        nbformat.v4.new_code_cell(
            "alpha * 2",
            id="double",
            execution_count=3,
            outputs=[nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=3)],
        ),
    ]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def nb_path(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "analysis.ipynb")


def read(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def ids(path: Path) -> list[str]:
    return [c.id for c in read(path).cells]


def test_list_prints_index_id_type_tags_and_first_line(
    nb_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cells", "list", str(nb_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["INDEX", "ID", "TYPE", "TAGS", "OUTPUTS", "SOURCE"]
    assert lines[1].split() == ["0", "intro", "markdown", "-", "-", "#", "Title"]
    assert lines[2].split() == ["1", "params", "code", "parameters", "0", "alpha", "=", "1"]
    assert lines[3].split()[:5] == ["2", "show", "code", "-", "1"]


def test_insert_after_id_places_the_cell_and_keeps_other_outputs(
    nb_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = read(nb_path)
    assert (
        main(["cells", "insert", str(nb_path), "--after", "params", "--source", "beta = 2", "--id", "beta"])
        == 0
    )
    assert "inserted code cell beta at index 2" in capsys.readouterr().out
    nb = read(nb_path)
    assert [c.id for c in nb.cells] == ["intro", "params", "beta", "show", "double"]
    assert nb.cells[2].source == "beta = 2"
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None
    assert nb.cells[3] == before.cells[2]
    assert nb.cells[4] == before.cells[3]


def test_insert_before_id_and_at_index(nb_path: Path) -> None:
    assert main(["cells", "insert", str(nb_path), "--before", "intro", "--source", "a", "--id", "first"]) == 0
    assert main(["cells", "insert", str(nb_path), "--at", "2", "--source", "b", "--id", "third"]) == 0
    assert main(["cells", "insert", str(nb_path), "--at", "-1", "--source", "c", "--id", "last"]) == 0
    assert ids(nb_path) == ["first", "intro", "third", "params", "show", "double", "last"]


def test_insert_markdown_with_tags_and_generated_id(nb_path: Path) -> None:
    assert (
        main(
            ["cells", "insert", str(nb_path), "--at", "0", "--markdown", "--source", "## Notes", "--tag", "a"]
        )
        == 0
    )
    assert (
        main(["cells", "insert", str(nb_path), "--at", "0", "--source", "x = 1", "--tag", "p", "--tag", "q"])
        == 0
    )
    nb = read(nb_path)
    assert nb.cells[1].cell_type == "markdown" and nb.cells[1].source == "## Notes"
    assert nb.cells[1].metadata["tags"] == ["a"]
    assert nb.cells[0].cell_type == "code" and nb.cells[0].metadata["tags"] == ["p", "q"]
    generated = [nb.cells[0].id, nb.cells[1].id]
    assert all(1 <= len(i) <= 64 for i in generated) and len(set(ids(nb_path))) == 6


def test_insert_reads_the_source_from_a_file(nb_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "cell.py"
    src.write_text("import math\nprint(math.pi)\n")
    assert main(["cells", "insert", str(nb_path), "--at", "4", "--file", str(src), "--id", "pi"]) == 0
    assert read(nb_path).cells[4].source == "import math\nprint(math.pi)\n"


@pytest.mark.parametrize("bad_id", ["has space", "x" * 65, "dots.not.allowed", "ü"])
def test_insert_rejects_an_invalid_id_and_leaves_the_file_alone(
    nb_path: Path, bad_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    original = nb_path.read_bytes()
    assert main(["cells", "insert", str(nb_path), "--at", "0", "--source", "x", "--id", bad_id]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbkube: error: invalid cell id") and err.count("\n") == 1
    assert nb_path.read_bytes() == original


def test_insert_rejects_an_id_already_in_use(nb_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "insert", str(nb_path), "--at", "0", "--source", "x", "--id", "show"]) == 2
    assert "'show' is already used" in capsys.readouterr().err
    assert ids(nb_path) == ["intro", "params", "show", "double"]


def test_unknown_anchor_id_names_the_ids_there_are(nb_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "insert", str(nb_path), "--after", "nope", "--source", "x"]) == 2
    err = capsys.readouterr().err
    assert "no cell with id 'nope'" in err and "intro, params, show, double" in err
    assert "Traceback" not in err


def test_insert_needs_exactly_one_position(nb_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "insert", str(nb_path), "--after", "show", "--at", "1", "--source", "x"]) == 2
    assert main(["cells", "insert", str(nb_path), "--source", "x"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert ids(nb_path) == ["intro", "params", "show", "double"]


def test_at_out_of_range_is_a_usage_error(nb_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "insert", str(nb_path), "--at", "9", "--source", "x"]) == 2
    assert "--at 9 is out of range: the notebook has 4 cell(s)" in capsys.readouterr().err


def test_replace_changes_the_source_and_clears_only_that_cells_outputs(nb_path: Path) -> None:
    before = read(nb_path)
    assert main(["cells", "replace", str(nb_path), "show", "--source", "print(alpha + 1)"]) == 0
    nb = read(nb_path)
    assert nb.cells[2].id == "show" and nb.cells[2].source == "print(alpha + 1)"
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None
    assert nb.cells[3] == before.cells[3]
    assert nb.cells[1] == before.cells[1]


def test_replace_keeps_tags_and_reads_stdin(
    nb_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("alpha = 5\n"))
    assert main(["cells", "replace", str(nb_path), "params", "--file", "-"]) == 0
    cell = read(nb_path).cells[1]
    assert cell.source == "alpha = 5\n" and cell.metadata["tags"] == ["parameters"]


def test_delete_removes_the_cell_and_keeps_the_rest(nb_path: Path) -> None:
    before = read(nb_path)
    assert main(["cells", "delete", str(nb_path), "show"]) == 0
    nb = read(nb_path)
    assert [c.id for c in nb.cells] == ["intro", "params", "double"]
    assert nb.cells[2] == before.cells[3]


def test_delete_of_a_missing_id_fails(nb_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "delete", str(nb_path), "missing"]) == 2
    assert "no cell with id 'missing'" in capsys.readouterr().err


def test_older_notebook_is_upgraded_to_4_5_with_generated_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.ipynb"
    old = {
        "nbformat": 4,
        "nbformat_minor": 2,
        "metadata": {},
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": [], "execution_count": None},
            {
                "cell_type": "code",
                "metadata": {},
                "source": "x",
                "execution_count": 1,
                "outputs": [
                    {
                        "output_type": "execute_result",
                        "data": {"text/plain": "1"},
                        "metadata": {},
                        "execution_count": 1,
                    }
                ],
            },
        ],
    }
    path.write_text(json.dumps(old))
    assert main(["cells", "insert", str(path), "--at", "2", "--source", "x + 1", "--id", "next"]) == 0
    assert "upgraded from nbformat 4.2 to 4.5" in capsys.readouterr().err
    raw = json.loads(path.read_text())
    assert raw["nbformat_minor"] == 5
    nb = read(path)
    generated = [c.id for c in nb.cells[:2]]
    assert all(isinstance(i, str) and 1 <= len(i) <= 64 for i in generated) and generated[0] != generated[1]
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "1"
    assert nb.cells[2].id == "next"


def test_duplicate_ids_in_the_file_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_notebook(tmp_path / "dup.ipynb")
    raw = json.loads(path.read_text())
    raw["cells"][1]["id"] = "intro"
    path.write_text(json.dumps(raw))
    assert main(["cells", "delete", str(path), "show"]) == 2
    err = capsys.readouterr().err
    assert "intro" in err and err.startswith("nbkube: error:")
    assert json.loads(path.read_text()) == raw


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all", "is not a notebook: invalid JSON"),
        ('{"cells": []}', "is not a notebook: no nbformat version"),
        (
            '{"nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "code"}]}',
            "cell 0 has an invalid id",
        ),
        (
            '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
            '"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": "x"}]}',
            "fails nbformat validation",
        ),
    ],
)
def test_an_invalid_notebook_is_a_one_line_error(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text(content)
    assert main(["cells", "list", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cells", "list", str(tmp_path / "nope.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_file_is_replaced_atomically_with_its_mode_kept(nb_path: Path) -> None:
    os.chmod(nb_path, 0o600)
    inode = nb_path.stat().st_ino
    assert main(["cells", "delete", str(nb_path), "intro"]) == 0
    assert nb_path.stat().st_ino != inode  # a new file renamed over the old one, not a rewrite in place
    assert stat.S_IMODE(nb_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in nb_path.parent.iterdir()) == ["analysis.ipynb"]
    assert nb_path.read_text().endswith("}\n")
