"""Where things are in a results repository: the one module for result paths, file names and refs.

A repository is bare (its `root` is the git directory); the branch `main` holds::

    <namespace>/<run>/<notebook>.ipynb    executed notebook, metadata["nbkube"] = run, uid, parameters...
    <namespace>/<run>/outputs/<name>      spilled full outputs (capped per run, `nbkube.results.spills`)
    <namespace>/<run>/nbkube.json         the run record: uid, state, attempt, final, spills, committedAt
    <namespace>/<sweep>/summary.csv       a sweep's table (and summary.json), beside its children's
                                          directories <namespace>/<sweep>-<i>-<hash>/ (no notebook)
    <namespace>/_<dir>/...                source notebooks of a namespace's store (`add_notebook`)
    _<anything>/...                       source notebooks of a store without a namespace

`<run>` is the run's name and `<notebook>` its notebook's file name, each mapped to a safe name
(`nbkube.names.safe_component`: "_" and a hash of the name) when git or a checkout would refuse it or
break on it (`*.lock`, a leading ".", `.git`, `git~1`, more than 255 bytes); `nbkube.json` keeps the name.
A final result also sets `refs/nbkube/final/<uid>` (hidden from clones). Beside the objects, the git
directory holds the writer's flock and a directory for temporary files.
"""

from __future__ import annotations

from nbkube.names import is_safe_component, safe_component

BRANCH = "refs/heads/main"
"""The branch runs commit to (HEAD points to it)."""
BRANCH_NAME = BRANCH.removeprefix("refs/heads/")
HIDDEN_REFS = "refs/nbkube"
"""Refs clones never see (`uploadpack.hideRefs`)."""
FINAL_REFS = f"{HIDDEN_REFS}/final/"
RUN_JSON = "nbkube.json"
OUTPUTS_DIR = "outputs"
SPILL_FILE = "outputs.jsonl"
"""The name a run's spill (the engine's JSON lines of full outputs) is committed as, below OUTPUTS_DIR."""
NOTEBOOK_SUFFIX = ".ipynb"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
"""A sweep's table in its parent's directory (nbkube.run.sweeptable); its result path names the JSON."""
FLOCK_NAME = "nbkube-writer.flock"
"""The writer lock in the git directory (or, for ResultsRepositories, in the root of every one)."""
TMP_DIR = "nbkube-tmp"
"""Temporary files of the writer, in the git directory; removed whole when a store opens."""


def check_component(part: str, what: str = "path component") -> str:
    """`part` if it is a path component the repository holds as is (see `nbkube.names`), else ValueError:
    what a user names for a path never reaches the repository unless every clone can check it out."""
    if not is_safe_component(part):
        raise ValueError(f"invalid {what}: {part[:300]!r}")
    return part


def split_path(path: str) -> list[str]:
    """A repository-relative path as its components; refuses absolute paths, `..` and control characters."""
    if path.startswith("/"):
        raise ValueError(f"repository paths are relative: {path!r}")
    return [check_component(p) for p in path.split("/")]


def check_ref(ref: str) -> None:
    """ValueError unless `ref` can be given to git as a revision (no option, no path, one line)."""
    if not ref or ref.startswith("-") or any(c in ref for c in "\n\r\x00 :"):
        raise ValueError(f"invalid ref: {ref!r}")


def run_directory(name: str) -> str:
    """The directory of the run `name` below its namespace's: its name, or a safe name standing for it."""
    return safe_component(name)


def notebook_file(notebook: str) -> str:
    """The file name an executed notebook is committed as (".ipynb" appended when missing, made safe)."""
    name = notebook if notebook.endswith(NOTEBOOK_SUFFIX) else f"{notebook}{NOTEBOOK_SUFFIX}"
    return safe_component(name, extension=NOTEBOOK_SUFFIX)


def run_path(namespace: str, directory: str, *below: str) -> str:
    """`<namespace>/<directory>[/<below>...]`: a run's directory, or a file in it."""
    return "/".join((namespace, directory, *below))


def spill_parts(name: str) -> list[str]:
    """Where the spill `name` goes, below its run's directory."""
    return [OUTPUTS_DIR, *split_path(name)]


def final_ref(uid: str) -> str:
    """The ref naming the commit of run `uid`'s final result."""
    return f"{FINAL_REFS}{uid}"
