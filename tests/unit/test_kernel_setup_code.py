"""The kernel side of a run's setup (nbkube.engine.setup.KERNEL_SOURCE), run in this process with the comm
replaced, and the operator side's message building: no kernel here (tests/engine/test_run_setup.py has
the real one)."""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from nbkube.engine.setup import (
    INSTALL_CODE,
    KERNEL_SOURCE,
    KernelSetup,
    SetupFailed,
    SetupFile,
    _chunks,
    _expression_result,
)


class FakeComm:
    def __init__(self) -> None:
        self.handler: Any = None

    def on_msg(self, handler: Any) -> None:
        self.handler = handler


@pytest.fixture
def kernel_side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """KERNEL_SOURCE executed as the install code does, with its temporary directory in tmp_path, its
    comm registration recorded, and this process's cwd, env and sys.modules restored afterwards."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(atexit, "register", lambda *args: None)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # finish() updates it
    monkeypatch.delitem(sys.modules, "_nbkube_run", raising=False)
    namespace: dict[str, Any] = {"__name__": "_nbkube_run"}
    exec(KERNEL_SOURCE, namespace)
    registered: list[Any] = []
    namespace["_register"] = lambda: registered.append(namespace["_open"])
    namespace["registered"] = registered
    namespace["home"] = home
    return namespace


def _message(
    files: list[dict[str, Any]], buffers: list[bytes] | None = None, env: dict | None = None
) -> dict:
    data: dict[str, Any] = {"files": files}
    if env is not None:
        data["env"] = env
    return {"content": {"data": data}, "buffers": buffers or []}


def test_begin_receive_finish_places_files_sets_env_and_changes_directory(
    kernel_side: dict[str, Any],
) -> None:
    module = sys.modules["_nbkube_run"]
    assert module.begin("run-", 3, 9, False) == "ok"
    workdir = Path(module.workdir())
    assert workdir.parent.name == f"kernel-{os.getpid()}" and workdir.name.startswith("run-")
    comm = FakeComm()
    kernel_side["registered"][0](comm, _message([{"path": "a/b.txt", "mode": 0o600}], [b"abc"]))
    comm.handler(_message([{"path": "big.bin"}, {"path": "big.bin", "append": True}], [b"12", b"34"]))
    comm.handler(_message([{"path": "c.txt", "b64": "eHk="}], env={"NAME": "value"}))
    assert module.finish() == "ok"
    assert Path.cwd() == workdir
    assert (workdir / "a" / "b.txt").read_bytes() == b"abc"
    assert oct((workdir / "a" / "b.txt").stat().st_mode & 0o777) == "0o600"
    assert (workdir / "big.bin").read_bytes() == b"1234"
    assert (workdir / "c.txt").read_bytes() == b"xy"
    assert os.environ["NAME"] == "value"
    assert module.teardown() == "ok"
    assert not workdir.exists() and Path.cwd() == kernel_side["home"]


def test_finish_refuses_a_setup_that_did_not_all_arrive(kernel_side: dict[str, Any]) -> None:
    module = sys.modules["_nbkube_run"]
    module.begin("run-", 2, 4, False)
    kernel_side["registered"][0](FakeComm(), _message([{"path": "a"}], [b"12"]))
    assert module.finish() == "incomplete: 1 of 2 files, 2 of 4 bytes arrived"
    assert Path.cwd() == kernel_side["home"]


def test_a_path_leaving_the_working_directory_or_written_twice_fails_the_setup(
    kernel_side: dict[str, Any],
) -> None:
    module = sys.modules["_nbkube_run"]
    module.begin("run-", 2, 2, False)
    comm = FakeComm()
    kernel_side["registered"][0](comm, _message([{"path": "../escaped"}], [b"x"]))
    assert "is not below the working directory" in module.finish()
    assert not (Path(module.workdir()).parent / "escaped").exists()
    module.begin("run-", 2, 2, False)
    kernel_side["registered"][0](comm, _message([{"path": "a"}, {"path": "a"}], [b"x", b"y"]))
    assert module.finish().startswith("FileExistsError")


def test_begin_again_replaces_the_previous_directory_and_without_inputs_finishes_at_once(
    kernel_side: dict[str, Any],
) -> None:
    module = sys.modules["_nbkube_run"]
    module.begin("first-", 0, 0, True)
    first = Path(module.workdir())
    assert Path.cwd() == first
    assert module.begin("second-", 0, 0, True) == "ok"
    assert not first.exists() and Path.cwd() == Path(module.workdir())
    assert kernel_side["registered"] == []  # nothing to receive: no comm target


def test_directories_of_kernels_whose_process_is_gone_are_swept(kernel_side: dict[str, Any]) -> None:
    base = Path(kernel_side["BASE"])
    dead = 2**22 + 12345  # above the default pid_max
    for name in (f"kernel-{dead}", "kernel-1", "other"):
        (base / name / "run-x").mkdir(parents=True)
    module = sys.modules["_nbkube_run"]
    module.begin("run-", 0, 0, True)
    assert not (base / f"kernel-{dead}").exists()
    assert (base / "kernel-1").exists() and (base / "other").exists()  # alive, or not a kernel's
    module.teardown()
    assert not (base / f"kernel-{os.getpid()}").exists()


def test_chunks_pack_small_files_and_split_big_ones_below_the_limit() -> None:
    files = [SetupFile("a", b"1" * 3), SetupFile("b", b"2" * 10, mode=0o600), SetupFile("empty", b"")]
    chunks = list(_chunks(files, True, 4))
    assert [[e["path"] for e in entries] for entries, _ in chunks] == [
        ["a", "b"],
        ["b"],
        ["b"],
        ["b", "empty"],
    ]
    assert [sum(map(len, buffers)) for _, buffers in chunks] == [4, 4, 4, 1]
    flat = [(e, b) for entries, buffers in chunks for e, b in zip(entries, buffers, strict=True)]
    assert b"".join(b for e, b in flat if e["path"] == "b") == b"2" * 10
    assert [e.get("append", False) for e, _ in flat if e["path"] == "b"] == [False, True, True, True]
    assert [e.get("mode") for e, _ in flat if e["path"] == "b"] == [0o600, None, None, None]
    text = list(_chunks(files[:1], False, 4))
    assert text == [([{"path": "a", "b64": "MTEx"}], [])]


def test_results_come_from_the_user_expression_and_errors_carry_no_traceback() -> None:
    ok = {"status": "ok", "user_expressions": {"nbkube": {"status": "ok", "data": {"text/plain": "'ok'"}}}}
    assert _expression_result(ok, "x") == "ok"
    failed = {
        "status": "ok",
        "user_expressions": {
            "nbkube": {
                "status": "error",
                "ename": "KeyError",
                "evalue": "'_nbkube_run'",
                "traceback": ["..."],
            }
        },
    }
    with pytest.raises(SetupFailed, match=r"x: KeyError: '_nbkube_run'$"):
        _expression_result(failed, "x")


def test_the_code_the_kernel_runs_holds_nothing_of_a_run() -> None:
    setup = KernelSetup(name="r", files=[SetupFile("f", b"CONTENT")], env={"K": "ENV-VALUE"})
    assert "ENV-VALUE" not in repr(setup) and "CONTENT" not in repr(setup)
    assert "files=1" in repr(setup) and "['K']" in repr(setup)
    # fixed code: the same for every run
    assert "ENV-VALUE" not in INSTALL_CODE and "CONTENT" not in INSTALL_CODE
    compile(INSTALL_CODE, "<install>", "eval")  # one expression: it leaves no name behind
