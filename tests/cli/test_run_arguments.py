"""`nbkube run` before it touches the cluster: parameters, names, the uploaded notebook, the spec."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbkube.cli import main
from nbkube.cli.run import (
    build_spec,
    config_map_key,
    generated_name,
    notebook_payload,
    parse_matrix,
    parse_parameters,
)


def test_parameter_values_are_yaml_1_2_scalars() -> None:
    given = {
        "alpha": ("0.3", 0.3),
        "name": ("abc", "abc"),
        "n": ("3", 3),
        "neg": ("-4", -4),
        "exp": ("1e-3", 0.001),
        "flag": ("true", True),
        "off": ("False", False),
        "empty": ("", ""),
        "none": ("null", None),
        "quoted": ("'3'", "3"),
        "xs": ("[1, 2]", [1, 2]),
        "eq": ("a=b", "a=b"),
        # YAML 1.1 would turn these into a bool, a date, 90 and infinity
        "country": ("no", "no"),
        "day": ("2024-01-01", "2024-01-01"),
        "time": ("1:30", "1:30"),
        "inf": (".inf", ".inf"),
    }
    params = parse_parameters([f"{name}={text}" for name, (text, _) in given.items()])
    assert params == {name: value for name, (_, value) in given.items()}
    assert isinstance(params["alpha"], float) and isinstance(params["n"], int) and params["flag"] is True


def test_matrix_values_are_split_on_commas() -> None:
    assert parse_matrix(["alpha=0.1,0.3", "seed=1, 2", "kind=a"]) == {
        "alpha": [0.1, 0.3],
        "seed": [1, 2],
        "kind": ["a"],
    }


def _args(**overrides: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "env": "py",
        "parameters": [],
        "matrix": [],
        "parallelism": None,
        "timeout_cell": None,
        "timeout_run": None,
        "retries": None,
        "allow_errors": False,
    }
    return argparse.Namespace(**{**base, **overrides})


def test_spec_carries_every_option_in_the_api_shape() -> None:
    spec = build_spec(
        _args(
            parameters=["alpha=0.3"],
            matrix=["seed=1,2"],
            parallelism=2,
            timeout_cell=30,
            timeout_run=600,
            retries=0,
            allow_errors=True,
        ),
        "run-1",
        "analysis.ipynb",
    )
    assert spec == {
        "environmentRef": {"name": "py"},
        "notebook": {"configMapRef": {"name": "run-1", "key": "analysis.ipynb"}},
        "parameters": {"alpha": 0.3},
        "matrix": {"seed": [1, 2]},
        "parallelism": 2,
        "timeouts": {"cellSeconds": 30, "runSeconds": 600},
        "retries": 0,
        "allowErrors": True,
    }
    assert build_spec(_args(), "r", "k.ipynb") == {
        "environmentRef": {"name": "py"},
        "notebook": {"configMapRef": {"name": "r", "key": "k.ipynb"}},
    }


def test_generated_names_are_dns_labels_from_the_notebook_name() -> None:
    name = generated_name(Path("My Analysis_v2.ipynb"))
    assert re.fullmatch(r"my-analysis-v2-[a-z0-9]{5}", name)
    long = generated_name(Path("x" * 100 + ".ipynb"))
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert config_map_key(Path("dir/My Analysis.ipynb")) == "My-Analysis.ipynb"
    assert config_map_key(Path("notes.json")) == "notes.json.ipynb"


def small_notebook(path: Path, outputs_bytes: int = 0, source_bytes: int = 10) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = '" + "a" * source_bytes + "'", execution_count=1)
    if outputs_bytes:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="o" * outputs_bytes)]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def test_uploaded_notebook_has_its_outputs_stripped(tmp_path: Path) -> None:
    path = small_notebook(tmp_path / "big-outputs.ipynb", outputs_bytes=2 * 1024 * 1024)
    uploaded = json.loads(notebook_payload(path, "big-outputs.ipynb"))
    assert uploaded["cells"][0]["outputs"] == [] and uploaded["cells"][0]["execution_count"] is None
    assert "".join(uploaded["cells"][0]["source"]).startswith("x = 'aaa")


def test_a_notebook_too_big_for_a_config_map_is_a_usage_error_suggesting_repo_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = small_notebook(tmp_path / "huge.ipynb", source_bytes=1024 * 1024 + 1)
    assert main(["run", str(path), "--env", "py", "--kubeconfig", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "more than the 1 MiB a ConfigMap holds" in err and "spec.notebook.repoPath" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "1x=2"], "parameter name '1x' is not a valid identifier"),
        (["-p", "novalue"], "-p 'novalue': expected NAME=VALUE"),
        (["--retries", "99"], "retries"),
        (["--name", "Not_A_Name"], "invalid run name 'Not_A_Name'"),
    ],
)
def test_invalid_run_options_exit_2_before_contacting_the_cluster(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = small_notebook(tmp_path / "nb.ipynb")
    # The kubeconfig does not exist: reaching the cluster would be a different error (exit 1).
    assert main(["run", str(path), "--env", "py", "--kubeconfig", str(tmp_path / "none"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nb.ipynb"]) == 2  # --env is required
    assert main(["frobnicate"]) == 2
    assert main([]) == 2
    assert "usage: nbkube" in capsys.readouterr().err
