"""Keeping the gateway's token from the kernels it runs (kernel-side module: stdlib only).

A kernel runs arbitrary user code under the gateway's uid. With the token it could list every kernel of
the pod and execute code in them through the gateway's API. So the gateway takes the token out of its
environment (which kernels and anything else it spawns would inherit) and marks itself non-dumpable
(prctl PR_SET_DUMPABLE 0): Linux then gives `/proc/<pid>/environ`, `/proc/<pid>/mem` and ptrace of the
gateway only to processes with CAP_SYS_PTRACE, which a gateway pod (capabilities dropped, non-root)
never has. The initial environment stays in the process's memory, but behind that same wall.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

TOKEN_VARIABLE = "KG_AUTH_TOKEN"
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    result = int(libc.prctl(option, value, 0, 0, 0))
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def seal_token() -> str | None:
    """The token, removed from the environment, with this process made non-dumpable."""
    token = os.environ.pop(TOKEN_VARIABLE, None)
    _prctl(PR_SET_DUMPABLE, 0)
    return token


def dumpable() -> bool:
    return _prctl(PR_GET_DUMPABLE) == 1
