"""Async access to the stock git CLI: one-shot commands and long-lived plumbing pipes.

The results store talks to git only through this module. Hot paths use long-lived processes
(`cat-file --batch`, `hash-object -t blob|tree|commit --stdin-paths`, `update-ref --stdin`), so a
batch of commits costs two pipe round trips instead of a handful of process spawns per commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Deterministic behaviour whatever the user's or the image's git configuration says.
GIT_ENV: Mapping[str, str] = {
    "LC_ALL": "C",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}
PIPE_TIMEOUT_S = 300.0
OID_HEX_LEN = 40


class GitError(RuntimeError):
    """A git command failed; carries its arguments and the tail of its stderr."""


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: str
    type: str
    oid: str


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **GIT_ENV}
    if extra:
        env.update(extra)
    return env


def git_argv(git_dir: Path, *args: str) -> list[str]:
    return ["git", "-c", f"safe.directory={git_dir}", "--git-dir", str(git_dir), *args]


async def run_git(
    git_dir: Path,
    *args: str,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *git_argv(git_dir, *args),
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git_env(env),
    )
    out, err = await proc.communicate(input)
    rc = proc.returncode if proc.returncode is not None else -1
    if check and rc != 0:
        raise GitError(f"git {' '.join(args)} exited {rc}: {err.decode(errors='replace').strip()[-2000:]}")
    return rc, out, err


class GitPipe:
    """One long-lived git process spoken to line by line; serialised by its own lock.

    Any failure (exit, protocol error, timeout) kills the process; the next request starts a fresh one.
    The process starts on the first request; with `idle_seconds`, it is stopped after that long without
    one (taking `lock`, so never in the middle of an exchange), and the next request starts it again.
    """

    def __init__(self, git_dir: Path, *args: str, idle_seconds: float | None = None) -> None:
        self._git_dir = git_dir
        self._args = args
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None
        self._idle_seconds = idle_seconds
        self._last_used = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def _arm_idle_timer(self, delay: float) -> None:
        if self._idle_seconds is not None:
            self._idle_timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._proc is None or self._idle_seconds is None:
            return
        left = self._last_used + self._idle_seconds - time.monotonic()
        if left > 0 or self.lock.locked():
            self._arm_idle_timer(max(left, 0.05))
        elif self._idle_task is None or self._idle_task.done():
            self._idle_task = asyncio.create_task(self._close_if_idle())

    async def _close_if_idle(self) -> None:
        async with self.lock:
            assert self._idle_seconds is not None
            if self._proc is not None and time.monotonic() - self._last_used >= self._idle_seconds:
                await self.close()
            elif self._proc is not None and self._idle_timer is None:
                self._arm_idle_timer(self._idle_seconds)

    async def _process(self) -> asyncio.subprocess.Process:
        self._last_used = time.monotonic()
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                *git_argv(self._git_dir, *self._args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=git_env(),
            )
            self._stderr_tail.clear()
            self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc))
            if self._idle_timer is None:
                self._arm_idle_timer(self._idle_seconds or 0.0)
        return self._proc

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(4096):
            self._stderr_tail += chunk
            del self._stderr_tail[:-4000]

    async def _fail(self, why: str) -> GitError:
        await self.close()
        detail = self._stderr_tail.decode(errors="replace").strip()
        return GitError(f"git {' '.join(self._args)}: {why}: {detail}")

    async def _send(self, data: bytes) -> asyncio.subprocess.Process:
        proc = await self._process()
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise await self._fail(f"write failed ({exc})") from exc
        return proc

    async def lines(self, data: bytes, count: int) -> list[str]:
        """Send `data`, read `count` answer lines (caller holds `lock`)."""
        proc = await self._send(data)
        assert proc.stdout is not None
        out: list[str] = []
        try:
            for _ in range(count):
                line = await asyncio.wait_for(proc.stdout.readline(), PIPE_TIMEOUT_S)
                if not line.endswith(b"\n"):
                    raise await self._fail("unexpected end of output")
                out.append(line[:-1].decode())
        except TimeoutError as exc:
            raise await self._fail("timed out") from exc
        return out

    async def object(self, spec: str) -> tuple[str, str, bytes] | None:
        """`cat-file --batch` request: (oid, type, content), or None when the object is missing."""
        if "\n" in spec:
            raise ValueError("object names cannot contain a newline")
        proc = await self._send(spec.encode() + b"\n")
        assert proc.stdout is not None
        try:
            header = await asyncio.wait_for(proc.stdout.readline(), PIPE_TIMEOUT_S)
            if not header.endswith(b"\n"):
                raise await self._fail("unexpected end of output")
            parts = header.split()
            if len(parts) != 3 or not parts[2].isdigit():
                return None  # "<spec> missing" or "<spec> ambiguous"
            body = await asyncio.wait_for(proc.stdout.readexactly(int(parts[2]) + 1), PIPE_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            raise await self._fail(f"reading {spec!r} failed") from exc
        return parts[0].decode(), parts[1].decode(), body[:-1]

    async def objects(self, specs: list[str]) -> list[tuple[str, str, bytes] | None]:
        """Many `cat-file --batch` requests at once: written by a feeder while the answers are read."""
        if any("\n" in spec for spec in specs):
            raise ValueError("object names cannot contain a newline")
        proc = await self._process()
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        async def feed() -> None:
            for i in range(0, len(specs), 256):
                stdin.write("".join(f"{spec}\n" for spec in specs[i : i + 256]).encode())
                await stdin.drain()

        feeder = asyncio.create_task(feed())
        out: list[tuple[str, str, bytes] | None] = []
        try:
            for _ in specs:
                header = await asyncio.wait_for(stdout.readline(), PIPE_TIMEOUT_S)
                if not header.endswith(b"\n"):
                    raise await self._fail("unexpected end of output")
                parts = header.split()
                if len(parts) != 3 or not parts[2].isdigit():
                    out.append(None)
                    continue
                body = await asyncio.wait_for(stdout.readexactly(int(parts[2]) + 1), PIPE_TIMEOUT_S)
                out.append((parts[0].decode(), parts[1].decode(), body[:-1]))
            await feeder
        except (TimeoutError, asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError) as exc:
            raise await self._fail("batch read failed") from exc
        finally:
            if not feeder.done():
                feeder.cancel()
                await self.close()  # the protocol is out of step: start afresh next time
        return out

    async def close(self) -> None:
        """Stop the process (the caller holds `lock`, or knows nobody else uses the pipe)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
            self._stderr_task = None


