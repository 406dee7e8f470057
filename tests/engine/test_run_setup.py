"""A run's setup in a real kernel on a real gateway: files, env and the working directory arrive
silently, leave no trace in the notebook or its execution counts, and go at teardown."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from engine_helpers import fresh_kernel, notebook, stream_text
from nbkube.engine import CellState, GatewayClient, KernelConnection, NotebookExecutor
from nbkube.engine.setup import (
    CHUNK_BYTES,
    KernelSetup,
    SetupFailed,
    SetupFile,
    apply_setup,
    prepare,
    teardown,
)
from nbkube_testenv.wait import wait_for

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(120)]


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def _kernel_value(kernel: KernelConnection, code: str) -> str:
    nb = notebook(code)
    await NotebookExecutor(kernel).execute_notebook(nb)
    return stream_text(nb.cells[0])


async def test_files_env_and_the_working_directory_arrive_before_the_first_cell_without_a_trace(
    kernel: KernelConnection,
) -> None:
    big = os.urandom(CHUNK_BYTES + 12345)  # split over two messages
    setup = KernelSetup(
        name="my-run",
        files=[
            SetupFile("data.csv", b"a,b\n1,2\n"),
            SetupFile("images/deep/pixel.bin", big),
            SetupFile("empty.txt", b""),
            SetupFile("secret/token", b"s3cret", mode=0o600),
            SetupFile("helper.py", b"ANSWER = 42\n"),
        ],
        env={"NBKUBE_TEST_VALUE": "v-123", "OTHER": "x y"},
    )
    assert await apply_setup(kernel, setup)
    nb = notebook(
        "import os, hashlib\nprint(open('data.csv').read(), end='')",
        "print(hashlib.sha256(open('images/deep/pixel.bin', 'rb').read()).hexdigest())",
        "print(os.environ['NBKUBE_TEST_VALUE'], os.environ['OTHER'], os.path.getsize('empty.txt'))",
        "print(oct(os.stat('secret/token').st_mode & 0o777), os.getcwd())",
        "print(sorted(k for k in globals() if 'nbkube' in k.lower()), len(In), len(Out))",
        "import helper\nprint(helper.ANSWER)",  # a module beside the notebook imports
    )
    result = await NotebookExecutor(kernel).execute_notebook(nb)
    assert result.state is CellState.SUCCEEDED, [c.error_value for c in result.cells]
    texts = [stream_text(c) for c in nb.cells]
    assert texts[0] == "a,b\n1,2\n"
    assert texts[1].strip() == hashlib.sha256(big).hexdigest()
    assert texts[2] == "v-123 x y 0\n"
    mode, cwd = texts[3].split()
    assert mode == "0o600"
    assert Path(cwd).name.startswith("my-run-") and Path(cwd).parent.name.startswith("kernel-")
    # nothing of the setup in the user's namespace or history; counts start at 1
    assert texts[4] == "[] 6 0\n"
    assert texts[5] == "42\n"
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, 4, 5, 6]

    assert await teardown(kernel) == "ok"
    assert not _exists(cwd)
    assert await _kernel_value(kernel, "import os\nprint(os.path.exists(os.getcwd()))") == "True\n"


async def test_a_run_without_inputs_still_gets_a_fresh_working_directory_in_one_request(
    kernel: KernelConnection,
) -> None:
    assert await apply_setup(kernel, KernelSetup(name="bare"))
    cwd = (await _kernel_value(kernel, "import os\nprint(os.getcwd(), os.listdir('.'))")).split(" ", 1)
    assert Path(cwd[0]).name.startswith("bare-") and cwd[1] == "[]\n"
    assert await teardown(kernel) == "ok"
    assert not _exists(cwd[0])


async def test_setup_again_on_the_same_kernel_replaces_the_first_one(kernel: KernelConnection) -> None:
    """After an operator restart that came before the setup was journaled, it is done again."""
    await apply_setup(kernel, KernelSetup(name="twice", files=[SetupFile("a.txt", b"1")]))
    first = (await _kernel_value(kernel, "import os\nprint(os.getcwd())")).strip()
    await apply_setup(kernel, KernelSetup(name="twice", files=[SetupFile("a.txt", b"2")]))
    second = (await _kernel_value(kernel, "import os\nprint(os.getcwd(), open('a.txt').read())")).split()
    assert not _exists(first) and second[0] != first and second[1] == "2"
    await teardown(kernel)


async def test_a_failed_write_is_reported_without_content_and_the_kernel_stays_clean(
    kernel: KernelConnection, tmp_path: Path
) -> None:
    # a file where a folder must go: the kernel-side code reports the path and errno, never content
    setup = KernelSetup(
        name="clash",
        files=[SetupFile("a", b"secret-content-1"), SetupFile("a/b", b"secret-content-2")],
        env={"X": "secret-env-value"},
    )
    with pytest.raises(SetupFailed) as failure:
        await apply_setup(kernel, setup)
    message = str(failure.value)
    assert "NotADirectoryError" in message or "FileExistsError" in message, message
    assert "secret-content" not in message and "secret-env-value" not in message
    assert "secret-env-value" not in repr(setup)
    leaked = await _kernel_value(kernel, "import os\nprint(os.environ.get('X'))")
    assert leaked == "None\n"
    await teardown(kernel)


async def test_a_kernel_killed_before_its_teardown_leaves_nothing_after_the_next_setup(
    client: GatewayClient,
) -> None:
    async with fresh_kernel(client) as doomed:
        await apply_setup(doomed, KernelSetup(name="doomed", files=[SetupFile("x", b"1")]))
        out = (await _kernel_value(doomed, "import os\nprint(os.getpid(), os.getcwd())")).split()
        pid, cwd = int(out[0]), out[1]
        os.kill(pid, 9)
        # the gateway reaps it (a zombie still counts as alive)
        wait_for(lambda: not _exists(f"/proc/{pid}"), f"kernel process {pid} to be reaped", 30, 0.05)
    assert _exists(cwd)  # os._exit / SIGKILL: no atexit ran
    async with fresh_kernel(client) as other:
        await apply_setup(other, KernelSetup(name="next"))
        assert not _exists(os.path.dirname(cwd))
        await teardown(other)


async def test_a_kernel_that_is_not_python_gets_no_setup(kernel: KernelConnection) -> None:
    class NotPython:
        def __init__(self, inner: KernelConnection) -> None:
            self.inner = inner

        async def kernel_info(self, **_: object) -> dict[str, object]:
            return {"language_info": {"name": "R"}}

    assert await apply_setup(NotPython(kernel), KernelSetup(name="r")) is False  # type: ignore[arg-type]
    with pytest.raises(SetupFailed, match="Python kernel"):
        await apply_setup(NotPython(kernel), KernelSetup(name="r", env={"A": "1"}))  # type: ignore[arg-type]


async def test_an_env_value_the_kernel_cannot_hold_fails_the_setup_without_quoting_it(
    kernel: KernelConnection,
) -> None:
    with pytest.raises(SetupFailed, match=r"env BAD cannot be set: ValueError$") as failure:
        await apply_setup(kernel, KernelSetup(name="nul", env={"BAD": "secret\x00value"}))
    assert "secret" not in str(failure.value)
    await teardown(kernel)


async def test_a_kernel_prepared_ahead_holds_the_setup_module_and_nothing_of_it_shows(
    client: GatewayClient,
) -> None:
    """What a warm pool does to each kernel before a run gets it: the setup then skips the install."""
    async with fresh_kernel(client) as kernel:
        assert await prepare(kernel, await kernel.kernel_info())
        names = "[k for k in globals() if 'nbkube' in k]"
        installed = f"import sys\nprint('_nbkube_run' in sys.modules, len(In), {names})"
        assert await _kernel_value(kernel, installed) == "True 2 []\n"  # silent: no history, no name
        assert await apply_setup(kernel, KernelSetup(name="ahead", files=[SetupFile("a.txt", b"1")]))
        nb = notebook("print(open('a.txt').read())")
        result = await NotebookExecutor(kernel).execute_notebook(nb)
        assert result.state is CellState.SUCCEEDED and stream_text(nb.cells[0]) == "1\n"
        assert nb.cells[0].execution_count == 2
        await teardown(kernel)


async def test_a_kernel_that_is_not_python_is_not_prepared(client: GatewayClient) -> None:
    async with fresh_kernel(client) as kernel:
        assert await prepare(kernel, {"language_info": {"name": "R"}}) is False
        check = "import sys\nprint('_nbkube_run' in sys.modules)"
        assert await _kernel_value(kernel, check) == "False\n"
