"""Recorded values and a sweep's table on the local control plane: two sweeps over real kernels, one
gluing with the real scrapbook package, one recording the package-free way (with a huge value, values
that are not scalars and a child that fails); the parents' tables, summary.csv and summary.json in the
results repository against each child's notebook, and the CLI's table, CSV, JSON and plot."""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from cli_harness import Cli
from nbkube.cli import main
from nbkube.cli.sweeps import PLOT_SIZE
from nbkube.run.values import MAX_STRING

SCRAPBOOK_NOTEBOOK = [
    ("params", "alpha = 0\nseed = 0", ["parameters"]),
    ("fit", "import scrapbook as sb\naccuracy = alpha / 10 + seed / 100\nprint(accuracy)", []),
    ("record", "sb.glue('accuracy', accuracy)\nsb.glue('label', f'a{alpha}-s{seed}', display=True)", []),
]
PACKAGE_FREE_NOTEBOOK = [
    ("params", "x = 0", ["parameters"]),
    (
        "helper",
        "from IPython.display import display\n"
        "def record(name, value, encoder='json'):\n"
        "    display({f'application/scrapbook.scrap.{encoder}+json':\n"
        "             {'name': name, 'data': value, 'encoder': encoder, 'version': 1}}, raw=True)",
        [],
    ),
    (
        "record",
        "record('loss', 1 / x)\nrecord('log', 'y' * 1_000_000, 'text')\n"
        "record('curve', [1, 2, 3])\nrecord('frame', 'UEFSMQ==', 'pandas')\nrecord('nothing', None)",
        [],
    ),
    ("check", "assert x != 2, 'x is two'", []),
]


def write_notebook(path: Path, cells: list[tuple[str, str, list[str]]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, id=cid, metadata={"tags": tags}) for cid, src, tags in cells]
    nbformat.write(nb, path)
    return path


def get_run(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "nbrun", name, "-o", "json", namespace=namespace).stdout)


