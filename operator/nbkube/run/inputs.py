"""A run's inputs (spec.files and spec.env) resolved from the API server and the results repository into
what the engine hands its kernel (nbkube.engine.setup.KernelSetup), within the bounds of nbkube.api.inputs.

Resolved at the start of each attempt that needs a fresh setup, before a kernel is taken, so bad input
ends the run with nothing half-started. A missing ConfigMap or Secret may be applied together with the
run and arrive a moment later: it is waited for (as the notebook's ConfigMap is); a missing key or
repository path is final. Values are read into the setup and nowhere else: messages name objects, keys
and paths, never a value, and no exception that could carry one (a decoding error) is passed on.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nbkube import objectdata
from nbkube.api import Reason
from nbkube.api.inputs import (
    MAX_INPUT_BYTES,
    MAX_INPUT_FILES,
    InputFiles,
    ObjectFiles,
    RunEnvVar,
    RunKeySelector,
)
from nbkube.engine.setup import KernelSetup, SetupFile
from nbkube.kube import Kube, KubeError, resource_path
from nbkube.results import ReadLimitExceeded

SECRET_FILE_MODE = 0o600
WAIT_POLL_SECONDS = 1.0


# (path, max_files, max_bytes) -> the files at that repository path of the run's own namespace
class Inputs(Protocol):
    """What a spec with inputs has (a NotebookRun's, a NotebookSession's)."""

    @property
    def files(self) -> Sequence[InputFiles]: ...

    @property
    def env(self) -> Sequence[RunEnvVar]: ...


RepoFiles = Callable[[str, int, int], Awaitable[list[tuple[str, bytes]]]]


class InputProblem(Exception):
    """Why a run's inputs cannot be handed to its kernel: a CamelCase reason and a message naming what
    (never a value). `transient`: an object that may still be created (worth waiting for)."""

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient


@dataclass
class _Budget:
    files: int = 0
    bytes: int = 0

    @property
    def files_left(self) -> int:
        return MAX_INPUT_FILES - self.files

    @property
    def bytes_left(self) -> int:
        return MAX_INPUT_BYTES - self.bytes

    def take(self, files: int, size: int, what: str) -> None:
        self.files += files
        self.bytes += size
        if self.files > MAX_INPUT_FILES or self.bytes > MAX_INPUT_BYTES:
            raise InputProblem(Reason.INPUTS_TOO_LARGE, too_large(what, self.files, self.bytes))


LARGE_DATA_HINT = (
    f"a run's inputs are bounded to {MAX_INPUT_FILES} files and {MAX_INPUT_BYTES // 2**20} MiB (files and "
    "env values together): put large data on a volume of the environment"
)


def too_large(what: str, files: int, size: int) -> str:
    return f"{what} takes the run's inputs to {files} files and {size / 2**20:.1f} MiB; {LARGE_DATA_HINT}"


@dataclass
class _Object:
    kind: str  # "ConfigMap" or "Secret"
    name: str
    values: dict[str, bytes] = field(repr=False)


class InputResolver:
    """Resolves one run's inputs. `read_repo` reads the run's own namespace's repository only."""

    def __init__(
        self, kube: Kube, namespace: str, read_repo: RepoFiles | None, *, read_secrets: bool
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.read_repo = read_repo
        self.read_secrets = read_secrets

    async def resolve(self, spec: Inputs, name: str) -> KernelSetup:
        self._check_secrets_allowed(spec)
        objects = await self._fetch_objects(spec)
        budget = _Budget()
        env = self._env(spec, objects, budget)
        files: dict[str, SetupFile] = {}
        origins: dict[str, str] = {}
        for index, source in enumerate(spec.files):
            what = f"spec.files[{index}] ({source.source()})"
            for path, data, mode in await self._source_files(source, objects, budget, what):
                target = _place(source.destination, path, what)
                if target in files:
                    raise InputProblem(
                        Reason.INVALID_SPEC, f"{what} and {origins[target]} both write {target}"
                    )
                files[target] = SetupFile(target, data, mode)
                origins[target] = what
        _check_no_file_is_a_folder(origins)
        return KernelSetup(name=name, files=[files[p] for p in sorted(files)], env=env)

    # -- objects ------------------------------------------------------------------------------------

    def _check_secrets_allowed(self, spec: Inputs) -> None:
        if self.read_secrets:
            return
        for index, source in enumerate(spec.files):
            if source.secret is not None:
                raise InputProblem(Reason.INVALID_SPEC, _secrets_off(f"spec.files[{index}].secret"))
        for e in spec.env:
            if e.value_from is not None and e.value_from.secret_key_ref is not None:
                raise InputProblem(Reason.INVALID_SPEC, _secrets_off(f"spec.env {e.name}"))

    async def _fetch_objects(self, spec: Inputs) -> dict[tuple[str, str], _Object | None]:
        wanted: set[tuple[str, str]] = set()
        for source in spec.files:
            if source.config_map is not None:
                wanted.add(("ConfigMap", source.config_map.name))
            if source.secret is not None:
                wanted.add(("Secret", source.secret.name))
        for e in spec.env:
            if e.value_from is not None:
                if e.value_from.secret_key_ref is not None:
                    wanted.add(("Secret", e.value_from.secret_key_ref.name))
                if e.value_from.config_map_key_ref is not None:
                    wanted.add(("ConfigMap", e.value_from.config_map_key_ref.name))
        keys = sorted(wanted)
        found = await asyncio.gather(*(self._fetch(kind, name) for kind, name in keys))
        return dict(zip(keys, found, strict=True))

    async def _fetch(self, kind: str, name: str) -> _Object | None:
        plural = "secrets" if kind == "Secret" else "configmaps"
        try:
            values = await self.kube.get_data(resource_path("v1", plural, self.namespace, name), kind)
        except KubeError as exc:
            if exc.status == 403:
                raise InputProblem(
                    Reason.INPUT_NOT_FOUND,
                    f"{kind} {self.namespace}/{name} cannot be read: the operator is not allowed to get it",
                ) from None
            raise
        except objectdata.UndecodableObject as exc:
            raise InputProblem(Reason.INPUT_NOT_FOUND, f"{kind} {self.namespace}/{name}: {exc}") from None
        return None if values is None else _Object(kind, name, values)

    def _object(self, objects: dict[tuple[str, str], _Object | None], kind: str, name: str) -> _Object:
        found = objects.get((kind, name))
        if found is None:
            raise InputProblem(
                Reason.INPUT_NOT_FOUND, f"{kind} {self.namespace}/{name} not found", transient=True
            )
        return found

    # -- env ----------------------------------------------------------------------------------------

    def _env(
        self, spec: Inputs, objects: dict[tuple[str, str], _Object | None], budget: _Budget
    ) -> dict[str, str]:
        env: dict[str, str] = {}
        for e in spec.env:
            if e.value_from is None:
                value = e.value or ""
            else:
                ref = e.value_from.secret_key_ref or e.value_from.config_map_key_ref
                kind = "Secret" if e.value_from.secret_key_ref is not None else "ConfigMap"
                assert ref is not None
                found = self._env_value(objects, kind, ref, e.name)
                if found is None:
                    continue
                value = found
            budget.take(0, len(value.encode()), f"env {e.name}")
            env[e.name] = value
        return env

    def _env_value(
        self, objects: dict[tuple[str, str], _Object | None], kind: str, ref: RunKeySelector, env_name: str
    ) -> str | None:
        if objects.get((kind, ref.name)) is None and ref.optional:
            return None
        obj = self._object(objects, kind, ref.name)
        raw = obj.values.get(ref.key)
        if raw is None:
            if ref.optional:
                return None
            raise InputProblem(
                Reason.INPUT_NOT_FOUND, _no_key(self.namespace, obj, ref.key, f"env {env_name}")
            )
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = None  # the error's message would quote bytes of the value: never passed on
        if value is None or "\x00" in value:
            raise InputProblem(
                Reason.INVALID_SPEC,
                f"env {env_name}: {kind} {self.namespace}/{ref.name} key {ref.key} is not text an "
                "environment variable can hold (UTF-8 without NUL); place it as a file with spec.files",
            )
        return value

    # -- files --------------------------------------------------------------------------------------

    async def _source_files(
        self,
        source: InputFiles,
        objects: dict[tuple[str, str], _Object | None],
        budget: _Budget,
        what: str,
    ) -> list[tuple[str, bytes, int | None]]:
        if source.repo_path is not None:
            return [(p, d, None) for p, d in await self._repo_files(source.repo_path, budget, what)]
        ref: ObjectFiles = source.config_map or source.secret  # type: ignore[assignment]
        kind = "ConfigMap" if source.config_map is not None else "Secret"
        obj = self._object(objects, kind, ref.name)
        mode = SECRET_FILE_MODE if kind == "Secret" else None
        out = []
        if ref.items is None:
            chosen = [(key, key) for key in sorted(obj.values)]
        else:
            chosen = [(item.key, item.path or item.key) for item in ref.items]
        for key, path in chosen:
            data = obj.values.get(key)
            if data is None:
                raise InputProblem(Reason.INPUT_NOT_FOUND, _no_key(self.namespace, obj, key, what))
            out.append((path, data, mode))
        budget.take(len(out), sum(len(d) for _, d, _ in out), what)
        return out

    async def _repo_files(self, path: str, budget: _Budget, what: str) -> list[tuple[str, bytes]]:
        """A path of this namespace's repository only: another namespace's path is "not found" whether or
        not it exists there (that repository is never opened)."""
        clean = path.rstrip("/")
        missing = InputProblem(
            Reason.INPUT_NOT_FOUND, f"{what}: {clean} not found in this namespace's results repository"
        )
        if self.read_repo is None or not (clean == self.namespace or clean.startswith(f"{self.namespace}/")):
            raise missing
        try:
            found = await self.read_repo(clean, budget.files_left, budget.bytes_left)
        except FileNotFoundError:
            raise missing from None
        except ReadLimitExceeded as exc:
            raise InputProblem(Reason.INPUTS_TOO_LARGE, f"{what}: {exc}; {LARGE_DATA_HINT}") from None
        except ValueError:  # a path the repository cannot hold (e.g. a component it would refuse)
            raise missing from None
        budget.take(len(found), sum(len(d) for _, d in found), what)
        return found


def _secrets_off(where: str) -> str:
    return (
        f"{where} refers to a Secret, and this nbkube installation does not read Secrets "
        "(the chart's rbac.readSecrets is false): mount it into the environment's pods instead"
    )


def _no_key(namespace: str, obj: _Object, key: str, what: str) -> str:
    keys = ", ".join(sorted(obj.values)[:20]) or "none"
    return f"{what}: {obj.kind} {namespace}/{obj.name} has no key {key!r} (keys: {keys})"


def _place(destination: str, path: str, what: str) -> str:
    target = posixpath.normpath(posixpath.join(destination, path))
    if target in (".", "..") or target.startswith(("../", "/")):
        raise InputProblem(Reason.INVALID_SPEC, f"{what}: {path!r} in {destination!r} is not a file below it")
    return target


def _check_no_file_is_a_folder(origins: dict[str, str]) -> None:
    paths = set(origins)
    for path in paths:
        parent = posixpath.dirname(path)
        while parent:
            if parent in paths:
                raise InputProblem(
                    Reason.INVALID_SPEC,
                    f"{origins[parent]} writes the file {parent}, which {origins[path]} needs as a folder "
                    f"(for {path})",
                )
            parent = posixpath.dirname(parent)


async def resolve_waiting(
    resolve: Callable[[], Awaitable[KernelSetup]],
    *,
    wait_seconds: float,
    on_waiting: Callable[[str], Awaitable[None]],
    stopping: Callable[[], bool],
) -> KernelSetup:
    """`resolve()`, tried again every second for up to `wait_seconds` while what is missing is an object
    that may still be created (a ConfigMap applied together with the run); `on_waiting` once when it
    starts waiting. The last InputProblem is raised when it is final, the wait is over or `stopping()`."""
    deadline = time.monotonic() + wait_seconds
    waited = False
    while True:
        try:
            return await resolve()
        except InputProblem as problem:
            if not problem.transient or time.monotonic() >= deadline or stopping():
                raise
            if not waited:
                waited = True
                await on_waiting(problem.message)
        await asyncio.sleep(WAIT_POLL_SECONDS)
