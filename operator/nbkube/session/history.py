"""Where a session's history lives in its namespace's results repository, and how it reads.

Each session has its own branch, `sessions/<name>/<uid8>` (the uid keeps a re-created session of the
same name from continuing another's history), holding the session's notebook at
`<namespace>/_sessions/<name>/<file>` (a leading "_" is not a Kubernetes name, so no run's directory
can be the same) and the whole outputs of truncated cells beside it, one file per execution. Every
commit message's first line says what happened; trailers say it for tools.
"""

from __future__ import annotations

from collections.abc import Mapping

SESSIONS_DIR = "_sessions"
BRANCH_PREFIX = "sessions/"
ARTIFACTS_DIR = "artifacts"


def branch_name(name: str, uid: str) -> str:
    return f"{BRANCH_PREFIX}{name}/{uid[:8]}"


def session_directory(namespace: str, name: str) -> str:
    return f"{namespace}/{SESSIONS_DIR}/{name}"


def notebook_path(namespace: str, name: str, file_name: str) -> str:
    return f"{session_directory(namespace, name)}/{file_name}"


def artifact_path(namespace: str, name: str, operation: int) -> str:
    """The whole outputs of an execution's truncated cells (the engine's JSON lines)."""
    return f"{session_directory(namespace, name)}/{ARTIFACTS_DIR}/op-{operation:06d}.jsonl"


TRAILER_PREFIX = "Nbkube-"
OPERATION_KEY = "Operation-Number"
OPERATION_TRAILER = TRAILER_PREFIX + OPERATION_KEY
SESSION_KEY = "Session"
SESSION_TRAILER = TRAILER_PREFIX + SESSION_KEY
"""Every commit of a session carries it: `<namespace>/<name>`."""


def operation_number(message: str) -> int:
    """The number of operations up to a commit, from its trailer (0 for the branch's first commit)."""
    for line in reversed(message.splitlines()):
        if line.startswith(f"{OPERATION_TRAILER}:"):
            try:
                return int(line.split(":", 1)[1])
            except ValueError:
                return 0
    return 0


def commit_message(summary: str, trailers: Mapping[str, str | int | None]) -> str:
    """A one-line summary, then `Nbkube-<Key>: value` trailers (None values left out)."""
    first = " ".join(summary.split())[:200]
    lines = [
        f"Nbkube-{key}: {' '.join(str(value).split())[:500]}"
        for key, value in trailers.items()
        if value is not None
    ]
    return first + ("\n\n" + "\n".join(lines) if lines else "") + "\n"
