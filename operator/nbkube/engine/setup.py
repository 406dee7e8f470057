"""A run's setup in its kernel, before the first cell: a fresh working directory holding the run's input
files, the run's env, and the chdir into it. Knows nothing of Kubernetes.

Warm kernels stay useful: the setup is done in the kernel the run is handed, silently, so it never shows
in the executed notebook, its cells or their execution counts (a silent execute_request bumps no
execution count, echoes no execute_input and stores no history):

1. a silent `execute_request` installs `_nbkube_run` (KERNEL_SOURCE, fixed code holding no value of the
   run) in `sys.modules` and registers a comm target; its `user_expressions` call `begin()`, which makes
   the working directory `<tmp>/nbkube-runs/kernel-<pid>/<name>-XXXX`;
2. the files go as `comm_msg`s whose bytes ride as binary buffers of the websocket's v1 protocol (base64
   in the JSON otherwise), at most CHUNK_BYTES each (the gateway's websocket takes 10 MiB per message);
   env values go in a comm message too: no value of the run is ever part of code the kernel runs, so no
   traceback or history can show one;
3. a silent `execute_request` whose `user_expressions` call `finish()`: it checks that every file and
   byte arrived, sets the env, and changes into the working directory (relative paths then work, as in
   nbclient's resources path or papermill's cwd).

Shell messages are handled in order, so all of them are sent at once and the replies read after (begin's
first: a comm message it was not ready for only makes finish fail); the results come back in the replies'
`user_expressions`, never on iopub. A warm pool's kernels get `_nbkube_run` ahead (`prepare`), so a
run's setup does not wait for its source to be compiled. `teardown()` (run before the kernel is
released) changes back and removes the directory; an exiting kernel removes it too (atexit), and
every setup or teardown removes the directories of kernels whose process is gone.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nbkube.engine.connection import KERNEL_LOST_STATES, KernelConnection
from nbkube.engine.errors import EngineError, ExecutionLost
from nbkube.engine.protocol import make_message, new_id

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024
"""Bytes of file content per comm message (the gateway's websocket refuses messages over 10 MiB)."""
CHUNK_ENTRIES = 1000
"""File entries per comm message (their JSON header stays small)."""
SETUP_REPLY_SECONDS = 300.0
TEARDOWN_SECONDS = 10.0
COMM_TARGET = "nbkube.run.setup"
MODULE = "_nbkube_run"

# The kernel side. Fixed code: nothing of a run (no name, no file, no env value) is ever formatted into
# it; begin() gets the run's name and totals as arguments of a user expression, files and env come over
# the comm. Every function returns "ok" or one line saying what failed (an exception's type and message:
# a path or an errno, never content), so no traceback of it is ever produced.
KERNEL_SOURCE = r'''
import atexit, base64, importlib, os, shutil, sys, tempfile, types

BASE = os.path.join(tempfile.gettempdir(), "nbkube-runs")
TARGET = "nbkube.run.setup"


class _State:
    workdir = None
    home = None
    expected = (0, 0)
    files = 0
    bytes = 0
    error = None
    env = None
    comm = None


s = _State()


def _describe(exc):
    return ("%s: %s" % (type(exc).__name__, exc))[:500]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep():
    """Removes the directories of kernels whose process is gone (killed before their teardown)."""
    try:
        names = os.listdir(BASE)
    except OSError:
        return
    for name in names:
        if not name.startswith("kernel-"):
            continue
        try:
            pid = int(name[len("kernel-"):])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(os.path.join(BASE, name), ignore_errors=True)


def _remove():
    workdir, s.workdir = s.workdir, None
    if workdir is None:
        return
    try:
        if os.path.realpath(os.getcwd()).startswith(os.path.realpath(workdir)):
            os.chdir(s.home if s.home and os.path.isdir(s.home) else tempfile.gettempdir())
    except OSError:
        os.chdir(tempfile.gettempdir())
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(workdir))
    except OSError:
        pass


def _write(path, chunk, append, mode):
    target = os.path.normpath(os.path.join(s.workdir, path))
    if os.path.commonpath([target, s.workdir]) != s.workdir or target == s.workdir:
        raise ValueError("%r is not below the working directory" % path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "ab" if append else "xb") as fh:
        fh.write(chunk)
    if not append:
        s.files += 1
        if mode is not None:
            os.chmod(target, mode)
    s.bytes += chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)


def _receive(msg):
    if s.error is not None:
        return
    try:
        data = msg["content"]["data"]
        buffers = msg.get("buffers") or []
        for index, entry in enumerate(data.get("files") or []):
            if "b64" in entry:
                chunk = base64.b64decode(entry["b64"])
            else:
                chunk = memoryview(buffers[index])  # written as it came, not copied
            _write(entry["path"], chunk, entry.get("append", False), entry.get("mode"))
        env = data.get("env")
        if env:
            s.env.update(env)
    except Exception as exc:
        s.error = _describe(exc)


def _register():
    from IPython import get_ipython

    get_ipython().kernel.comm_manager.register_target(TARGET, _open)


def _open(comm, msg):
    s.comm = comm
    comm.on_msg(_receive)
    _receive(msg)


def begin(prefix, files, size, finish_now):
    try:
        _remove()  # a setup this kernel did before (redone after an operator restart)
        _sweep()
        own = os.path.join(BASE, "kernel-%d" % os.getpid())
        os.makedirs(own, mode=0o700, exist_ok=True)
        if s.home is None:
            s.home = os.getcwd()
        s.workdir = os.path.realpath(tempfile.mkdtemp(prefix=prefix, dir=own))
        s.expected, s.files, s.bytes, s.error, s.env = (files, size), 0, 0, None, {}
        if files or not finish_now:
            _register()
        return finish() if finish_now else "ok"
    except Exception as exc:
        return _describe(exc)


def finish():
    try:
        if s.error is not None:
            return s.error
        if s.workdir is None:
            return "no working directory: the setup did not begin"
        if (s.files, s.bytes) != s.expected:
            return "incomplete: %d of %d files, %d of %d bytes arrived" % (
                s.files, s.expected[0], s.bytes, s.expected[1]
            )
        env, s.env = s.env or {}, None
        for name, value in env.items():
            try:
                os.environ[name] = value
            except Exception as exc:  # its message could quote the value: only its type goes back
                return "env %s cannot be set: %s" % (name, type(exc).__name__)
        os.chdir(s.workdir)
        importlib.invalidate_caches()
        return "ok"
    except Exception as exc:
        return _describe(exc)


def teardown():
    try:
        _remove()
        _sweep()
        return "ok"
    except Exception as exc:
        return _describe(exc)


atexit.register(_remove)
module = types.ModuleType("_nbkube_run")
module.begin, module.finish, module.teardown, module.workdir = begin, finish, teardown, lambda: s.workdir
sys.modules["_nbkube_run"] = module
'''

# An expression statement: installs the module once per kernel, leaves nothing in the user's namespace.
INSTALL_CODE = (
    f"__import__('sys').modules.get({MODULE!r}) or exec({KERNEL_SOURCE!r}, {{'__name__': {MODULE!r}}})"
)
_CALL = f"__import__('sys').modules[{MODULE!r}]"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class SetupFailed(EngineError):
    """The setup could not be done in the kernel; the message says why (never a file's content or an env
    value: it is built from what the kernel-side code reports, a type and a path or errno)."""


@dataclass(frozen=True)
class SetupFile:
    path: str
    """Where the file goes, relative to the working directory (POSIX separators, no `..`)."""
    data: bytes = field(repr=False)
    mode: int | None = None


@dataclass
class KernelSetup:
    """What a run's kernel gets before the first cell. Its repr shows no content and no env value."""

    name: str = "run"
    files: list[SetupFile] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def file_bytes(self) -> int:
        return sum(len(f.data) for f in self.files)

    def __repr__(self) -> str:
        return (
            f"KernelSetup(name={self.name!r}, files={len(self.files)}, bytes={self.file_bytes}, "
            f"env={sorted(self.env)})"
        )


def _silent_request(code: str, expression: str) -> dict[str, Any]:
    return {
        "code": code,
        "silent": True,
        "store_history": False,
        "user_expressions": {"nbkube": expression},
        "allow_stdin": False,
        "stop_on_error": False,
    }


class _SilentRequest:
    """A silent execute_request sent, its reply awaited later (see `reply`): several can be in flight on
    the shell channel, which the kernel handles in order."""

    def __init__(self, connection: KernelConnection, what: str) -> None:
        self.connection = connection
        self.what = what
        self.msg_id = new_id()
        self.subscription = connection.subscribe(self.msg_id)

    async def send(self, code: str, expression: str) -> _SilentRequest:
        try:
            request = _silent_request(code, expression)
            await self.connection.send("shell", "execute_request", request, msg_id=self.msg_id)
        except BaseException:
            self.close()
            raise
        return self

    async def reply(self, timeout: float) -> str:
        """What the expression evaluated to (a str), or SetupFailed. A kernel that dies meanwhile is
        ExecutionLost (the run's retries apply)."""
        what = self.what
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                message = await self.subscription.get(max(0.0, deadline - loop.time()))
                if message is None:
                    raise SetupFailed(f"{what}: no reply from the kernel in {timeout:g}s")
                if message.get("nbkube") == "kernel_died":
                    raise ExecutionLost(f"the kernel died during the run's setup ({what})")
                header = message.get("header") or {}
                content = message.get("content") or {}
                state = content.get("execution_state")
                if header.get("msg_type") == "status" and state in KERNEL_LOST_STATES:
                    raise ExecutionLost(f"the kernel died during the run's setup ({what})")
                if message.get("channel") == "shell" and header.get("msg_type") == "execute_reply":
                    return _expression_result(content, what)
        finally:
            self.close()

    def close(self) -> None:
        self.connection.unsubscribe(self.msg_id)


async def _execute_silently(
    connection: KernelConnection, code: str, expression: str, timeout: float, what: str
) -> str:
    """Runs `code` silently and returns what `expression` evaluated to (a str), or raises SetupFailed."""
    request = await _SilentRequest(connection, what).send(code, expression)
    return await request.reply(timeout)


def _expression_result(content: dict[str, Any], what: str) -> str:
    if content.get("status") != "ok":
        # Our own fixed code failed (it holds no value of the run): its error names the problem.
        raise SetupFailed(f"{what}: {content.get('ename', 'error')}: {content.get('evalue', '')}"[:500])
    result = (content.get("user_expressions") or {}).get("nbkube") or {}
    if result.get("status") != "ok":
        raise SetupFailed(f"{what}: {result.get('ename', 'error')}: {result.get('evalue', '')}"[:500])
    text = (result.get("data") or {}).get("text/plain", "")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return str(value)


def _chunks(
    files: list[SetupFile], binary: bool, limit: int
) -> Iterator[tuple[list[dict[str, Any]], list[bytes]]]:
    """(entries, buffers) per comm message: small files packed together, big ones split in pieces."""
    entries: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    size = 0
    for item in files:
        offset = 0
        while True:
            piece = item.data[offset : offset + max(1, limit - size)] if item.data else b""
            entry: dict[str, Any] = {"path": item.path}
            if offset:
                entry["append"] = True
            elif item.mode is not None:
                entry["mode"] = item.mode
            if binary:
                buffers.append(piece)
            else:
                entry["b64"] = base64.b64encode(piece).decode("ascii")
            entries.append(entry)
            size += len(piece)
            offset += len(piece)
            if size >= limit or len(entries) >= CHUNK_ENTRIES:
                yield entries, buffers
                entries, buffers, size = [], [], 0
            if offset >= len(item.data):
                break
    if entries:
        yield entries, buffers


async def _send_comm(
    connection: KernelConnection, msg_type: str, content: dict[str, Any], buffers: list[bytes]
) -> None:
    message = make_message("shell", msg_type, content, connection.session_id)
    message["buffers"] = buffers
    await connection.send_message(message)


async def apply_setup(
    connection: KernelConnection, setup: KernelSetup, *, chunk_bytes: int = CHUNK_BYTES
) -> bool:
    """Does the run's setup in the kernel (see the module's docstring). False when the kernel is not a
    Python one and the setup has nothing to hand it (nothing is done then); SetupFailed when it has."""
    try:
        info = await connection.kernel_info(reply_timeout=60.0)
    except TimeoutError:
        raise SetupFailed("the kernel did not answer kernel_info in 60s") from None
    language = str((info.get("language_info") or {}).get("name", "")).lower()
    if language != "python":
        if setup.files or setup.env:
            raise SetupFailed(
                f"input files and env need a Python kernel; this environment's kernel runs {language or '?'}"
            )
        return False
    prefix = (_NAME_CHARS.sub("-", setup.name).strip("-.")[:40] or "run") + "-"
    size = setup.file_bytes
    sending = bool(setup.files or setup.env)
    begin = f"{_CALL}.begin({prefix!r}, {len(setup.files)}, {size}, {not sending})"
    beginning = await _SilentRequest(connection, "the setup").send(INSTALL_CODE, begin)
    if not sending:
        result = await beginning.reply(SETUP_REPLY_SECONDS)
        if result != "ok":
            raise SetupFailed(f"the setup in the kernel failed: {result}")
        return True
    # The files follow at once, not after begin's reply: the kernel handles shell messages in order,
    # and what begin reports comes first below (a comm message it was not ready for only fails finish).
    finishing: _SilentRequest | None = None
    try:
        comm_id = new_id()
        opening = {"comm_id": comm_id, "target_name": COMM_TARGET, "data": {}}
        await _send_comm(connection, "comm_open", opening, [])
        for entries, buffers in _chunks(setup.files, connection.sends_buffers, chunk_bytes):
            content = {"comm_id": comm_id, "data": {"files": entries}}
            await _send_comm(connection, "comm_msg", content, buffers)
        if setup.env:
            content = {"comm_id": comm_id, "data": {"env": dict(setup.env)}}
            await _send_comm(connection, "comm_msg", content, [])
        finishing = await _SilentRequest(connection, "writing the input files").send("", f"{_CALL}.finish()")
        result = await beginning.reply(SETUP_REPLY_SECONDS)
        if result != "ok":
            raise SetupFailed(f"the setup in the kernel failed: {result}")
        result = await finishing.reply(SETUP_REPLY_SECONDS)
    finally:
        beginning.close()
        if finishing is not None:
            finishing.close()
    if result != "ok":
        raise SetupFailed(f"writing the input files in the kernel failed: {result}")
    return True


async def prepare(connection: KernelConnection, info: dict[str, Any]) -> bool:
    """Installs the setup's kernel-side module in a Python kernel ahead of any run (a warm pool's
    kernels get it before they are handed out), so a run's setup does not wait for it to be compiled.
    False, with a log line, when the kernel is not a Python one or the install failed: apply_setup then
    installs it itself (or says why it cannot)."""
    language = str((info.get("language_info") or {}).get("name", "")).lower()
    if language != "python":
        return False
    try:
        result = await _execute_silently(connection, INSTALL_CODE, "'ok'", SETUP_REPLY_SECONDS, "preparing")
    except SetupFailed as exc:
        log.warning("kernel %s: the setup module was not installed ahead: %s", connection.kernel_id, exc)
        return False
    return result == "ok"


async def teardown(connection: KernelConnection, timeout: float = TEARDOWN_SECONDS) -> str:
    """Changes back and removes the run's working directory in the kernel ("ok", or what failed). Never
    raises: the kernel is shut down next anyway (and removes the directory when it exits)."""
    try:
        async with asyncio.timeout(timeout):
            return await _execute_silently(
                connection, INSTALL_CODE, f"{_CALL}.teardown()", timeout, "removing the working directory"
            )
    except (EngineError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
