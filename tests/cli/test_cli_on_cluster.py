"""The nbkube CLI against the local control plane with the operator running: run, logs, fetch, cancel."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from cli_harness import Cli
from nbkube.cli import main
from nbkube_testenv.wait import wait_for


def notebook(path: Path, *cells: nbformat.NotebookNode) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    nbformat.write(nb, path)
    return path


def get_run(kubectl: Any, namespace: str, name: str) -> dict[str, Any] | None:
    done = kubectl("get", "nbrun", name, "-o", "json", namespace=namespace, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbkube: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-work")


@pytest.fixture(scope="module")
def parameter_run(cli: Cli, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`nbkube run` of a small notebook with a parameters cell, alpha=0.3 given on the command line."""
    path = notebook(
        workdir / "params.ipynb",
        nbformat.v4.new_markdown_cell("# A parameterised notebook", id="intro"),
        nbformat.v4.new_code_cell(
            "alpha = 1.0\nlabel = 'default'", id="params", metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell("print(f'alpha={alpha} label={label}')", id="show"),
        nbformat.v4.new_code_cell("alpha * 2", id="double"),
    )
    return cli("run", str(path), "--env", "py", "-p", "alpha=0.3", "-p", "label=abc", "--name", "param-run")


def test_run_of_a_parameterised_notebook_exits_0_and_prints_progress(
    parameter_run: subprocess.CompletedProcess[str],
) -> None:
    assert parameter_run.returncode == 0, parameter_run.stderr
    out = parameter_run.stdout
    assert "created" in out.splitlines()[0]
    progress = re.findall(r"^param-run: (\d+)/(\d+) (\w+)", out, re.MULTILINE)
    assert progress, out
    assert progress[-1][0] == progress[-1][1] and progress[-1][2] == "Succeeded"
    assert re.search(r"^param-run Succeeded", out, re.MULTILINE)
    assert re.search(r"^result: \S+/param-run/params\.ipynb at commit [0-9a-f]{12}", out, re.MULTILINE)


def test_run_parameters_are_typed_from_yaml(
    parameter_run: subprocess.CompletedProcess[str], kubectl: Any, cli: Cli
) -> None:
    run = get_run(kubectl, cli.namespace, "param-run")
    assert run is not None
    assert run["spec"]["parameters"] == {"alpha": 0.3, "label": "abc"}


def test_logs_print_each_cells_outputs_under_a_header(
    parameter_run: subprocess.CompletedProcess[str], cli: Cli
) -> None:
    done = cli("logs", "param-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "── cell 3 (show) ──" in lines
    assert lines[lines.index("── cell 3 (show) ──") + 1] == "alpha=0.3 label=abc"
    assert lines[lines.index("── cell 4 (double) ──") + 1] == "0.6"
    assert lines[-1] == "── run Succeeded (Succeeded) ──"
    follow = cli("logs", "param-run", "-f")  # an ended run: -f ends at once, with the same outputs
    assert follow.returncode == 0 and follow.stdout == done.stdout


def test_fetch_writes_the_executed_notebook_with_the_parameters_effect(
    parameter_run: subprocess.CompletedProcess[str], cli: Cli, workdir: Path
) -> None:
    target = workdir / "fetched.ipynb"
    done = cli("fetch", "param-run", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert re.search(r"wrote .*fetched\.ipynb .*param-run/params\.ipynb at commit [0-9a-f]{40}", done.stdout)
    nb = nbformat.read(target, as_version=4)
    nbformat.validate(nb)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "alpha = 0.3" in injected[0].source
    by_id = {c.id: c for c in nb.cells}
    assert by_id["show"].outputs[0]["text"] == "alpha=0.3 label=abc\n"
    assert by_id["double"].outputs[0]["data"]["text/plain"] == "0.6"


def test_fetch_defaults_to_the_run_name_in_the_current_directory(
    parameter_run: subprocess.CompletedProcess[str], cli: Cli, tmp_path: Path
) -> None:
    done = cli("fetch", "param-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    nbformat.validate(nbformat.read(tmp_path / "param-run.ipynb", as_version=4))


def test_clone_and_pull_get_the_namespaces_results_repository_with_stock_git(
    parameter_run: subprocess.CompletedProcess[str], cli: Cli, tmp_path: Path
) -> None:
    done = cli("clone", "results", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    clone = tmp_path / "results"
    nbformat.validate(nbformat.read(clone / cli.namespace / "param-run" / "params.ipynb", as_version=4))
    assert "token" not in (clone / ".git" / "config").read_text().lower()  # no credential kept
    again = cli("pull", str(clone))
    assert again.returncode == 0, again.stderr


def test_get_and_describe_show_the_run_and_its_cells(
    parameter_run: subprocess.CompletedProcess[str], cli: Cli
) -> None:
    table = cli("get").stdout.splitlines()
    assert table[0].split() == ["NAME", "ENV", "STATE", "REASON", "PROGRESS", "DURATION", "AGE"]
    row = next(line.split() for line in table if line.startswith("param-run "))
    assert row[:4] == ["param-run", "py", "Succeeded", "Succeeded"]
    described = cli("describe", "param-run").stdout
    assert re.search(r"^State:\s+Succeeded$", described, re.MULTILINE)
    assert re.search(
        r"^\s+3\s+show\s+succeeded\s+\d+\s+\d+ ms\s+alpha=0.3 label=abc$", described, re.MULTILINE
    )


def test_a_failing_notebook_exits_1_with_the_cell_error_and_its_config_map_goes_with_the_run(
    cli: Cli, workdir: Path, kubectl: Any
) -> None:
    path = notebook(
        workdir / "failing.ipynb",
        nbformat.v4.new_code_cell("x = 1", id="ok"),
        nbformat.v4.new_code_cell("x / 0", id="boom"),
        nbformat.v4.new_code_cell("print('never')", id="after"),
    )
    done = cli("run", str(path), "--env", "py", "--name", "failing-run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^failing-run Failed in \S+: CellError: .*ZeroDivisionError", done.stderr, re.MULTILINE)
    assert "cell 1 (boom) failed: ZeroDivisionError: division by zero" in done.stderr
    logs = cli("logs", "failing-run")
    assert "ZeroDivisionError: division by zero" in logs.stdout and "never" not in logs.stdout
    assert "\x1b[" not in logs.stdout  # not a terminal: no ANSI colours

    run = get_run(kubectl, cli.namespace, "failing-run")
    assert run is not None
    config_map = kubectl.json("get", "configmap", "failing-run", namespace=cli.namespace)
    owners = config_map["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("NotebookRun", "failing-run", run["metadata"]["uid"])
    ]
    assert "failing.ipynb" in config_map["data"]
    kubectl("delete", "nbrun", "failing-run", namespace=cli.namespace)
    wait_for(
        lambda: (
            kubectl("get", "configmap", "failing-run", namespace=cli.namespace, check=False).returncode != 0
        ),
        "the garbage collector to delete the run's ConfigMap",
    )


def test_cancel_makes_a_long_run_cancelled_and_ends_run_and_logs_followers(
    cli: Cli, workdir: Path, kubectl: Any
) -> None:
    path = notebook(
        workdir / "long.ipynb",
        nbformat.v4.new_code_cell(
            "import time\nfor i in range(3600):\n    print('tick', i, flush=True)\n    time.sleep(0.5)",
            id="ticks",
        ),
        nbformat.v4.new_code_cell("print('after')", id="after"),
    )
    runner = cli.start("run", str(path), "--env", "py", "--name", "long-run")
    follower: subprocess.Popen[str] | None = None
    try:

        def ticking() -> bool:
            run = get_run(kubectl, cli.namespace, "long-run")
            cells = ((run or {}).get("status") or {}).get("cells") or []
            return any(c["id"] == "ticks" and c["state"] == "running" for c in cells)

        wait_for(ticking, "long-run's first cell running", timeout=180)
        follower = cli.start("logs", "long-run", "-f")
        done = cli("cancel", "long-run")
        assert done.returncode == 0, done.stderr
        assert "cancel requested" in done.stdout
        out, err = runner.communicate(timeout=300)
        assert runner.returncode == 1, out + err
        assert re.search(r"^long-run Cancelled", err, re.MULTILINE), err
        logs, logs_err = follower.communicate(timeout=300)
        assert follower.returncode == 0, logs_err
        assert "── cell 0 (ticks) ──" in logs and "tick 0" in logs
        assert logs.splitlines()[-1] == "── run Cancelled (Cancelled) ──"
        assert "after" not in logs
    finally:
        for proc in (runner, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    run = get_run(kubectl, cli.namespace, "long-run")
    assert run is not None and run["spec"]["cancel"] is True
    assert run["status"]["state"] == "Cancelled"
    again = cli("cancel", "long-run")
    assert again.returncode == 0 and "already ended Cancelled" in again.stdout


def test_user_mistakes_are_one_line_errors(
    cli: Cli, workdir: Path, kubectl: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", cli.env["KUBECONFIG"])
    ns = ["-n", cli.namespace]
    good = notebook(workdir / "tiny.ipynb", nbformat.v4.new_code_cell("1", id="one"))

    def error(argv: list[str], code: int = 1) -> str:
        assert main(argv) == code
        return one_line_error(capsys.readouterr().err)

    for command in (["logs", "no-such-run"], ["fetch", "no-such-run"], ["cancel", "no-such-run"]):
        assert f"NotebookRun 'no-such-run' not found in namespace {cli.namespace}" in error([*command, *ns])
    assert "NotebookEnvironment 'nope' not found" in error(["run", str(good), "--env", "nope", *ns])
    invalid = workdir / "invalid.ipynb"
    invalid.write_text('{"nbformat": 4, "cells": "no"}')
    assert "invalid.ipynb" in error(["run", str(invalid), "--env", "py", *ns], code=2)


def test_refused_reads_and_missing_results_are_one_line_errors(
    cli: Cli,
    parameter_run: subprocess.CompletedProcess[str],
    kubectl: Any,
    cluster: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = ["-n", cli.namespace]

    def error(argv: list[str]) -> str:
        assert main(argv) == 1
        return one_line_error(capsys.readouterr().err)

    # A user who may read NotebookRuns but not their logs or results: the API server refuses, in words.
    kubectl("create", "serviceaccount", "runs-only", namespace=cli.namespace)
    kubectl(
        "create",
        "role",
        "runs-only",
        "--verb=get,list,watch",
        "--resource=notebookruns.nbkube.io",
        namespace=cli.namespace,
    )
    kubectl(
        "create",
        "rolebinding",
        "runs-only",
        "--role=runs-only",
        f"--serviceaccount={cli.namespace}:runs-only",
        namespace=cli.namespace,
    )
    limited = cluster.service_account_kubeconfig(
        cli.namespace, "runs-only", tmp_path / "runs-only.kubeconfig"
    )
    monkeypatch.setenv("KUBECONFIG", str(limited))
    message = error(["logs", "param-run", *ns])
    assert "reading param-run's logs was refused" in message and "notebookruns/log" in message
    message = error(["fetch", "param-run", *ns])
    assert "reading param-run's result was refused" in message and "repositories/files" in message
    monkeypatch.setenv("KUBECONFIG", cli.env["KUBECONFIG"])
    # A run that cannot start (its environment does not exist) has no result to fetch.
    kubectl.apply(
        {
            "apiVersion": "nbkube.io/v1alpha1",
            "kind": "NotebookRun",
            "metadata": {"name": "no-env-run"},
            "spec": {"environmentRef": {"name": "missing"}, "notebook": {"cells": [{"source": "1"}]}},
        },
        namespace=cli.namespace,
    )
    message = error(["fetch", "no-env-run", *ns])
    assert "no-env-run has no result" in message


def test_run_with_a_matrix_follows_the_sweep_and_names_its_children(
    cli: Cli, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = notebook(
        workdir / "sweep.ipynb",
        nbformat.v4.new_code_cell("alpha = 0", id="params", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(alpha)", id="show"),
    )
    done = cli("run", str(path), "--env", "py", "--matrix", "alpha=1,2", "--name", "sweep-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^sweep-run: 2/2 Succeeded", done.stdout, re.MULTILINE), done.stdout
    children = re.findall(r"^child run: (sweep-run-\S+)$", done.stdout, re.MULTILINE)
    assert len(children) == 2
    outputs = sorted(cli("logs", child).stdout.splitlines()[-2] for child in children)
    assert outputs == ["1", "2"]
    monkeypatch.setenv("KUBECONFIG", cli.env["KUBECONFIG"])
    assert main(["fetch", "sweep-run", "-n", cli.namespace]) == 1
    message = one_line_error(capsys.readouterr().err)
    assert "sweep-run is a sweep" in message and all(child in message for child in children)


def test_schedule_create_list_suspend_resume_and_trigger(
    cli: Cli, workdir: Path, kubectl: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process (main), not as subprocesses: the commands' own work is what is under test here.
    monkeypatch.setenv("KUBECONFIG", cli.env["KUBECONFIG"])

    def nbkube(*argv: str) -> tuple[int, str]:
        code = main([*argv, "-n", cli.namespace])
        out, err = capsys.readouterr()
        assert code == 0, err
        return code, out

    path = notebook(
        workdir / "Morning Report.ipynb",
        nbformat.v4.new_code_cell("day = None", id="params", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print('report for', day)", id="report"),
    )
    _, created = nbkube(
        "schedule", "create", str(path), "--env", "py", "--cron", "0 6 * * *", "--time-zone", "Europe/Berlin",
        "-p", "team=ml", "--scheduled-time-parameter", "day", "--concurrency-policy", "Forbid",
    )  # fmt: skip
    assert f"notebookschedule {cli.namespace}/morning-report created" in created
    sched = kubectl.json("get", "nbsched", "morning-report", namespace=cli.namespace)
    template = sched["spec"]["runTemplate"]["spec"]
    assert template["notebook"]["configMapRef"] == {"name": "morning-report", "key": "Morning-Report.ipynb"}
    assert template["parameters"] == {"team": "ml"}
    config_map = kubectl.json("get", "configmap", "morning-report", namespace=cli.namespace)
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == sched["metadata"]["uid"]

    def ready() -> dict[str, Any] | None:
        obj = kubectl.json("get", "nbsched", "morning-report", namespace=cli.namespace)
        return obj if (obj.get("status") or {}).get("nextScheduleTime") else None

    ready_sched = wait_for(ready, "the schedule's next time", timeout=30)
    _, listed = nbkube("schedule", "list")
    header, row = listed.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND"]
    assert row.split()[0] == "morning-report" and "Europe/Berlin" in row and "Scheduled" in row
    assert ready_sched["status"]["nextScheduleTime"] in row

    nbkube("schedule", "suspend", "morning-report")
    assert (
        kubectl.json("get", "nbsched", "morning-report", namespace=cli.namespace)["spec"]["suspend"] is True
    )
    nbkube("schedule", "resume", "morning-report")
    assert (
        kubectl.json("get", "nbsched", "morning-report", namespace=cli.namespace)["spec"]["suspend"] is False
    )

    _, triggered = nbkube("schedule", "trigger", "morning-report", "--follow")
    found = re.search(r"notebookrun \S+/(morning-report-manual-\w{5}) created", triggered)
    assert found is not None, triggered
    run = get_run(kubectl, cli.namespace, found.group(1))
    assert run is not None and run["status"]["state"] == "Succeeded"
    assert run["metadata"]["ownerReferences"][0]["name"] == "morning-report"
    assert run["metadata"]["annotations"]["nbkube.io/schedule-trigger"] == "manual"
    assert run["spec"]["parameters"]["team"] == "ml"
    assert run["spec"]["parameters"]["day"].endswith(("+01:00", "+02:00"))  # Berlin's time
    kubectl("delete", "nbsched", "morning-report", "--wait=false", namespace=cli.namespace)