@pytest.fixture
def nbkube(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """The CLI in this process (cheaper than a new one per command): exit code, stdout, stderr."""
    monkeypatch.setenv("KUBECONFIG", cli.env["KUBECONFIG"])

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, "-n", cli.namespace])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:32]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def sweeps(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Both sweeps, run together through `nbkube run --matrix` until they end."""
    work = tmp_path_factory.mktemp("sweep-values")
    glued = write_notebook(work / "glued.ipynb", SCRAPBOOK_NOTEBOOK)
    free = write_notebook(work / "free.ipynb", PACKAGE_FREE_NOTEBOOK)
    started = {
        "sw-glue": cli.start(
            "run",
            str(glued),
            "--env",
            "py",
            "--name",
            "sw-glue",
            "--matrix",
            "alpha=1,2",
            "--matrix",
            "seed=1,2",
        ),
        "sw-free": cli.start("run", str(free), "--env", "py", "--name", "sw-free", "--matrix", "x=1,2"),
    }
    done = {}
    for name, proc in started.items():
        out, err = proc.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def test_a_scrapbook_sweeps_table_summary_files_and_cli_agree_with_each_childs_notebook(
    sweeps: dict[str, subprocess.CompletedProcess[str]],
    cli: Cli,
    kubectl: Any,
    operator: Any,
    nbkube: Callable[..., tuple[int, str, str]],
    tmp_path: Path,
) -> None:
    import scrapbook as sb

    ran = sweeps["sw-glue"]
    assert ran.returncode == 0, ran.stdout + ran.stderr
    parent = get_run(kubectl, cli.namespace, "sw-glue")
    status = parent["status"]
    table = status["sweep"]
    assert (table["parameterNames"], table["valueNames"]) == (["alpha", "seed"], ["accuracy", "label"])
    assert [r["parameters"] for r in table["rows"]] == [
        {"alpha": 1, "seed": 1},
        {"alpha": 1, "seed": 2},
        {"alpha": 2, "seed": 1},
        {"alpha": 2, "seed": 2},
    ]
    assert [r["name"] for r in table["rows"]] == table["children"] and table["rowsOmitted"] == 0

    result = status["result"]
    assert result["path"] == f"{cli.namespace}/sw-glue/summary.json"
    summary = json.loads(operator.result(result["path"], result["commit"]))
    rows = list(
        csv.DictReader(
            io.StringIO(operator.result(f"{cli.namespace}/sw-glue/summary.csv", result["commit"]).decode())
        )
    )
    assert [r["name"] for r in rows] == table["children"] == [r["name"] for r in summary["rows"]]
    for row, whole, entry in zip(rows, summary["rows"], table["rows"], strict=True):
        child = get_run(kubectl, cli.namespace, row["name"])
        assert child["status"]["values"] == whole["values"] == entry["values"]
        notebook_file = tmp_path / f"{row['name']}.ipynb"
        notebook_file.write_bytes(
            operator.result(child["status"]["result"]["path"], child["status"]["result"]["commit"])
        )
        # scrapbook reads a value glued with display=True as its display only: the label is read here
        scraps = sb.read_notebook(str(notebook_file)).scraps
        alpha, seed = int(row["alpha"]), int(row["seed"])
        assert scraps.data_dict == {"accuracy": alpha / 10 + seed / 100}
        assert scraps["label"].display["data"]["text/plain"] == repr(f"a{alpha}-s{seed}")
        assert float(row["accuracy"]) == scraps["accuracy"].data and row["label"] == f"a{alpha}-s{seed}"
        assert (row["state"], entry["state"]) == ("Succeeded", "Succeeded")
        assert whole["result"] == {k: child["status"]["result"][k] for k in ("commit", "path")}
        assert int(row["seconds"]) == entry["seconds"] >= 0

    # `nbkube run` ends with the table, `nbkube get SWEEP` prints it, `nbkube sweep` gives it three ways
    assert "accuracy" in ran.stdout and "(nbkube sweep sw-glue)" in ran.stdout
    code, shown, err = nbkube("get", "sw-glue")
    assert code == 0, err
    lines = shown.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("NAME") and "ALPHA" in line))
    assert lines[header].split() == [
        "NAME",
        "ALPHA",
        "SEED",
        "STATE",
        "DURATION",
        "accuracy",
        "label",
        "REASON",
    ]
    first = lines[header + 1].split()
    assert first[:4] == [table["children"][0], "1", "1", "Succeeded"] and first[5:] == ["0.11", "a1-s1", "-"]
    code, as_csv, _ = nbkube("sweep", "sw-glue", "--format", "csv")
    assert code == 0 and list(csv.DictReader(io.StringIO(as_csv))) == rows
    code, as_json, _ = nbkube("sweep", "sw-glue", "--format", "json")
    assert code == 0 and json.loads(as_json)["rows"] == table["rows"]
    code, plotted, err = nbkube(
        "sweep", "sw-glue", "--plot", "x=alpha,y=accuracy,by=seed", "-o", str(tmp_path / "sweep.png")
    )
    assert code == 0, err
    assert "wrote" in plotted and "4 point(s)" in plotted
    assert png_size((tmp_path / "sweep.png").read_bytes()) == PLOT_SIZE
    code, _, err = nbkube("sweep", "sw-glue", "--plot", "x=alpha,y=loss")
    assert code == 2 and "'loss' is neither a parameter nor a recorded value" in err


def test_package_free_values_are_bounded_with_notes_and_a_failed_child_keeps_its_row(
    sweeps: dict[str, subprocess.CompletedProcess[str]],
    cli: Cli,
    kubectl: Any,
    operator: Any,
    nbkube: Callable[..., tuple[int, str, str]],
) -> None:
    ran = sweeps["sw-free"]
    assert ran.returncode == 1, ran.stdout + ran.stderr
    parent = get_run(kubectl, cli.namespace, "sw-free")
    status = parent["status"]
    assert (status["state"], status["reason"]) == ("Failed", "ChildRunsFailed")
    ok, failed = status["sweep"]["rows"]
    assert (ok["state"], failed["state"], failed["reason"]) == ("Succeeded", "Failed", "CellError")
    assert "x is two" in failed["message"] and ok.get("message") is None
    for row, x in ((ok, 1), (failed, 2)):
        child = get_run(kubectl, cli.namespace, row["name"])["status"]
        assert child["values"] == {"loss": 1 / x, "log": "y" * MAX_STRING}
        assert child["valuesOmitted"] == 3
        assert child["valueNotes"] == [
            f"log: a string of 1000000 characters: cut to {MAX_STRING}",
            "curve: a list is not a scalar: left out",
            "frame: a value of encoder 'pandas' is not a scalar: left out",
            "nothing: null is not kept: left out",
        ]
        assert row["values"] == {"loss": 1 / x, "log": "y" * 64}
    result = status["result"]
    rows = list(
        csv.DictReader(
            io.StringIO(operator.result(f"{cli.namespace}/sw-free/summary.csv", result["commit"]).decode())
        )
    )
    assert [(r["x"], r["state"], r["reason"]) for r in rows] == [
        ("1", "Succeeded", "Succeeded"),
        ("2", "Failed", "CellError"),
    ]
    assert "x is two" in rows[1]["message"] and rows[1]["log"] == "y" * MAX_STRING
    code, table, _ = nbkube("sweep", "sw-free")
    assert code == 0
    assert "CellError: cell" in table.splitlines()[2], table
    assert "(check) failed: AssertionError: x is two" in table.splitlines()[2], table
    assert table in ran.stdout  # `nbkube run` of a sweep that failed ends with its table too
