"""A container's volumeMounts as bind mounts in a private mount namespace (unshare), read-only where
the mount, the claim or the volume kind says so; none where mount namespaces are unavailable."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from nbkube_testenv.nodeagent.common import ConfigError, log

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.container import Container


class Mount(NamedTuple):
    source: str  # a directory or file on the host
    target: str  # the mountPath
    read_only: bool


def mount_namespaces_work() -> bool:
    """True when this process may make private mount namespaces with bind mounts (root, util-linux)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        log.warning("volumes are not mounted at their mountPath: the node agent is not root or lacks unshare")
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "mount", "-t", "tmpfs", "none", "/mnt"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        log.warning("volumes are not mounted at their mountPath: %s", probe.stderr.decode().strip())
    return probe.returncode == 0


def volume_mounts(container: Container, argv: list[str]) -> list[Mount]:
    """The volumeMounts this container's process gets: all but those that would hide what it runs from
    (the agent's directory, the pod's directory, the working directory, Python's prefix, the agent's
    PYTHONPATH entries, the executable), which are left out with a log line."""
    worker = container.worker
    keep = [worker.agent.dir, worker.pod_dir, container.cwd, sys.prefix, sys.base_prefix]
    # the agent's own PYTHONPATH (what the process imports nbkube from unless it sets its own): a
    # container's PYTHONPATH may well point into one of its volumes
    keep += [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    executable = shutil.which(argv[0], path=container.env.get("PATH")) if argv else None
    if executable:
        keep.append(os.path.dirname(os.path.realpath(executable)))
    kept = [os.path.realpath(p) for p in map(str, keep)]
    volumes = worker.volumes
    mounts = []
    for m in container.spec.get("volumeMounts", []):
        name, target = m["name"], os.path.normpath(m["mountPath"])
        if name not in volumes.paths:
            raise ConfigError("CreateContainerConfigError", f'volume "{name}" is not declared by the pod')
        source = volumes.paths[name]
        if m.get("subPath"):
            source = os.path.join(source, m["subPath"])
            if not os.path.exists(source):
                os.makedirs(source, exist_ok=True)
        if target == "/" or any(k == target or k.startswith(target + "/") for k in kept):
            log.info(
                "%s/%s: volume %s not mounted at %s: it would hide what the process runs from",
                worker.key,
                container.name,
                name,
                target,
            )
            continue
        mounts.append(Mount(source, target, bool(m.get("readOnly")) or name in volumes.read_only))
    return mounts


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def in_mount_namespace(mounts: list[Mount], argv: list[str], stage_dir: Path) -> list[str]:
    """argv run in a private mount namespace holding these mounts (argv itself when there are none).
    A source that an earlier mount hides (a hostPath volume under /tmp once the pod's own /tmp is
    mounted) is first bind-mounted at a path in stage_dir, which no mount hides (the pod's directory)."""
    if not mounts:
        return argv
    script = ["set -e"]
    # Outer mounts first, and each mount point made just before its mount, inside the namespace, so
    # a mount nested in another volume (/home/nbkube/data in the home emptyDir) gets its mount point
    # in that volume, as a kubelet makes it in the container; read-only only once all are in place.
    mounts = sorted(mounts, key=lambda m: m.target.count("/"))
    sources = []  # what each mount binds: its source, or where that was staged
    for i, (source, _, _) in enumerate(mounts):
        if any(_under(os.path.realpath(source), earlier.target) for earlier in mounts[:i]):
            staged = str(stage_dir / str(i))
            script.append(_mount_point(source, staged))
            script.append(f"mount --bind {shlex.quote(source)} {shlex.quote(staged)}")
            sources.append(staged)
        else:
            sources.append(source)
    for bound, (source, target, _) in zip(sources, mounts, strict=True):
        script.append(_mount_point(source, target))
        script.append(f"mount --bind {shlex.quote(bound)} {shlex.quote(target)}")
    for _, target, read_only in mounts:
        if read_only:
            script.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
    script.append('exec "$@"')
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        "\n".join(script),
        "sh",
        *argv,
    ]


def _mount_point(source: str, target: str) -> str:
    """Shell that makes target a directory, or a file when source (on the host) is a file."""
    q = shlex.quote(target)
    if os.path.isdir(source):
        return f"mkdir -p {q}"
    return f"mkdir -p {shlex.quote(os.path.dirname(target))}; [ -e {q} ] || : > {q}"
