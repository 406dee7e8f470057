"""`nbkube run NOTEBOOK --file PATH`: files and folders uploaded with the notebook and placed beside it in
the run's working directory; checked before anything is created, then run on the local control plane."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from cli_harness import Cli
from nbkube.api import NotebookRunSpec
from nbkube.cli import main
from nbkube.cli.uploads import CONFIGMAP_LIMIT, collect, files_spec

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s, id=f"c{i}") for i, s in enumerate(sources)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Path]:
    """proj/analysis.ipynb with proj/data/table.csv beside it, and a folder and a file outside proj/."""
    notebook = write_notebook(tmp_path / "proj" / "analysis.ipynb", "1")
    (tmp_path / "proj" / "data").mkdir()
    (tmp_path / "proj" / "data" / "table.csv").write_text("a,b\n1,2\n")
    images = tmp_path / "shared" / "images"
    (images / "icons").mkdir(parents=True)
    (images / "logo.png").write_bytes(PNG)
    (images / "icons" / "dot.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_text("n")
    return {
        "notebook": notebook,
        "csv": tmp_path / "proj" / "data" / "table.csv",
        "images": images,
        "notes": tmp_path / "notes.txt",
        "proj": tmp_path / "proj",
    }


def test_files_keep_their_place_relative_to_the_notebook_and_others_go_in_by_name(
    project: dict[str, Path],
) -> None:
    uploads = collect(
        [project["csv"], project["images"], project["notes"]], project["notebook"], {"analysis.ipynb"}
    )
    assert [(u.path, u.size) for u in uploads] == [
        ("data/table.csv", 8),
        ("images/icons/dot.png", len(PNG)),
        ("images/logo.png", len(PNG)),
        ("notes.txt", 1),
    ]
    keys = [u.key for u in uploads]
    assert len(set(keys)) == len(keys) and "analysis.ipynb" not in keys
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", k) for k in keys)
    spec = {
        "environmentRef": {"name": "py"},
        "notebook": {"configMapRef": {"name": "r", "key": "analysis.ipynb"}},
        "files": files_spec("r", uploads),
    }
    parsed = NotebookRunSpec.model_validate(spec)  # what the API server gets is valid
    assert [(i.key, i.path) for i in parsed.files[0].config_map.items] == [(u.key, u.path) for u in uploads]


def test_the_notebooks_own_folder_goes_in_whole_without_the_notebook(project: dict[str, Path]) -> None:
    uploads = collect([project["proj"]], project["notebook"], {"analysis.ipynb"})
    assert [u.path for u in uploads] == ["data/table.csv"]


def _run(tmp_path: Path, *argv: str) -> list[str]:
    return ["run", *argv, "--env", "py", "--kubeconfig", str(tmp_path / "no-kubeconfig")]


def test_files_past_the_config_map_limit_are_refused_before_anything_is_created(
    project: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * CONFIGMAP_LIMIT)
    # The kubeconfig does not exist: reaching the cluster would be a different error (exit 1).
    assert main(_run(tmp_path, str(project["notebook"]), "--file", str(big))) == 2
    err = capsys.readouterr().err
    assert "more than the 1 MiB the run's ConfigMap holds" in err, err
    assert "volume of the environment" in err and "spec.files[].repoPath" in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["missing.csv"], "--file missing.csv: no such file or folder"),
        (["a/x.csv", "b/x.csv"], "would both be x.csv in the working directory"),
    ],
)
def test_bad_file_options_exit_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    files: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    notebook = write_notebook(tmp_path / "nb" / "nb.ipynb", "1")
    for name in ("a/x.csv", "b/x.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("1")
    argv = [str(notebook)] + [arg for f in files for arg in ("--file", f)]
    assert main(_run(tmp_path, *argv)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.cluster
def test_run_with_files_and_folders_reads_them_beside_the_notebook_on_the_cluster(
    cli: Cli, tmp_path: Path, kubectl: Any
) -> None:
    write_notebook(
        tmp_path / "analysis.ipynb",
        "import csv, os\nprint(list(csv.reader(open('data.csv'))))",
        "from IPython.display import Image, display\ndisplay(Image(filename='images/logo.png'))",
        "print(sorted(os.path.join(d, f) for d, _, fs in os.walk('.') for f in fs))",
    )
    (tmp_path / "data.csv").write_text("x,y\n1,2\n")
    (tmp_path / "images" / "icons").mkdir(parents=True)
    (tmp_path / "images" / "logo.png").write_bytes(PNG)
    (tmp_path / "images" / "icons" / "dot.png").write_bytes(PNG)
    done: subprocess.CompletedProcess[str] = cli(
        "run",
        "analysis.ipynb",
        "--env",
        "py",
        "--file",
        "data.csv",
        "--file",
        "images/",
        "--name",
        "with-files",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    fetched = tmp_path / "out.ipynb"
    assert cli("fetch", "with-files", "-o", str(fetched)).returncode == 0
    nb = nbformat.read(fetched, as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "[['x', 'y'], ['1', '2']]\n"
    assert base64.b64decode(nb.cells[1].outputs[0]["data"]["image/png"]) == PNG
    assert (
        nb.cells[2].outputs[0]["text"]
        == str(["./data.csv", "./images/icons/dot.png", "./images/logo.png"]) + "\n"
    )

    run = kubectl.json("get", "nbrun", "with-files", namespace=cli.namespace)
    config_map = kubectl.json("get", "configmap", "with-files", namespace=cli.namespace)
    assert [o["uid"] for o in config_map["metadata"]["ownerReferences"]] == [run["metadata"]["uid"]]
    assert sorted(config_map["data"]) == ["analysis.ipynb"] and len(config_map["binaryData"]) == 3
    items = run["spec"]["files"][0]["configMap"]["items"]
    assert sorted(i["path"] for i in items) == ["data.csv", "images/icons/dot.png", "images/logo.png"]
    assert run["spec"]["files"][0]["configMap"]["name"] == "with-files"
