"""A run's inputs resolved into its kernel setup (nbkube.run.inputs), against a recording fake API client
and repository: where each file goes, what is refused and with which reason, and that no message carries
a value."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from nbkube.api import NotebookRunSpec
from nbkube.api.inputs import MAX_INPUT_BYTES, MAX_INPUT_FILES
from nbkube.kube import KubeError
from nbkube.objectdata import from_json
from nbkube.results import ReadLimitExceeded
from nbkube.run.inputs import SECRET_FILE_MODE, InputProblem, InputResolver, resolve_waiting

NS = "team"
SECRET_VALUE = "s3cr3t-VALUE"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeKube:
    def __init__(self, objects: dict[str, dict[str, Any]], forbidden: set[str] | None = None) -> None:
        self.objects = objects
        self.forbidden = forbidden or set()
        self.gets: list[str] = []

    async def get_data(self, path: str, kind: str) -> dict[str, bytes] | None:
        self.gets.append(path)
        name = "/".join(path.split("/")[-2:])  # "configmaps/<name>" or "secrets/<name>"
        if name in self.forbidden:
            raise KubeError(403, "Forbidden", "secrets is forbidden")
        if name not in self.objects:
            return None
        return from_json(self.objects[name], kind)  # as the API server's JSON gives it


OBJECTS = {
    "configmaps/inputs": {"data": {"table.csv": "a,b\n"}, "binaryData": {"logo.png": b64(b"\x89PNG..")}},
    "secrets/creds": {"data": {"password": b64(SECRET_VALUE.encode()), "binary": b64(b"\xff\x00")}},
}


async def repo(path: str, max_files: int, max_bytes: int) -> list[tuple[str, bytes]]:
    files = {
        f"{NS}/prev/notebook.ipynb": [("notebook.ipynb", b"{}")],
        f"{NS}/prev": [("nbkube.json", b"{}"), ("notebook.ipynb", b"{}"), ("outputs/o.jsonl", b"1")],
    }
    if path not in files:
        raise FileNotFoundError(path)
    if len(files[path]) > max_files:
        raise ReadLimitExceeded(f"{path} holds {len(files[path])} files, more than {max_files} files")
    return files[path]


def spec(**extra: Any) -> NotebookRunSpec:
    return NotebookRunSpec.model_validate(
        {"environmentRef": {"name": "py"}, "notebook": {"cells": [{"source": "1"}]}, **extra}
    )


def resolver(objects: dict[str, Any] = OBJECTS, **kwargs: Any) -> InputResolver:
    return InputResolver(
        FakeKube(objects, kwargs.pop("forbidden", None)), NS, repo, read_secrets=True, **kwargs
    )


async def test_every_source_lands_below_its_destination_with_secrets_private() -> None:
    setup = await resolver().resolve(
        spec(
            files=[
                {"configMap": {"name": "inputs"}, "destination": "data"},
                {
                    "secret": {"name": "creds", "items": [{"key": "password", "path": "pw"}]},
                    "destination": "conf",
                },
                {"repoPath": f"{NS}/prev/notebook.ipynb"},
                {"repoPath": f"{NS}/prev/", "destination": "prev"},
            ],
            env=[
                {"name": "PLAIN", "value": "p"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {
                    "name": "GONE",
                    "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}},
                },
            ],
        ),
        "run-1",
    )
    placed = {f.path: (f.data, f.mode) for f in setup.files}
    assert placed == {
        "data/logo.png": (b"\x89PNG..", None),
        "data/table.csv": (b"a,b\n", None),
        "conf/pw": (SECRET_VALUE.encode(), SECRET_FILE_MODE),
        "notebook.ipynb": (b"{}", None),
        "prev/nbkube.json": (b"{}", None),
        "prev/notebook.ipynb": (b"{}", None),
        "prev/outputs/o.jsonl": (b"1", None),
    }
    assert setup.env == {"PLAIN": "p", "PASSWORD": SECRET_VALUE}
    assert SECRET_VALUE not in repr(setup) and setup.name == "run-1"


async def test_each_object_is_read_once_however_often_it_is_named() -> None:
    kube = FakeKube(OBJECTS)
    files = [
        {"configMap": {"name": "inputs", "items": [{"key": k}]}, "destination": k}
        for k in ("table.csv", "logo.png")
    ]
    env = [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}]
    await InputResolver(kube, NS, repo, read_secrets=True).resolve(spec(files=files, env=env), "r")
    assert sorted(kube.gets) == [
        "/api/v1/namespaces/team/configmaps/inputs",
        "/api/v1/namespaces/team/secrets/creds",
    ]


@pytest.mark.parametrize(
    ("extra", "reason", "words", "transient"),
    [
        (
            {"files": [{"configMap": {"name": "absent"}}]},
            "InputNotFound",
            "ConfigMap team/absent not found",
            True,
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]},
            "InputNotFound",
            "Secret team/absent not found",
            True,
        ),
        (
            {"files": [{"configMap": {"name": "inputs", "items": [{"key": "nope"}]}}]},
            "InputNotFound",
            "spec.files[0] (ConfigMap inputs): ConfigMap team/inputs has no key 'nope' "
            "(keys: logo.png, table.csv)",
            False,
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]},
            "InputNotFound",
            "env X: Secret team/creds has no key 'nope' (keys: binary, password)",
            False,
        ),
        (
            {"files": [{"repoPath": f"{NS}/never/x.csv"}]},
            "InputNotFound",
            "team/never/x.csv not found in this namespace's results repository",
            False,
        ),
        (
            {"files": [{"repoPath": "other-team/prev/notebook.ipynb"}]},  # never another namespace's
            "InputNotFound",
            "other-team/prev/notebook.ipynb not found in this namespace's results repository",
            False,
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "binary"}}}]},
            "InvalidSpec",
            "key binary is not text an environment variable can hold",
            False,
        ),
        (
            {
                "files": [
                    {"configMap": {"name": "inputs", "items": [{"key": "table.csv", "path": "x"}]}},
                    {"configMap": {"name": "inputs", "items": [{"key": "logo.png", "path": "x"}]}},
                ]
            },
            "InvalidSpec",
            "spec.files[1] (ConfigMap inputs) and spec.files[0] (ConfigMap inputs) both write x",
            False,
        ),
        (
            {
                "files": [
                    {"configMap": {"name": "inputs", "items": [{"key": "table.csv", "path": "d"}]}},
                    {"configMap": {"name": "inputs", "items": [{"key": "logo.png", "path": "d/e"}]}},
                ]
            },
            "InvalidSpec",
            "writes the file d, which spec.files[1] (ConfigMap inputs) needs as a folder",
            False,
        ),
    ],
)
async def test_bad_input_has_a_reason_naming_it_and_never_a_value(
    extra: dict[str, Any], reason: str, words: str, transient: bool
) -> None:
    with pytest.raises(InputProblem) as problem:
        await resolver().resolve(spec(**extra), "r")
    assert problem.value.reason == reason
    assert words in problem.value.message, problem.value.message
    assert problem.value.transient is transient
    assert (
        SECRET_VALUE not in problem.value.message and b64(SECRET_VALUE.encode()) not in problem.value.message
    )


async def test_a_secret_the_operator_may_not_read_says_so() -> None:
    with pytest.raises(InputProblem, match="Secret team/creds cannot be read: the operator is not allowed"):
        await resolver(forbidden={"secrets/creds"}).resolve(spec(files=[{"secret": {"name": "creds"}}]), "r")


async def test_with_secret_reading_off_a_run_naming_a_secret_fails_before_any_read() -> None:
    kube = FakeKube(OBJECTS)
    off = InputResolver(kube, NS, repo, read_secrets=False)
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}]
    with pytest.raises(InputProblem, match="does not read Secrets") as problem:
        await off.resolve(spec(env=env), "r")
    assert problem.value.reason == "InvalidSpec" and kube.gets == []
    assert (await off.resolve(spec(files=[{"configMap": {"name": "inputs"}}]), "r")).files


async def test_inputs_past_the_bounds_are_refused_with_inputs_too_large() -> None:
    many = {"configmaps/many": {"data": {f"k{i}": "" for i in range(MAX_INPUT_FILES + 1)}}}
    with pytest.raises(InputProblem) as problem:
        await resolver(many).resolve(spec(files=[{"configMap": {"name": "many"}}]), "r")
    assert problem.value.reason == "InputsTooLarge" and "volume" in problem.value.message
    big = {f"configmaps/big{i}": {"binaryData": {"b": b64(b"x" * (MAX_INPUT_BYTES // 8))}} for i in range(9)}
    with pytest.raises(InputProblem) as problem:
        await resolver(big).resolve(
            spec(files=[{"configMap": {"name": f"big{i}"}, "destination": str(i)} for i in range(9)]), "r"
        )
    assert problem.value.reason == "InputsTooLarge" and "64 MiB" in problem.value.message


async def test_a_missing_object_is_waited_for_and_a_missing_key_is_not() -> None:
    objects: dict[str, Any] = {}
    waits: list[str] = []

    async def on_waiting(message: str) -> None:
        waits.append(message)
        objects["configmaps/late"] = {"data": {"a": "1"}}  # applied a moment after the run

    late = InputResolver(FakeKube(objects), NS, repo, read_secrets=True)
    setup = await resolve_waiting(
        lambda: late.resolve(spec(files=[{"configMap": {"name": "late"}}]), "r"),
        wait_seconds=30,
        on_waiting=on_waiting,
        stopping=lambda: False,
    )
    assert [f.path for f in setup.files] == ["a"] and waits == ["ConfigMap team/late not found"]
    with pytest.raises(InputProblem, match="no key"):
        await resolve_waiting(
            lambda: late.resolve(spec(files=[{"configMap": {"name": "late", "items": [{"key": "b"}]}}]), "r"),
            wait_seconds=30,
            on_waiting=on_waiting,
            stopping=lambda: False,
        )
    assert len(waits) == 1
