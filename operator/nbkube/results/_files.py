"""Files of a results store outside git's objects: temporary files, one syncfs per batch, the writer
flock, a dead writer's debris. Blocking helpers are called in threads."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .layout import TMP_DIR
from .records import StoreLockedError


async def acquire_flock(path: Path, timeout: float) -> int:
    """An exclusive flock on `path` (created if need be), waiting up to `timeout` seconds for it; its fd
    (closing it releases the lock). StoreLockedError when another live process holds it."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                os.close(fd)
                raise StoreLockedError(f"{path.parent} is locked by another writer") from exc
            await asyncio.sleep(0.1)


class BoundedDict(OrderedDict[str, Any]):
    """A small LRU map."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


def is_git_dir(root: Path) -> bool:
    return (root / "HEAD").is_file() and (root / "objects").is_dir() and (root / "config").is_file()


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_files(items: Iterable[tuple[Path, bytes]]) -> None:
    for path, data in items:
        write_file(path, data)


def discard(paths: list[Path]) -> None:
    """Delete temporary files in a worker thread, without waiting (open() sweeps any left over)."""
    if paths:
        asyncio.get_running_loop().run_in_executor(None, unlink_all, paths)


def unlink_all(paths: Iterable[Path]) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def syncfs(path: Path) -> None:
    """Flush the filesystem holding `path`: one call for a whole batch instead of an fsync per object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


_LIBC = _load_libc()


def remove_debris(root: Path) -> None:
    """Runs only while holding the writer flock, so every lock file here belongs to a dead process.

    Git writes objects to temporary files and renames them, and moves refs by renaming `<ref>.lock`,
    so a killed writer leaves at worst these files, never a torn object or ref.
    """
    remove: list[Path] = [root / n for n in ("HEAD.lock", "config.lock", "packed-refs.lock", "index.lock")]
    remove += [root / "shallow.lock", root / "gc.pid"]
    remove += list((root / "refs").rglob("*.lock"))
    objects = root / "objects"
    remove += list(objects.glob("??/tmp_obj_*")) + list(objects.glob("pack/tmp_*"))
    remove += list(objects.glob("pack/.tmp-*"))
    unlink_all(remove)
    for debris in [*objects.glob("tmp_objdir-*"), *objects.glob("incoming-*"), root / TMP_DIR]:
        shutil.rmtree(debris, ignore_errors=True)
