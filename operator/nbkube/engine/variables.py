"""A kernel's user variables (name, type, shape or length, a short repr), read without a cell.

One silent `execute_request` (no history, no execution count) with empty code and a user expression
that runs fixed code in a throw-away namespace: nothing is added to the user's namespace, and a
hostile `__repr__` or `__len__` only costs its own variable (its repr says it failed). Bounded: at most
`limit` variables, each repr cut short.
"""

from __future__ import annotations

import json
from typing import Any

from nbkube.engine.connection import KernelConnection

DEFAULT_LIMIT = 200
REPR_CHARS = 120
STATE_REPLY_SECONDS = 10.0

# Runs in the kernel (Python kernels): fixed code, no value of the caller.
_SOURCE = r"""
import json, reprlib, types
_hidden = {"In", "Out", "exit", "quit", "get_ipython"}
_skip = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
def _cut(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
def variables(ns, limit, repr_chars):
    out, truncated = [], False
    r = reprlib.Repr()
    r.maxstring = r.maxother = repr_chars
    for name, value in list(ns.items()):
        if name.startswith("_") or name in _hidden or isinstance(value, _skip):
            continue
        if len(out) >= limit:
            truncated = True
            break
        entry = {"name": name, "type": type(value).__name__}
        try:
            shape = getattr(value, "shape", None)
            if shape is not None:
                entry["shape"] = _cut(str(tuple(shape)), 60)
            elif hasattr(value, "__len__"):
                entry["length"] = int(len(value))
        except Exception:
            pass
        try:
            entry["repr"] = _cut(r.repr(value), repr_chars)
        except Exception as exc:
            entry["repr"] = "<repr failed: %s>" % type(exc).__name__
        out.append(entry)
    return json.dumps({"variables": out, "truncated": truncated})
"""


def _expression(limit: int, repr_chars: int) -> str:
    return f"(lambda d: (exec({_SOURCE!r}, d), d['variables'](globals(), {limit}, {repr_chars}))[1])({{}})"


class VariablesUnavailable(Exception):
    """The kernel did not say (not a Python kernel, busy past the timeout, or it failed)."""


async def user_variables(
    connection: KernelConnection,
    *,
    limit: int = DEFAULT_LIMIT,
    repr_chars: int = REPR_CHARS,
    timeout: float = STATE_REPLY_SECONDS,
) -> tuple[list[dict[str, Any]], bool]:
    """The kernel's user variables and whether more were left out."""
    content = {
        "code": "",
        "silent": True,
        "store_history": False,
        "user_expressions": {"nbkube": _expression(limit, repr_chars)},
        "allow_stdin": False,
        "stop_on_error": False,
    }
    try:
        reply = await connection.request("shell", "execute_request", content, reply_timeout=timeout)
    except TimeoutError as exc:
        raise VariablesUnavailable(f"the kernel did not answer in {timeout:g}s") from exc
    result = (reply.get("content") or {}).get("user_expressions", {}).get("nbkube") or {}
    if result.get("status") != "ok":
        raise VariablesUnavailable(f"{result.get('ename', 'error')}: {result.get('evalue', '')}"[:500])
    text = (result.get("data") or {}).get("text/plain", "")
    try:
        decoded = json.loads(_unquote(text))
    except ValueError as exc:
        raise VariablesUnavailable("the kernel's answer is not readable") from exc
    return list(decoded.get("variables") or []), bool(decoded.get("truncated"))


def _unquote(text: str) -> str:
    """text/plain of a str is its repr: a quoted Python literal."""
    import ast

    value = ast.literal_eval(text)
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value
