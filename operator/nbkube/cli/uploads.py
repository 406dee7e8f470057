"""`nbkube run --file PATH`: files and folders uploaded with the notebook, placed beside it in the run's
working directory.

They go into the run's own ConfigMap (the notebook's, owned by the run) as binaryData, one key per file,
and the run's spec.files names each key with the path it takes: a file or folder inside the notebook's
folder keeps its path relative to it (`--file data/x.csv` beside `nb.ipynb` stays `data/x.csv`), one
outside it goes in by its name (`--file ../shared/images/` becomes `images/...`), so relative paths in
the notebook work as they do where it was written. Everything is checked (paths, the ConfigMap's 1 MiB)
before anything is created.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbkube.cli.errors import UsageError

CONFIGMAP_LIMIT = 1024 * 1024  # the API server's limit on a ConfigMap's data and binaryData, keys included
KEY_CHARS = re.compile(r"[^-._a-zA-Z0-9]+")
"""What a ConfigMap key may not hold."""
MAX_KEY = 253
# nbformat and the API models are imported where used: together they cost seconds of start-up.


@dataclass(frozen=True)
class Upload:
    key: str
    """The ConfigMap key holding the file."""
    path: str
    """Where the file goes, relative to the run's working directory."""
    source: Path
    size: int


def _place(path: Path, notebook_dir: Path) -> str:
    resolved = path.resolve()
    try:
        relative = resolved.relative_to(notebook_dir)
    except ValueError:
        return resolved.name
    return relative.as_posix()


def _key(path: str, used: set[str]) -> str:
    base = KEY_CHARS.sub("-", path.replace("/", ".")).strip("-.") or "file"
    if len(base) > MAX_KEY - 13:  # the end of a long path says most; its hash keeps it apart
        base = f"{hashlib.sha256(path.encode()).hexdigest()[:12]}-{base[-(MAX_KEY - 26) :]}"
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}-{n}"
    used.add(key)
    return key


def collect(paths: list[Path], notebook: Path, reserved: set[str]) -> list[Upload]:
    """Every file the --file options name, with its key and place; UsageError for a missing path, two
    files taking one place, or a place outside the working directory."""
    from nbkube.api.inputs import check_relative_path

    notebook_dir = notebook.resolve().parent
    found: list[tuple[str, Path]] = []
    for given in paths:
        if not given.exists():
            raise UsageError(f"--file {given}: no such file or folder")
        place = _place(given, notebook_dir)
        if given.is_dir():
            inside = []
            for root, _, names in os.walk(given):
                for name in names:
                    file = Path(root) / name
                    if file.resolve() == notebook.resolve() or not file.is_file():
                        continue
                    inner = file.relative_to(given).as_posix()
                    inside.append((inner if place == "." else f"{place}/{inner}", file))
            found += sorted(inside)
        else:
            found.append((place, given))
    uploads: list[Upload] = []
    places: dict[str, Path] = {}
    used = set(reserved)
    for place, file in found:
        try:
            check_relative_path(place)
        except ValueError:
            raise UsageError(f"--file {file}: {place!r} is not a path below the working directory") from None
        if place in places:
            raise UsageError(
                f"--file {file} and {places[place]} would both be {place} in the working directory"
            )
        places[place] = file
        uploads.append(Upload(_key(place, used), place, file, file.stat().st_size))
    return uploads


def check_size(notebook: Path, key: str, text: str, uploads: list[Upload]) -> None:
    """The notebook and its files together fit the ConfigMap, or a UsageError naming the alternatives."""
    if not uploads:
        return
    size = len(key.encode()) + len(text.encode()) + sum(len(u.key) + u.size for u in uploads)
    if size > CONFIGMAP_LIMIT:
        raise UsageError(
            f"{notebook} and its {len(uploads)} --file inputs are {size / CONFIGMAP_LIMIT:.2f} MiB, more "
            "than the 1 MiB the run's ConfigMap holds: put large data on a volume of the environment "
            "(NotebookEnvironment volumes), or in the results repository and name it with the run's "
            "spec.files[].repoPath"
        )


def binary_data(uploads: list[Upload]) -> dict[str, str]:
    return {u.key: base64.b64encode(u.source.read_bytes()).decode("ascii") for u in uploads}


def files_spec(config_map: str, uploads: list[Upload]) -> list[dict[str, Any]]:
    """spec.files: the ConfigMap's keys and the paths they take, as few sources as the API allows."""
    from nbkube.api.inputs import MAX_ITEMS

    items = [{"key": u.key, "path": u.path} for u in uploads]
    return [
        {"configMap": {"name": config_map, "items": items[i : i + MAX_ITEMS]}}
        for i in range(0, len(items), MAX_ITEMS)
    ]
