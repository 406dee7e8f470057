"""Git objects built in memory, with the ids we compute, before git writes them (pure).

Commits are built from trees directly: each object's id is the SHA-1 of its canonical bytes, computed
here; `Repository.write_objects` then has git write them and checks that git computed the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._git import TreeEntry, object_id, tree_bytes

TREE_MODE = "040000"
BLOB_MODE = "100644"


@dataclass
class StagedFile:
    """One file of a commit."""

    parts: list[str]  # where it goes: below the run directory for runs, from the root for source notebooks
    source: Path  # the file git reads the bytes from
    oid: str  # the blob id we computed; git must agree


@dataclass
class Staged:
    """Objects of one batch, with the ids we computed, until git has written them all."""

    blobs: dict[str, Path] = field(default_factory=dict)
    trees: dict[str, dict[str, TreeEntry]] = field(default_factory=dict)
    tree_data: dict[str, bytes] = field(default_factory=dict)
    commits: list[tuple[str, bytes]] = field(default_factory=list)

    def tree(self, entries: dict[str, TreeEntry]) -> str:
        """Stage a tree of `entries`; its id."""
        data = tree_bytes(entries)
        oid = object_id("tree", data)
        self.trees[oid] = entries
        self.tree_data[oid] = data
        return oid

    def files_tree(self, files: list[StagedFile]) -> str:
        """Stage a fresh tree holding exactly `files` (a run's directory) and their blobs; its id."""
        nested: dict[str, Any] = {}
        for f in files:
            node = nested
            for part in f.parts[:-1]:
                node = node.setdefault(part, {})
            node[f.parts[-1]] = f
            self.blobs[f.oid] = f.source

        def stage(node: dict[str, Any]) -> str:
            entries = {
                name: TreeEntry(TREE_MODE, "tree", stage(value))
                if isinstance(value, dict)
                else TreeEntry(BLOB_MODE, "blob", value.oid)
                for name, value in node.items()
            }
            return self.tree(entries)

        return stage(nested)

    def commit(
        self, tree: str | None, parent: str | None, message: str, *, author: str, committer: str, now: float
    ) -> str:
        """Stage a commit of `tree` (None: the empty tree) on `parent` (None: a root commit); its id."""
        tree = tree or self.tree({})
        stamp = f"{int(now)} +0000"
        text = f"tree {tree}\n" + (f"parent {parent}\n" if parent else "")
        text += f"author {author} {stamp}\ncommitter {committer} {stamp}\n\n{message}"
        data = text.encode()
        oid = object_id("commit", data)
        self.commits.append((oid, data))
        return oid


def check_unique(paths: list[list[str]]) -> None:
    """ValueError when two files of a commit would have the same path, or one would be below another."""
    files = {tuple(p) for p in paths}
    if len(files) != len(paths):
        raise ValueError("the same path is given twice")
    for p in files:
        for i in range(1, len(p)):
            if p[:i] in files:
                raise ValueError(f"{'/'.join(p)} clashes with the file {'/'.join(p[:i])}")
