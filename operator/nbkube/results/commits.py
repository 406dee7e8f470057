"""What the store's commits say: messages, trailers and author lines (pure).

Each run commit's message names the run and carries trailers (`Nbkube-Run`, `Nbkube-Run-Uid`,
`Nbkube-Path`, `Nbkube-Final`, `Nbkube-Attempt`...); its author is
`nbkube (<namespace>/<run>) <<uid>@<namespace>.nbkube>`. A commit that rewrites history (a prune, an
import) lists the final results it holds as `Nbkube-Final-Path: <uid> <path>` trailers instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .records import CommitInfo, RunRecord

_TRAILER_RE = re.compile(r"^(Nbkube-[A-Za-z-]+): (.*)$", re.MULTILINE)
_UNSAFE_IDENT = re.compile(r"[<>\n\r\x00]")
FINAL_PATH = "Nbkube-Final-Path"


def run_message(record: RunRecord, final: bool) -> str:
    """The message of a run's commit: its state (or checkpoint progress), reason and trailers."""
    what = record.state if final else f"checkpoint{' ' + record.progress if record.progress else ''}"
    subject = f"nbkube: {record.run_dir} {what} (attempt {record.attempt})"
    body = f"Reason: {one_line(record.reason)}\n\n" if record.reason else ""
    trailers = [
        ("Nbkube-Run", record.run_dir),
        ("Nbkube-Run-Uid", record.uid),
        ("Nbkube-Path", record.result_path),
        ("Nbkube-Environment", one_line(record.environment)),
        ("Nbkube-Attempt", str(record.attempt)),
        ("Nbkube-State", one_line(record.state)),
        ("Nbkube-Final", "true" if final else "false"),
    ]
    return f"{one_line(subject)}\n\n{body}" + "".join(f"{k}: {v}\n" for k, v in trailers if v)


def final_path_trailers(finals: Mapping[str, str]) -> str:
    """`Nbkube-Final-Path` trailers for the final results (uid -> notebook path) a commit holds."""
    return "".join(f"{FINAL_PATH}: {uid} {path}\n" for uid, path in sorted(finals.items()))


def trailers(commit_text: str) -> dict[str, list[str]]:
    """The `Nbkube-*` trailers of a commit object's text, each with its values in order."""
    message = commit_text.split("\n\n", 1)[1] if "\n\n" in commit_text else ""
    out: dict[str, list[str]] = {}
    for key, value in _TRAILER_RE.findall(message):
        out.setdefault(key, []).append(value)
    return out


def final_info(commit: str, commit_text: str, uid: str) -> CommitInfo | None:
    """Where run `uid`'s final result is in `commit` (whose object text is `commit_text`), if it says."""
    found = trailers(commit_text)
    if found.get("Nbkube-Run-Uid") == [uid] and "Nbkube-Path" in found:
        return CommitInfo(commit, found["Nbkube-Path"][0])
    for line in found.get(FINAL_PATH, []):
        kept_uid, _, path = line.partition(" ")
        if kept_uid == uid:
            return CommitInfo(commit, path)
    return None


def run_author(author_name: str, record: RunRecord) -> str:
    """The author line of a run's commits: it names the run and its uid."""
    return (
        f"{clean(f'{author_name} ({record.run_dir})')} <{clean(f'{record.uid}@{record.namespace}.nbkube')}>"
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


def clean(text: str) -> str:
    """Safe inside a git author line: no angle brackets or line breaks."""
    return _UNSAFE_IDENT.sub("", text).strip()
