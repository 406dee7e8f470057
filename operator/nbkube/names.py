"""Names derived from names users choose: one home, so every place that derives one agrees.

Kubernetes accepts object names of up to 253 characters, but label values (and the names the
operator derives, such as a sweep's child runs) must stay within 63. The results repository takes
run names, notebook names and ConfigMap keys as path components, and git (or a clone's checkout)
refuses some of those, or breaks on them for everyone who clones: `.git` in any spelling, the NTFS
short name `git~1`, names over 255 bytes; the repository also keeps `*.lock` and dot-names out.

Both mappings keep a name that already fits unchanged and otherwise shorten or rewrite it
deterministically, with a hash of the whole original, so two different names never meet.
"""

from __future__ import annotations

import hashlib
import re

LABEL_MAX = 63
"""Kubernetes label values and DNS-1123 labels."""
COMPONENT_MAX_BYTES = 255
"""One file or directory name: the limit of ext4, xfs, btrfs, NTFS, APFS."""
HASH_CHARS = 8

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_COMPONENT_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_NTFS_SHORT_GIT = re.compile(r"^git~[0-9]+$", re.IGNORECASE)


def digest(value: str, chars: int = HASH_CHARS) -> str:
    """A short, stable hash of `value` (hex)."""
    return hashlib.sha256(value.encode()).hexdigest()[:chars]


def shorten(name: str, limit: int = LABEL_MAX) -> str:
    """`name` if it has at most `limit` characters; else its start, "-" and a hash of all of it.

    For Kubernetes names and label values: the start is cut back to end in a letter or digit, so a
    DNS-1123 name (or a valid label value) stays one. `limit` must leave room for the hash.
    """
    if len(name) <= limit:
        return name
    if limit < HASH_CHARS + 2:
        raise ValueError(f"a limit of {limit} leaves no room for a hash")
    head = name[: limit - HASH_CHARS - 1].rstrip("-._")
    return f"{head}-{digest(name)}" if head else digest(name, min(limit, 64))


def is_label_value(value: str) -> bool:
    """Whether the API server takes `value` as a label value: at most 63 characters, letters, digits,
    "-", "_" and "." between a letter or digit at each end (or empty)."""
    return len(value) <= LABEL_MAX and bool(_LABEL_VALUE.match(value))


def label_value(name: str) -> str:
    """A label value standing for `name` (any object name): the name itself when it is a valid
    label value, else a shortened one (see `shorten`)."""
    if is_label_value(name):
        return name
    value = shorten(name, LABEL_MAX)
    return value if _LABEL_VALUE.match(value) else digest(name)


def is_safe_component(name: str) -> bool:
    """Whether git, a checkout on any common file system and the repository's own conventions take
    `name` as one path component unchanged."""
    return (
        bool(name)
        and not name.startswith(".")
        and not name.endswith((".lock", ".", " "))
        and not _COMPONENT_UNSAFE.search(name)
        and not _NTFS_SHORT_GIT.match(name)
        and len(name.encode()) <= COMPONENT_MAX_BYTES
    )


def safe_component(name: str, *, extension: str = "") -> str:
    """`name` as a path component of the results repository: itself when safe, else a deterministic
    safe name: the unsafe characters and leading dots dropped, cut to fit, then "_" and a hash of the
    whole name, then `extension` (kept when `name` ends with it, e.g. ".ipynb").

    Run names never contain "_" (Kubernetes names are lowercase letters, digits, "-" and "."), so a
    mapped run directory never meets the directory of a run named like it.
    """
    if is_safe_component(name):
        return name
    stem = name[: -len(extension)] if extension and name.endswith(extension) else name
    keep = extension if extension and name.endswith(extension) else ""
    cleaned = _COMPONENT_UNSAFE.sub("", stem).lstrip(". ")
    tail = f"_{digest(name)}{keep}"
    room = COMPONENT_MAX_BYTES - len(tail.encode())
    head = cleaned.encode()[:room].decode(errors="ignore").rstrip(". ")
    return f"{head or 'n'}{tail}"
