"""`nbkube session ...` before and after the cluster: arguments into specs and requests, and how
answers print (the commands themselves run on the cluster in test_session_commands.py)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbkube.cli import build_parser, main
from nbkube.cli.errors import CliError, UsageError
from nbkube.cli.sessionops import (
    ExecPrinter,
    edit_body,
    exec_body,
    history_lines,
    render_notebook,
    require_live,
    variables_table,
)
from nbkube.cli.sessions import build_spec, describe, fork_spec, parse_duration, session_row


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_durations_take_seconds_and_units_and_refuse_anything_else() -> None:
    assert parse_duration("90", "--x") == 90
    assert parse_duration("90s", "--x") == 90
    assert parse_duration("30m", "--x") == 1800
    assert parse_duration("1h30m", "--x") == 5400
    assert parse_duration("2d", "--x") == 172800
    for bad in ("soon", "1.5h", "-3m", "m", ""):
        with pytest.raises(UsageError, match="--x"):
            parse_duration(bad, "--x")


def test_create_from_a_local_notebook_names_its_config_map_and_keeps_its_file_name() -> None:
    args = parse(
        "session", "create", "explore", "--env", "py", "--from-file", "nb/analysis.ipynb", "-p", "alpha=0.3",
        "--idle-timeout", "2h", "--max-lifetime", "1d", "--execution-timeout", "90s",
    )  # fmt: skip
    spec = build_spec(args, "explore", "analysis.ipynb")
    assert spec == {
        "environmentRef": {"name": "py"},
        "notebook": {"configMapRef": {"name": "explore", "key": "analysis.ipynb"}, "name": "analysis.ipynb"},
        "parameters": {"alpha": 0.3},
        "idleTimeoutSeconds": 7200,
        "maxLifetimeSeconds": 86400,
        "executionTimeoutSeconds": 90,
    }


def test_create_starts_from_inline_cells_a_repository_path_a_run_or_nothing() -> None:
    cells = build_spec(parse("session", "create", "s", "--env", "py", "--cell", "x = 1", "--cell", "x"))
    assert cells["notebook"] == {"cells": [{"source": "x = 1"}, {"source": "x"}]}
    repo = build_spec(parse("session", "create", "s", "--env", "py", "--repo-path", "team/run-1/fit.ipynb"))
    assert repo["notebook"] == {"repoPath": "team/run-1/fit.ipynb", "name": "fit.ipynb"}
    run = build_spec(parse("session", "create", "s", "--env", "py", "--from-run", "run-1"))
    assert run["notebook"] == {"fork": {"run": "run-1"}}
    assert build_spec(parse("session", "create", "s", "--env", "py")) == {"environmentRef": {"name": "py"}}


def test_create_refuses_what_the_api_would_refuse_before_touching_the_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UsageError, match="idleTimeoutSeconds"):
        build_spec(parse("session", "create", "s", "--env", "py", "--idle-timeout", "5s"))
    with pytest.raises(UsageError, match="parameter"):
        build_spec(parse("session", "create", "s", "--env", "py", "-p", "not a name=1"))
    assert main(["session", "create", "s", "--env", "py", "--cell", "1", "--from-run", "r"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["session", "create", "Not_A_Name", "--env", "py"]) == 2
    assert "invalid session name 'Not_A_Name'" in capsys.readouterr().err


def test_a_fork_takes_the_sources_environment_and_file_name_unless_told() -> None:
    source = {
        "metadata": {"name": "explore"},
        "spec": {"environmentRef": {"name": "py"}, "notebook": {"name": "analysis.ipynb"}},
    }
    spec = fork_spec(parse("session", "fork", "explore", "other", "--at", "ABCDEF1234"), source)
    assert spec == {
        "environmentRef": {"name": "py"},
        "notebook": {"fork": {"session": "explore", "commit": "abcdef1234"}, "name": "analysis.ipynb"},
    }
    elsewhere = fork_spec(
        parse("session", "fork", "explore", "other", "--env", "gpu", "--idle-timeout", "1h"), source
    )
    assert elsewhere["environmentRef"] == {"name": "gpu"} and elsewhere["idleTimeoutSeconds"] == 3600
    assert elsewhere["notebook"]["fork"] == {"session": "explore"}


def test_exec_needs_exactly_one_choice_of_cells() -> None:
    assert exec_body(parse("session", "exec", "s", "a", "b")) == {"cellIds": ["a", "b"]}
    assert exec_body(parse("session", "exec", "s", "--all", "--timeout", "30")) == {"timeoutSeconds": 30}
    assert exec_body(parse("session", "exec", "s", "--from", "c2", "--expect-head", "ABC1234")) == {
        "start": "c2",
        "expectHead": "abc1234",
    }
    assert exec_body(parse("session", "exec", "s", "--code", "print(1)")) == {}
    for argv in (["s"], ["s", "a", "--all"], ["s", "a", "--code", "1"]):
        with pytest.raises(UsageError, match="name the cells"):
            exec_body(parse("session", "exec", *argv))


def test_edit_actions_become_the_operators_edit_requests() -> None:
    insert = edit_body(parse("session", "edit", "s", "insert", "--after", "c0", "--id", "new", "x = 1"))
    assert insert == {
        "action": "insert",
        "cellId": "new",
        "after": "c0",
        "source": "x = 1",
        "cellType": "code",
    }
    markdown = edit_body(parse("session", "edit", "s", "insert", "--top", "--type", "markdown", "# Title"))
    assert markdown == {"action": "insert", "source": "# Title", "cellType": "markdown"}
    replace = edit_body(parse("session", "edit", "s", "replace", "c1", "y = 2", "--expect-head", "abc1234"))
    assert replace == {"action": "replace", "cellId": "c1", "source": "y = 2", "expectHead": "abc1234"}
    assert edit_body(parse("session", "edit", "s", "delete", "c1")) == {"action": "delete", "cellId": "c1"}


def test_edit_reads_a_source_of_dash_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("for i in range(3):\n    print(i)\n"))
    body = edit_body(parse("session", "edit", "s", "replace", "c1", "-"))
    assert body["source"] == "for i in range(3):\n    print(i)\n"


def stream(id_: str, text: str) -> dict[str, Any]:
    return {
        "type": "output",
        "cellId": id_,
        "output": {"output_type": "stream", "name": "stdout", "text": text},
    }


def test_exec_prints_outputs_under_each_cells_header_and_exits_0_when_all_succeeded() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = ExecPrinter(out, False, "s")
    for event in [
        {"type": "cellStarted", "cellId": "c0"},
        stream("c0", "tick 1\n"),
        stream("c0", "tick 2"),
        {"type": "cellFinished", "cellId": "c0", "state": "succeeded"},
        {"type": "cellStarted", "cellId": "c1"},
        {
            "type": "output",
            "cellId": "c1",
            "output": {"output_type": "execute_result", "data": {"text/plain": "42"}},
        },
        {"type": "cellFinished", "cellId": "c1", "state": "succeeded"},
        {
            "type": "result",
            "result": {
                "operation": "execute",
                "head": "0123456789abcdef",
                "message": "execute c0, c1: succeeded (2 of 2 cells, 12 ms)",
                "cells": [{"id": "c0", "state": "succeeded"}, {"id": "c1", "state": "succeeded"}],
            },
        },
    ]:
        printer.handle(event)
    assert printer.finish(err) == 0
    assert out.getvalue() == (
        "── cell c0 ──\ntick 1\ntick 2\n── cell c1 ──\n42\n"
        "execute c0, c1: succeeded (2 of 2 cells, 12 ms); head 0123456789ab\n"
    )
    assert err.getvalue() == ""


def test_exec_of_a_failing_cell_exits_1_naming_the_cell_and_its_error_on_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = ExecPrinter(out, False, "s")
    error = {
        "output_type": "error",
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": [],
    }
    printer.handle({"type": "cellStarted", "cellId": "boom"})
    printer.handle({"type": "output", "cellId": "boom", "output": error})
    printer.handle({"type": "cellFinished", "cellId": "boom", "state": "failed"})
    printer.handle({"type": "streamTruncated", "cellId": "boom"})
    printer.handle(
        {
            "type": "result",
            "result": {
                "head": "fedcba9876543210",
                "message": "execute boom: failed (1 of 1 cells, 3 ms)",
                "cells": [{"id": "boom", "state": "failed", "outputs": [error], "truncated": True}],
                "artifact": "ns/_sessions/s/artifacts/op-000003.jsonl",
            },
        }
    )
    assert printer.finish(err) == 1
    assert out.getvalue().splitlines() == [
        "── cell boom ──",
        "ZeroDivisionError: division by zero",
        "── cell boom: failed ──",
        "── more outputs than the stream carries; `nbkube session show s` has them ──",
    ]
    assert err.getvalue().splitlines() == [
        "execute boom: failed (1 of 1 cells, 3 ms); head fedcba987654",
        "outputs of cell(s) boom were cut; the whole outputs are ns/_sessions/s/artifacts/op-000003.jsonl "
        "at fedcba987654 (nbkube clone)",
        "  cell boom failed: ZeroDivisionError: division by zero",
    ]


def test_an_execution_ending_in_an_error_event_or_without_a_result_is_a_cli_error() -> None:
    printer = ExecPrinter(io.StringIO(), False, "s")
    printer.handle({"type": "error", "code": 500, "reason": "InternalError", "message": "execute failed: x"})
    with pytest.raises(CliError, match=r"failed \(InternalError\): execute failed: x"):
        printer.finish(io.StringIO())
    cut = ExecPrinter(io.StringIO(), False, "s")
    cut.handle({"type": "cellStarted", "cellId": "c0"})
    with pytest.raises(CliError, match="goes on in session s"):
        cut.finish(io.StringIO())


def test_variables_print_as_a_table_under_the_kernels_state() -> None:
    state = {
        "kernelState": "idle",
        "executionCount": 7,
        "truncated": True,
        "variables": [
            {"name": "df", "type": "DataFrame", "shape": "(100, 3)", "repr": "   a  b  c\n0  1  2  3"},
            {"name": "xs", "type": "list", "length": 3, "repr": "[1, 2, 3]"},
            {"name": "s", "type": "str", "repr": "'" + "z" * 100 + "'"},
        ],
    }
    lines = variables_table(state).splitlines()
    assert lines[0] == "kernel idle, execution count 7"
    assert lines[1].split() == ["NAME", "TYPE", "SIZE", "VALUE"]
    assert lines[2].split() == ["df", "DataFrame", "(100,", "3)", "a", "b", "c", "0", "1", "2", "3"]
    assert lines[3].split() == ["xs", "list", "3", "[1,", "2,", "3]"]
    assert lines[4].endswith("z" * 59 + "…")
    assert lines[5] == "(more variables than listed)"
    assert (
        variables_table({"kernelState": "idle", "executionCount": 0}).splitlines()[1] == "no user variables"
    )


def test_history_prints_short_commit_time_and_first_line() -> None:
    entries = [
        {
            "commit": "a" * 40,
            "time": "2025-01-02T03:04:05+00:00",
            "message": "insert code cell x at the top\n\nNbkube-Op: 1",
        },
        {"commit": "b" * 40, "time": "2025-01-02T03:00:00+00:00", "message": ""},
    ]
    assert history_lines(entries).splitlines() == [
        f"{'a' * 12}  2025-01-02T03:04:05+00:00  insert code cell x at the top",
        f"{'b' * 12}  2025-01-02T03:00:00+00:00  ",
    ]


def test_a_notebook_shows_as_cells_with_their_outputs() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title", id="intro"),
        nbformat.v4.new_code_cell("print('hi')", id="c1", execution_count=3),
        nbformat.v4.new_code_cell("x = 1", id="c2"),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    text = render_notebook(dict(nbformat.from_dict(nb)), color=False)
    assert text == (
        "── 0 intro markdown ──\n# Title\n"
        "── 1 c1 code [3] ──\nprint('hi')\n┄┄ output ┄┄\nhi\n"
        "── 2 c2 code ──\nx = 1\n"
    )


class FakeKube:
    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session

    def find_session(self, name: str) -> dict[str, Any]:
        return self.session


def test_operations_on_a_session_that_is_not_ready_say_why() -> None:
    pending = {
        "status": {"state": "Pending", "reason": "KernelLimitReached", "message": "waiting for a kernel"}
    }
    with pytest.raises(
        CliError, match="session s is not Ready yet \\(KernelLimitReached: waiting for a kernel\\)"
    ):
        require_live(FakeKube(pending), "s")  # type: ignore[arg-type]
    with pytest.raises(CliError, match="not Ready yet \\(Pending\\)"):
        require_live(FakeKube({}), "s")  # type: ignore[arg-type]
    ended = {"status": {"state": "Ended", "reason": "IdleTimeout", "message": "no operation for 10s"}}
    with pytest.raises(
        CliError, match="session s has ended \\(IdleTimeout: no operation for 10s\\); its history"
    ):
        require_live(FakeKube(ended), "s")  # type: ignore[arg-type]
    ready = {"status": {"state": "Ready"}}
    assert require_live(FakeKube(ready), "s") is ready  # type: ignore[arg-type]


SESSION = {
    "metadata": {"name": "explore", "namespace": "team", "creationTimestamp": "2025-01-01T00:00:00Z"},
    "spec": {
        "environmentRef": {"name": "py"},
        "notebook": {"fork": {"session": "base", "commit": "abc1234"}},
    },
    "status": {
        "state": "Ready",
        "reason": "KernelReady",
        "message": "kernel 1234abcd on py-gateway-0",
        "kernel": {"state": "busy", "kernelId": "1234abcd-0000", "pod": "py-gateway-0"},
        "operations": 5,
        "executionCount": 4,
        "branch": "sessions/explore/0a1b2c3d",
        "path": "team/_sessions/explore/notebook.ipynb",
        "head": "0123456789abcdef0123",
        "cells": [
            {
                "index": 0,
                "id": "c0",
                "state": "succeeded",
                "executionCount": 4,
                "durationMs": 12,
                "summary": "21",
            }
        ],
    },
}


def test_list_rows_and_describe_show_kernel_branch_and_head() -> None:
    row = session_row(SESSION)
    assert row[:7] == ["explore", "py", "Ready", "KernelReady", "busy", "5", "0123456789ab"]
    text = describe(SESSION)
    assert "Started from:    session base at abc1234" in text
    assert "Kernel:          busy (1234abcd on py-gateway-0)" in text
    assert "Branch:          sessions/explore/0a1b2c3d" in text
    assert text.splitlines()[-1].split() == ["0", "c0", "succeeded", "4", "12", "ms", "21"]


def test_every_session_action_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for action in (
        "create",
        "list",
        "describe",
        "fork",
        "delete",
        "exec",
        "state",
        "log",
        "show",
        "interrupt",
        "restart",
    ):
        assert main(["session", action, "--help"]) == 0
        assert "usage: nbkube session " + action in capsys.readouterr().out
    for edit in ("insert", "replace", "delete"):
        assert main(["session", "edit", "s", edit, "--help"]) == 0
        assert "--expect-head" in capsys.readouterr().out


def test_create_from_a_missing_file_is_a_usage_error_before_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "session",
            "create",
            "s",
            "--env",
            "py",
            "--from-file",
            str(tmp_path / "nope.ipynb"),
            "--kubeconfig",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2
    assert "nope.ipynb" in capsys.readouterr().err