def parse_tree(raw: bytes) -> dict[str, TreeEntry]:
    entries: dict[str, TreeEntry] = {}
    i, n = 0, len(raw)
    while i < n:
        sp = raw.index(b" ", i)
        nul = raw.index(b"\0", sp)
        mode = raw[i:sp].decode()
        name = raw[sp + 1 : nul].decode("utf-8", "surrogateescape")
        oid = raw[nul + 1 : nul + 21].hex()
        kind = "tree" if mode == "40000" else "commit" if mode == "160000" else "blob"
        entries[name] = TreeEntry(mode.rjust(6, "0"), kind, oid)
        i = nul + 21
    return entries


class TreeCache:
    """Trees are immutable (content addressed), so a cache of parsed trees never goes stale."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._data: OrderedDict[str, dict[str, TreeEntry]] = OrderedDict()

    def get(self, oid: str) -> dict[str, TreeEntry] | None:
        entries = self._data.get(oid)
        if entries is not None:
            self._data.move_to_end(oid)
        return entries

    def put(self, oid: str, entries: dict[str, TreeEntry]) -> None:
        self._data[oid] = entries
        self._data.move_to_end(oid)
        while len(self._data) > self._size:
            self._data.popitem(last=False)


def object_id(kind: str, data: bytes) -> str:
    """The SHA-1 object id git gives `data` as a `kind` object (git re-computes and we compare)."""
    h = hashlib.sha1(f"{kind} {len(data)}\0".encode())
    h.update(data)
    return h.hexdigest()


def file_blob_id(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_bytes(entries: Mapping[str, TreeEntry]) -> bytes:
    """A tree object's canonical content: entries sorted as git sorts them (a tree's name as if "name/")."""

    def key(item: tuple[str, TreeEntry]) -> bytes:
        name = item[0].encode("utf-8", "surrogateescape")
        return name + b"/" if item[1].type == "tree" else name

    out = bytearray()
    for name, e in sorted(entries.items(), key=key):
        out += e.mode.lstrip("0").encode() + b" " + name.encode("utf-8", "surrogateescape") + b"\0"
        out += bytes.fromhex(e.oid)
    return bytes(out)
